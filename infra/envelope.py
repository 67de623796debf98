"""The JSON envelope every event travels in on the bus (documented in docs/envelope.md).

The relay builds envelopes from committed events; a rebuild builds the very
same envelopes straight from the event store, so every consumer sees one shape
whichever way an event reaches it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

ENVELOPE_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1 had no metadata; it reads as empty metadata
# Fields every aggregate event has; they move to the envelope's top level.
_HEADER_FIELDS = {
    "originator_id", "originator_version", "timestamp", "tenant_id", "actor", "metadata",
}  # fmt: skip


def _plain(value: Any) -> Any:
    """A JSON-ready copy: UUIDs and decimals as strings, datetimes ISO 8601."""
    if isinstance(value, UUID | Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class Envelope:
    context: str
    position: int
    event_type: str
    topic: str
    aggregate_id: str
    aggregate_version: int
    tenant_id: str
    actor: str
    timestamp: str
    data: dict[str, Any]
    # What caused the command: request_id, client_address, user_agent, or process.
    metadata: dict[str, str] = field(default_factory=dict)
    # SHA-256 of the event's bytes as the event store holds them: what the audit
    # trail's hash chain covers (decoding, upcasting or erasing cannot change it).
    stored_sha256: str = ""

    @classmethod
    def from_event(
        cls, context: str, position: int, topic: str, event: object, stored_sha256: str = ""
    ) -> Envelope:
        state = dict(vars(event))
        data = {k: _plain(v) for k, v in state.items() if k not in _HEADER_FIELDS}
        data.pop("originator_topic", None)
        return cls(
            context=context,
            position=position,
            event_type=topic.partition(":")[2] or topic,
            topic=topic,
            aggregate_id=str(state["originator_id"]),
            aggregate_version=int(state["originator_version"]),
            tenant_id=str(state.get("tenant_id", "")),
            actor=str(state.get("actor", "")),
            timestamp=_plain(state["timestamp"]),
            data=data,
            metadata={str(k): str(v) for k, v in (state.get("metadata") or {}).items()},
            stored_sha256=stored_sha256,
        )

    @property
    def message_id(self) -> str:
        return f"{self.context}:{self.position}"

    @property
    def occurred_at(self) -> datetime:
        return datetime.fromisoformat(self.timestamp)

    def to_json(self) -> bytes:
        body = {"envelope_version": ENVELOPE_VERSION, **self.__dict__}
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Envelope:
        return cls._from_body(json.loads(raw))

    @classmethod
    def _from_body(cls, body: dict[str, Any]) -> Envelope:
        version = body.pop("envelope_version", None)
        if version not in READABLE_VERSIONS:
            raise ValueError(f"unsupported envelope_version {version!r}")
        return cls(**body)

    @staticmethod
    def batch_to_json(encoded: Sequence[bytes]) -> bytes:
        """One message for several envelopes (each already ``to_json``): a JSON array."""
        return b"[" + b",".join(encoded) + b"]"

    @classmethod
    def batch_from_json(cls, raw: bytes) -> list[Envelope]:
        bodies = json.loads(raw)
        if not isinstance(bodies, list):
            raise ValueError("a batch message holds a JSON array of envelopes")
        return [cls._from_body(body) for body in bodies]

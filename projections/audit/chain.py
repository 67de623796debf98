"""The audit trail's hash chains: one per tenant per context, in commit order.

An entry's hash is ``SHA-256(record ‖ previous hash)``, where the record is the
canonical JSON of what the event store holds for the event: its context and
position, its aggregate and version, its topic, and the SHA-256 of its stored
bytes. The stored bytes are hashed rather than the decoded event, so decoding,
upcasting an old event, or erasing a document's content (its data key
forgotten, its ciphertext untouched) never breaks a chain, while any changed
byte does. A chain is linked by the previous entry, not by position (positions
can skip), and kept per tenant so one tenant's export verifies on its own.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from infra.envelope import Envelope

GENESIS = "0" * 64  # the "previous hash" of a chain's first entry
RECORD_VERSION = 1


@dataclass(frozen=True)
class Record:
    """What an entry's hash covers: the event as the event store holds it."""

    context: str
    position: int
    aggregate_id: str
    aggregate_version: int
    topic: str
    stored_sha256: str

    @classmethod
    def of(cls, envelope: Envelope) -> Record:
        if not envelope.stored_sha256:
            raise ValueError(f"{envelope.message_id} has no digest of its stored bytes")
        return cls(
            envelope.context,
            envelope.position,
            envelope.aggregate_id,
            envelope.aggregate_version,
            envelope.topic,
            envelope.stored_sha256,
        )

    @classmethod
    def stored(
        cls,
        context: str,
        position: int,
        aggregate_id: str,
        aggregate_version: int,
        topic: str,
        state: bytes,
    ) -> Record:
        """The record of an event read straight from its events table."""
        return cls(
            context,
            position,
            aggregate_id,
            aggregate_version,
            topic,
            hashlib.sha256(state).hexdigest(),
        )

    def canonical(self) -> bytes:
        body: dict[str, Any] = {"record_version": RECORD_VERSION, **self.__dict__}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def link(previous: str, record: Record) -> str:
    """The hash of the entry holding ``record`` after the entry hashed ``previous``."""
    return hashlib.sha256(record.canonical() + previous.encode()).hexdigest()

"""Command handlers of the activity context (events table ``activity_events``).

``record_read`` appends one ``Read.Recorded`` (a new aggregate each time, so
concurrent readers never conflict) and returns its position; the query's text
is stored as a blob under its SHA-256, in the transaction that appends the
event, and the event carries only the digest. ``record_refusal`` appends a
``Refusal.Recorded`` unless the same client was recorded within the throttle
window, in which case it is counted and the count rides on the client's next
recorded refusal. ``apply_retention`` appends a ``Retention.Applied``: the
tenant's access records older than the retention leave its read models.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from eventsourcing.utils import EnvType

from commands.base import CommandResult, ContextApplication
from domain.activity import Read, ReadKind, Refusal, Retention
from infra.blobs import EVENTS_WITH_BLOBS, sha256_hex


class ActivityApp(ContextApplication):
    context = "activity"

    def __init__(
        self,
        env: EnvType,
        *,
        refusals_per_window: int = 5,
        refusal_window_s: float = 60.0,
    ) -> None:
        # Query texts are stored with the event that names them, in one transaction.
        super().__init__({**(env or {}), "APPLICATION_RECORDER_TOPIC": EVENTS_WITH_BLOBS})
        self._per_window = refusals_per_window
        self._window_s = refusal_window_s
        self._refusals: dict[str, tuple[float, int, int]] = {}  # client -> (window start, n, held)
        self._refusals_lock = threading.Lock()

    def record_read(
        self,
        *,
        tenant_id: str,
        actor: str,
        role: str,
        kind: ReadKind,
        route: str,
        query: str | None = None,
        documents: Sequence[str] = (),
        chunks: Sequence[str] = (),
    ) -> CommandResult:
        text = query.encode() if query else None
        digest = sha256_hex(text) if text else None
        read = Read.record(
            tenant_id=tenant_id,
            actor=actor,
            role=role,
            kind=kind,
            route=route,
            query_sha256=digest,
            documents=list(documents),
            chunks=list(chunks),
        )
        position = self.record(read, blobs=[(tenant_id, text)] if text else [])
        assert position is not None
        return CommandResult(read.id, position, changed=True)

    def record_refusal(self, **refusal: Any) -> CommandResult | None:
        """Record a refused request, or count it if its client was recorded just now."""
        client = str(refusal["client"])
        now = time.monotonic()
        with self._refusals_lock:
            start, recorded, held = self._refusals.get(client, (now, 0, 0))
            if now - start >= self._window_s:
                start, recorded = now, 0
            if recorded >= self._per_window:
                self._refusals[client] = (start, recorded, held + 1)
                return None
            self._refusals[client] = (start, recorded + 1, 0)
        refused = Refusal.record(suppressed=held, **refusal)
        position = self.record(refused)
        assert position is not None
        return CommandResult(refused.id, position, changed=True)

    def apply_retention(
        self,
        *,
        tenant_id: str,
        actor: str,
        retention_days: int,
        reason: str = "",
        now: datetime | None = None,
    ) -> CommandResult:
        """Drop the tenant's access records older than ``retention_days`` from its read
        models (the events stay in the event store); the run is itself an event."""
        retention = Retention.record(
            tenant_id=tenant_id,
            actor=actor,
            now=now or datetime.now(UTC),
            retention_days=retention_days,
            reason=reason,
        )
        position = self.record(retention)
        assert position is not None
        return CommandResult(retention.id, position, changed=True)

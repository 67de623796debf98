"""What every bounded context's Application shares.

One ``eventsourcing`` Application per context, each with its own events table
(``<context>_events``) and so its own write lock and notification sequence.
Saving translates the library's conflict into ``ConcurrencyConflictError`` and
returns the notification id (the *position*) of the last event written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import RecordConflictError
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import EnvType
from psycopg.sql import SQL, Identifier

from domain.errors import ConflictError
from infra.causation import current as current_cause
from infra.db import use_idle_check
from infra.telemetry import COMMAND_CONFLICTS, EVENTS_APPENDED

METADATA = "metadata"

# The domain's name for it; commands and their callers know it by this one.
ConcurrencyConflictError = ConflictError


@dataclass(frozen=True)
class CommandResult:
    id: UUID
    position: int
    changed: bool


class ContextApplication(Application[UUID]):
    """An Application whose name is its context and whose table is ``<name>_events``."""

    context: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.name = cls.context

    def __init__(self, env: EnvType | None = None) -> None:
        super().__init__(env)
        datastore = getattr(self.recorder, "datastore", None)
        if datastore is not None:  # PostgreSQL: no ping before every append
            use_idle_check(datastore.pool)

    def record(self, *aggregates: Aggregate, **saved: Any) -> int | None:
        """Append the aggregates' pending events atomically; the last position or None.

        ``saved`` goes to the recorder with the events (``blobs=`` for one that
        stores blobs in the same transaction: ``infra.blobs.EventsWithBlobsRecorder``).

        Each event carries, as ``metadata``, what caused the command: the request's
        id, client address and user agent, or the process (``infra.causation``). It
        is not a field of the event's class: aggregates never see it, and events
        stored before it existed simply have none.
        """
        self.stamp(*aggregates)
        positions = self.append_stamped(*aggregates, **saved)
        return max(positions.values()) if positions else None

    @staticmethod
    def stamp(*aggregates: Aggregate) -> None:
        """Give the aggregates' pending events the current cause (in the caller's context)."""
        cause = current_cause()
        for aggregate in aggregates:
            for event in aggregate.pending_events:
                object.__setattr__(event, METADATA, cause)  # frozen: set before it is stored

    def append_stamped(self, *aggregates: Aggregate, **saved: Any) -> dict[UUID, int]:
        """Append events already stamped, atomically; each aggregate's last position."""
        try:
            recordings = self.save(*aggregates, **saved)
        except RecordConflictError as exc:
            COMMAND_CONFLICTS.labels(self.context).inc()
            raise ConcurrencyConflictError(
                "The resource was changed by another request at the same time; "
                "nothing was written. Retry the request."
            ) from exc
        positions: dict[UUID, int] = {}
        for recording in recordings:
            EVENTS_APPENDED.labels(self.context, type(recording.domain_event).__qualname__).inc()
            positions[recording.domain_event.originator_id] = recording.notification.id
        return positions

    @property
    def events_table(self) -> str:
        return f"{self.name.lower()}_events"

    def position_of(self, aggregate_id: UUID) -> int:
        """Position of the aggregate's latest event (0 if it has none)."""
        recorder = self.recorder
        assert isinstance(recorder, PostgresApplicationRecorder)
        query = SQL(
            "SELECT notification_id FROM {} WHERE originator_id = %s"
            " ORDER BY originator_version DESC LIMIT 1"
        ).format(Identifier(self.events_table))
        with recorder.datastore.get_connection() as conn:
            row = conn.execute(query, (aggregate_id,)).fetchone()
        return int(row["notification_id"]) if row else 0

    def head_position(self) -> int:
        """Position of the newest event in this context (0 if none)."""
        return self.recorder.max_notification_id() or 0

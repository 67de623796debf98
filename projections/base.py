"""What every PostgreSQL read model shares: rows and tracked position in one transaction.

A view is the library's ``PostgresTrackingRecorder`` (one tracking row per
upstream context in ``<name>_tracking``) plus its own tables. ``apply_batch``
applies a batch of envelopes and records the positions in the same
transaction, so a redelivered event changes nothing and a crash loses nothing.
Every envelope advances the position of its context, including events the view
ignores. Handlers are registered per event type with ``@handles``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from psycopg import Cursor
from psycopg.rows import DictRow

from infra.envelope import Envelope

Handler = Callable[[Any, Cursor[DictRow], Envelope], None]
F = TypeVar("F", bound=Callable[..., None])


def handles(*event_types: str) -> Callable[[F], F]:
    def mark(method: F) -> F:
        method._kf_handles = event_types  # type: ignore[attr-defined]
        return method

    return mark


class OutOfOrderError(RuntimeError):
    """An event arrived before one it depends on: the view refuses to apply it."""


class ProjectionView(PostgresTrackingRecorder):
    name: ClassVar[str]
    contexts: ClassVar[tuple[str, ...]]
    _handlers: ClassVar[dict[str, Handler]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handlers: dict[str, Handler] = {}
        for klass in reversed(cls.__mro__):
            for attr in vars(klass).values():
                for event_type in getattr(attr, "_kf_handles", ()):
                    handlers[event_type] = attr
        cls._handlers = handlers

    def __init__(self, datastore: PostgresDatastore) -> None:
        super().__init__(datastore, tracking_table_name=f"{self.name}_tracking")
        self.create_table()
        self._positions: dict[str, int] = {}
        self.refresh_positions()

    # -------------------------------------------------------------- positions

    def refresh_positions(self) -> dict[str, int]:
        self._positions = {c: self.max_tracking_id(c) or 0 for c in self.contexts}
        return dict(self._positions)

    def position(self, context: str) -> int:
        return self._positions.get(context, 0)

    def stream_offset(self, stream: str) -> int | None:
        with self.datastore.get_connection() as conn:
            row = conn.execute(
                "SELECT sequence FROM projection_stream_offsets"
                " WHERE projection = %s AND stream = %s",
                (self.name, stream),
            ).fetchone()
        return int(row["sequence"]) if row else None

    def wait_for(self, context: str, position: int, timeout: float) -> bool:
        """Block until the view has applied ``position`` of ``context``, or time out."""
        deadline = time.monotonic() + timeout
        interval = 0.002
        while True:
            current = self.max_tracking_id(context) or 0
            if current >= position:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(interval, remaining))
            interval = min(interval * 2, 0.05)

    # --------------------------------------------------------------- applying

    def apply_batch(
        self, envelopes: Sequence[Envelope], stream: str | None = None, sequence: int | None = None
    ) -> int:
        """Apply the new envelopes of a batch; returns how many were new."""
        fresh = [
            e
            for e in envelopes
            if e.context in self.contexts and e.position > self.position(e.context)
        ]
        last: dict[str, int] = {}
        for envelope in fresh:
            previous = last.get(envelope.context, self.position(envelope.context))
            if envelope.position <= previous:
                raise OutOfOrderError(
                    f"{envelope.context} position {envelope.position} after {previous}"
                )
            last[envelope.context] = envelope.position
        if not fresh and sequence is None:
            return 0
        with self.datastore.transaction(commit=True) as curs:
            for envelope in fresh:
                handler = self._handlers.get(envelope.event_type)
                if handler is not None:
                    handler(self, curs, envelope)
            for context, position in last.items():
                self._insert_tracking(curs, Tracking(context, position))
            if stream is not None and sequence is not None:
                curs.execute(
                    "INSERT INTO projection_stream_offsets (projection, stream, sequence)"
                    " VALUES (%s, %s, %s) ON CONFLICT (projection, stream)"
                    " DO UPDATE SET sequence = EXCLUDED.sequence",
                    (self.name, stream, sequence),
                )
        self._positions.update(last)
        return len(fresh)

    def forget_stream_offset(self, stream: str) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                "DELETE FROM projection_stream_offsets WHERE projection = %s AND stream = %s",
                (self.name, stream),
            )

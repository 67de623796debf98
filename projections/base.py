"""What every read model shares: a projection (what events do to rows) and its view in PostgreSQL.

A ``Projection`` is the logic: handlers bound with ``@handles`` to the domain's
event classes (or to ``EVERY_EVENT``), the tables they write with their primary
keys, and hooks around a batch. Naming a class that no context records fails
when the projection class is defined. The contexts it follows are those of the
events it handles (every context for ``EVERY_EVENT``).

A ``ProjectionView`` keeps a projection in PostgreSQL: the library's
``PostgresTrackingRecorder`` (one tracking row per upstream context in
``<name>_tracking``) plus the projection's tables, and its queries.
``apply_batch`` applies a batch of envelopes and records the positions in the
same transaction, so a redelivered event changes nothing and a crash loses
nothing. Every envelope advances the position of its context, including
events the projection ignores. ``projections.memory.MemoryView`` applies the
same projection to dictionaries.

A view never creates tables: ``kf migrate`` does (``create_schema``), and a
rebuild does for the copy it builds.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import datetime
from typing import Any, ClassVar, LiteralString, TypeVar
from uuid import UUID

import psycopg
from eventsourcing import persistence
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from psycopg import Connection, Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composable, Identifier

from domain.contexts import CONTEXTS, EVENTS, context_of, event_type
from infra.crypto import KeyStore, Opener, sealed_key_ids
from infra.db import TenantReads
from infra.envelope import Envelope
from infra.eventlog import EventLog
from projections.rows import BatchWrites, PostgresRows, Rows

# The database going away, not an event that cannot be applied.
_OUTAGES = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    persistence.OperationalError,
    persistence.InterfaceError,
)

Handler = Callable[[Any, Any, Envelope], None]
F = TypeVar("F", bound=Callable[..., None])


class _EveryEvent:
    def __repr__(self) -> str:
        return "EVERY_EVENT"


EVERY_EVENT = _EveryEvent()
"""Pass to ``@handles`` for a handler of every event of every context (an audit trail)."""


class UnknownEventError(TypeError):
    """A handler names something that is not an event a context records."""


def handles(*events: type | _EveryEvent) -> Callable[[F], F]:
    """Bind a projection method to event classes of the domain (or to ``EVERY_EVENT``)."""

    def mark(method: F) -> F:
        method._kf_handles = events  # type: ignore[attr-defined]
        return method

    return mark


class Projection:
    """What events do to a read model's rows; storage-agnostic when handlers use ``Rows``.

    Subclasses set ``name`` and ``tables`` (each table's primary-key columns)
    and bind handlers with ``@handles``. An instance is made per copy of the
    read model: ``variant`` is empty for the live one and names a copy being
    rebuilt (``table()`` gives that copy's table names).
    """

    name: ClassVar[str]
    tables: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    contexts: ClassVar[tuple[str, ...]] = ()
    events: ClassVar[tuple[str, ...]] = ()  # event types with a handler of their own
    follows_everything: ClassVar[bool] = False
    # A read model that keeps text sealed in events (file names, questions, answers)
    # sets this: its handlers get envelopes with sealed values opened, with keys
    # fetched once per batch, and ``ERASED`` where the subject is erased. The text
    # then lives in the read model only, whose ``Erased`` handlers drop it.
    opens_sealed: ClassVar[bool] = False
    keys: KeyStore | None = None
    _handlers: ClassVar[dict[str, Handler]] = {}
    _catch_all: ClassVar[Handler | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handlers: dict[str, Handler] = {}
        catch_all: Handler | None = None
        for klass in reversed(cls.__mro__):
            for attr in vars(klass).values():
                for event in getattr(attr, "_kf_handles", ()):
                    if event is EVERY_EVENT:
                        catch_all = attr
                    elif isinstance(event, type) and context_of(event) is not None:
                        handlers[event_type(event)] = attr
                    else:
                        raise UnknownEventError(
                            f"{cls.__qualname__}.{getattr(attr, '__name__', attr)} handles"
                            f" {event!r}, which is not an event any context records"
                            f" (domain/contexts.py)"
                        )
        cls._handlers = handlers
        cls._catch_all = catch_all
        cls.events = tuple(handlers)
        cls.follows_everything = catch_all is not None
        followed = {
            context
            for context, events in EVENTS.items()
            if catch_all is not None or set(events) & set(handlers)
        }
        # Context order as the domain declares it, so positions read the same everywhere.
        cls.contexts = tuple(c for c in CONTEXTS if c in followed)

    def __init__(self, *, variant: str = "") -> None:
        self.variant = variant

    @property
    def view_name(self) -> str:
        return self.name + self.variant

    def table(self, logical: str) -> str:
        """The physical name of one of this projection's tables in this copy."""
        if logical not in self.tables:
            raise KeyError(f"{self.name} declares no table {logical!r}")
        return logical + self.variant

    # ---------------------------------------------------------------- applying

    def apply(self, rows: Rows, envelope: Envelope) -> None:
        handler = self._handlers.get(envelope.event_type, type(self)._catch_all)
        if handler is not None:
            handler(self, rows, envelope)

    def opened(self, envelopes: Sequence[Envelope]) -> Sequence[Envelope]:
        """The batch as this projection's handlers see it (sealed values opened if it asks)."""
        if not self.opens_sealed:
            return envelopes
        opener = Opener(self.keys).prefetch(*(e.data for e in envelopes))
        return [
            replace(e, data=opener.deep(e.data)) if any(sealed_key_ids(e.data)) else e
            for e in envelopes
        ]

    def before_batch(self, rows: Rows, envelopes: Sequence[Envelope]) -> None:
        """Hook: called with a batch's new envelopes before their handlers (e.g. to prefetch)."""

    def after_batch(self, rows: Rows) -> None:
        """Hook: called after a batch's handlers, before its position is recorded."""

    def advance(
        self,
        rows: Rows,
        table: str,
        key: Mapping[str, Any],
        envelope: Envelope,
        values: Mapping[str, Any],
    ) -> None:
        """Apply ``values`` to the aggregate's row and move it to the envelope's version.

        The row must be at the version just before: anything else means an event
        arrived out of order, which is refused (``OutOfOrderError``) instead of
        corrupting the row.
        """
        changed = rows.update(
            table,
            {**key, "version": envelope.aggregate_version - 1},
            {
                **values,
                "updated_at": envelope.occurred_at,
                "version": envelope.aggregate_version,
                "position": envelope.position,
            },
        )
        if changed != 1:
            raise OutOfOrderError(
                f"{self.name}: {envelope.event_type} v{envelope.aggregate_version} of "
                f"{envelope.aggregate_id} does not follow the row's version"
            )


def select_fresh(
    contexts: Sequence[str], positions: Mapping[str, int], envelopes: Sequence[Envelope]
) -> tuple[list[Envelope], dict[str, int]]:
    """What in ``envelopes`` is new past ``positions``, and the positions after it.

    Envelopes of other contexts are skipped; ones at or below the recorded
    position were applied before (a redelivery or an overlapping replay); one
    at or below a position seen earlier in this batch is out of order.
    """
    current = {context: positions.get(context, 0) for context in contexts}
    fresh: list[Envelope] = []
    for envelope in envelopes:
        if envelope.context not in current:
            continue
        if envelope.position <= positions.get(envelope.context, 0):
            continue
        if envelope.position <= current[envelope.context]:
            raise OutOfOrderError(
                f"{envelope.context} position {envelope.position} after {current[envelope.context]}"
            )
        current[envelope.context] = envelope.position
        fresh.append(envelope)
    return fresh, current


DocumentKey = tuple[str, UUID]


def document_metadata(
    curs: Cursor[DictRow], table: str, keys: Sequence[DocumentKey]
) -> dict[DocumentKey, dict[str, Any]]:
    """filename, media_type and uploaded_at of documents, by (tenant_id, document_id)."""
    if not keys:
        return {}
    tenants, documents = zip(*set(keys), strict=True)
    rows = curs.execute(
        SQL(
            "SELECT tenant_id, document_id, filename, media_type, uploaded_at FROM {}"
            " WHERE (tenant_id, document_id) IN (SELECT * FROM unnest(%s::text[], %s::uuid[]))"
        ).format(Identifier(table)),
        (list(tenants), list(documents)),
    ).fetchall()
    return {(row["tenant_id"], row["document_id"]): row for row in rows}


def uploaded_metadata(envelope: Envelope) -> tuple[DocumentKey, dict[str, Any]]:
    """The document metadata a ``Document.Uploaded`` envelope carries, by its key."""
    return (envelope.tenant_id, UUID(envelope.aggregate_id)), {
        "filename": envelope.data["filename"],
        "media_type": envelope.data["media_type"],
        "uploaded_at": envelope.occurred_at,
    }


def confirm_erasure(
    rows: Rows, read_model: str, envelope: Envelope, detail: Mapping[str, Any] | None = None
) -> None:
    """Record, with the batch, that ``read_model`` dropped what an erasure event erased.

    The erasure certificate lists these (read model, the event's position, when, and
    what was dropped). Applied again (a redelivery, a rebuild) it is recorded again.
    """
    if not isinstance(rows, PostgresRows):
        return  # a read model in memory keeps no certificate
    subject = f"{envelope.event_type.partition('.')[0].lower()}:{envelope.aggregate_id}"
    rows.cursor.execute(
        "INSERT INTO erasure_confirmations"
        " (tenant_id, subject, read_model, position, detail, confirmed_at)"
        " VALUES (%s, %s, %s, %s, %s, now())"
        " ON CONFLICT (tenant_id, subject, read_model) DO UPDATE SET position ="
        " EXCLUDED.position, detail = EXCLUDED.detail, confirmed_at = EXCLUDED.confirmed_at",
        (envelope.tenant_id, subject, read_model, envelope.position, json.dumps(detail or {})),
    )


def restored_metadata(envelope: Envelope) -> tuple[DocumentKey, dict[str, Any]]:
    """The document metadata a ``Document.Restored`` envelope carries, by its key."""
    data = envelope.data
    return (envelope.tenant_id, UUID(envelope.aggregate_id)), {
        "filename": data["filename"],
        "media_type": data["media_type"],
        "uploaded_at": datetime.fromisoformat(data["uploaded_at"]),
    }


def restores_embedded(envelope: Envelope) -> bool:
    """Whether a ``Document.Restored`` brings back an embedded document (to index again)."""
    return (
        envelope.event_type == "Document.Restored"
        and envelope.data["status"] == "embedded"
        and bool(envelope.data.get("chunks_sha256") and envelope.data.get("embeddings_sha256"))
    )


class InvalidCursorError(ValueError):
    """A pagination cursor that this API did not issue."""


def encode_cursor(at: datetime, item_id: UUID) -> str:
    """An opaque keyset cursor: the last row's (time, id) of a newest-first page."""
    raw = f"{at.isoformat()}|{item_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, _, item_id = raw.partition("|")
        return datetime.fromisoformat(stamp), UUID(item_id)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursorError("The cursor is not one this API issued.") from exc


class OutOfOrderError(RuntimeError):
    """An event arrived before one it depends on: the view refuses to apply it."""


def create_tracking(datastore: PostgresDatastore, table: str, contexts: Sequence[str]) -> list[str]:
    """A read model's tracking table with a row per context (``kf migrate``, rebuilds).

    A row per context from the start, so that every batch (and a rebuild's
    switch) can lock it: see ``ProjectionView.lock_positions``. Returns the
    table's name if it was created now.
    """
    created = []
    with datastore.get_connection() as conn:
        found = conn.execute("SELECT to_regclass(%s) IS NOT NULL AS found", (table,)).fetchone()
    if not (found and found["found"]):
        PostgresTrackingRecorder(datastore, tracking_table_name=table).create_table()
        created.append(table)
    with datastore.transaction(commit=True) as curs:
        for context in contexts:
            curs.execute(
                SQL(
                    "INSERT INTO {} (application_name, notification_id) VALUES (%s, 0)"
                    " ON CONFLICT (application_name) DO NOTHING"
                ).format(Identifier(table)),
                (context,),
            )
    return created


class ProjectionView(PostgresTrackingRecorder):
    """A projection kept in PostgreSQL: its rows and positions in one transaction, its queries."""

    # Set by the composition root on views the API queries: tenant-facing
    # queries go through it, as a role row-level security confines to one tenant.
    reads: TenantReads | None = None

    def __init__(self, datastore: PostgresDatastore, projection: Projection) -> None:
        self.projection = projection
        self.name = projection.view_name
        self.contexts = projection.contexts
        self.writes = BatchWrites()
        super().__init__(datastore, tracking_table_name=f"{self.name}_tracking")
        self._positions: dict[str, int] = {}
        self._composed: dict[str, bytes] = {}

    def create_schema(self) -> list[str]:
        """Create the tracking table with a row per context (for a rebuild's copy)."""
        return create_tracking(self.datastore, self.tracking_table_name, self.contexts)

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

    def newest_first(
        self,
        tenant_id: str,
        table: str,
        order: tuple[str, str],
        *,
        limit: int,
        cursor: str | None = None,
        where: Sequence[str] = (),
        params: Sequence[Any] = (),
    ) -> tuple[list[DictRow], str | None]:
        """A keyset page of a tenant's rows, newest first by ``order`` (time, id), and the
        cursor to the next page (None on the last). ``where`` holds constant conditions."""
        at, item = (Identifier(column) for column in order)
        conditions: list[Composable] = [SQL("tenant_id = %s"), *(SQL(c) for c in where)]
        values: list[Any] = [tenant_id, *params]
        if cursor is not None:
            conditions.append(SQL("({}, {}) < (%s, %s)").format(at, item))
            values.extend(decode_cursor(cursor))
        query = SQL("SELECT * FROM {} WHERE {} ORDER BY {} DESC, {} DESC LIMIT %s").format(
            Identifier(table), SQL(" AND ").join(conditions), at, item
        )
        values.append(limit + 1)
        with self.tenant_reads(tenant_id) as conn:
            rows = conn.execute(query, values).fetchall()
        last = rows[limit - 1] if len(rows) > limit else None
        next_cursor = encode_cursor(last[order[0]], last[order[1]]) if last else None
        return rows[:limit], next_cursor

    def tenant_reads(
        self, tenant_id: str, *, snapshot: bool = False
    ) -> AbstractContextManager[Connection[DictRow]]:
        """A transaction that sees only ``tenant_id``'s rows (see ``TenantReads``);
        ``snapshot``: and one committed state throughout (repeatable read)."""
        if self.reads is None:
            raise RuntimeError(f"the {self.name} view has no tenant-scoped reader")
        return self.reads.scoped(tenant_id, snapshot=snapshot)

    # --------------------------------------------------------------- applying

    def lock_positions(self, curs: Cursor[DictRow]) -> dict[str, int]:
        """The committed positions, with their rows locked until ``curs`` commits.

        Every batch starts here, so what a batch skips as already applied is
        decided by the database, not by this process's memory; and a rebuild
        that switches tables or indexes holds these locks, which makes the live
        projector wait for it and then carry on from the switched position.
        """
        rows = curs.execute(
            self._tracking_sql(
                curs,
                "SELECT application_name, notification_id FROM {}"
                " WHERE application_name = ANY(%s) FOR UPDATE",
            ),
            (list(self.contexts),),
        ).fetchall()
        return {row["application_name"]: int(row["notification_id"] or 0) for row in rows}

    def apply_in(
        self,
        curs: Cursor[DictRow],
        envelopes: Sequence[Envelope],
        positions: Mapping[str, int] | None = None,
    ) -> dict[str, int]:
        """Apply what is new in ``envelopes`` within the caller's transaction.

        ``positions``: what ``lock_positions`` returned in this transaction, if the
        caller took them already (not taken twice). Returns the positions after the
        batch (committed when the caller commits).
        """
        if positions is None:
            positions = self.lock_positions(curs)
        fresh, current = select_fresh(self.contexts, positions, envelopes)
        fresh = list(self.projection.opened(fresh))
        self.writes.clear()  # whatever a failed batch queued was rolled back with it
        rows = PostgresRows(curs, self.projection.table, self.writes)
        self.projection.before_batch(rows, fresh)
        for envelope in fresh:
            self.projection.apply(rows, envelope)
        self.projection.after_batch(rows)
        self.writes.flush(curs)
        for context, position in current.items():
            if position > positions.get(context, 0):
                self.set_position(curs, context, position)
        return current

    def set_position(self, curs: Cursor[DictRow], context: str, position: int) -> None:
        curs.execute(
            self._tracking_sql(
                curs,
                "INSERT INTO {} (application_name, notification_id) VALUES (%s, %s)"
                " ON CONFLICT (application_name)"
                " DO UPDATE SET notification_id = EXCLUDED.notification_id",
            ),
            (context, position),
        )

    def _tracking_sql(self, curs: Cursor[DictRow], template: LiteralString) -> bytes:
        """``template`` on the tracking table, composed once (every batch runs these)."""
        composed = self._composed.get(template)
        if composed is None:
            query = SQL(template).format(Identifier(self.tracking_table_name))
            composed = self._composed[template] = query.as_bytes(curs)
        return composed

    def apply_batch(
        self, envelopes: Sequence[Envelope], stream: str | None = None, sequence: int | None = None
    ) -> int:
        """Apply the new envelopes of a batch in one transaction; returns how many were new."""
        if not envelopes and sequence is None:
            return 0
        with self.datastore.transaction(commit=True) as curs:
            # Rows and position commit together, and durably: the projector acks the
            # stream and moves on once this returns, so a commit that a server crash
            # took back (synchronous_commit off) was never applied again, and the
            # events after it were (a row missing for good: seen when the embedded
            # PostgreSQL was killed under ingestion).
            moved = self.apply_within(curs, envelopes, stream, sequence)
        return self.committed(envelopes, *moved)

    def apply_within(
        self,
        curs: Cursor[DictRow],
        envelopes: Sequence[Envelope],
        stream: str | None = None,
        sequence: int | None = None,
    ) -> tuple[dict[str, int], dict[str, int]]:
        """``apply_batch`` inside the caller's transaction (a group of views applies a batch
        to each in one): the positions before and after, for ``committed`` once it commits."""
        before = self.lock_positions(curs)
        after = self.apply_in(curs, envelopes, before)
        if stream is not None and sequence is not None:
            curs.execute(
                "INSERT INTO projection_stream_offsets (projection, stream, sequence)"
                " VALUES (%s, %s, %s) ON CONFLICT (projection, stream)"
                " DO UPDATE SET sequence = EXCLUDED.sequence",
                (self.name, stream, sequence),
            )
        return before, after

    def committed(
        self, envelopes: Sequence[Envelope], before: Mapping[str, int], after: Mapping[str, int]
    ) -> int:
        """After the transaction of ``apply_within`` committed: keep the positions, and say
        how many of ``envelopes`` were new."""
        self._positions.update(after)
        return sum(
            1
            for e in envelopes
            if e.context in self.contexts
            and before.get(e.context, 0) < e.position <= after[e.context]
        )

    def catch_up_from(self, logs: Mapping[str, EventLog], batch_size: int = 256) -> dict[str, int]:
        """Apply whatever the event store holds beyond this view's positions.

        Safe beside a running projector: every batch locks the positions and
        skips what was applied. Returns how many events were applied per context.
        """
        self.refresh_positions()
        applied: dict[str, int] = {}
        for context in self.contexts:
            after = self.position(context)
            applied[context] = 0
            while batch := logs[context].read(after, batch_size):
                applied[context] += self.apply_batch(batch)
                after = batch[-1].position
        return applied

    @property
    def members(self) -> tuple[ProjectionView, ...]:
        """The read models this keeps (itself; a ``ViewGroup`` keeps several)."""
        return (self,)

    def first_failing(self, logs: Mapping[str, EventLog]) -> tuple[str, Envelope, Exception] | None:
        """Apply what the event store holds one event at a time, up to the first event that
        fails (returned, with its error and the read model's name); None if everything went
        through. An outage (the database going away) raises: it is no event's fault."""
        self.refresh_positions()
        for context in self.contexts:
            after = self.position(context)
            while batch := logs[context].read(after, 1):
                [envelope] = batch
                try:
                    self.apply_batch(batch)
                except _OUTAGES:
                    raise
                except Exception as error:
                    return self.name, envelope, error
                after = envelope.position
        return None

    def skip(self, context: str, position: int, view: str | None = None) -> bool:
        """Go on past an event without applying it (an operator dropped its dead letter);
        False if the read model is past it already. ``view``: the one that failed (for a
        group; a view is only itself)."""
        assert view in (None, self.name), view
        with self.datastore.transaction(commit=True) as curs:
            positions = self.lock_positions(curs)
            if positions.get(context, 0) >= position:
                return False
            self.set_position(curs, context, position)
        self._positions[context] = position
        return True

    def forget_stream_offset(self, stream: str) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                "DELETE FROM projection_stream_offsets WHERE projection = %s AND stream = %s",
                (self.name, stream),
            )

"""Rebuilding read models from the event store, beside the live ones, switched in one step.

Nothing is re-parsed or re-embedded: events name the blobs (chunks, vectors)
that the handlers read. By default (``rebuild_tables``) a read model is rebuilt
like this:

1. a copy of each of its tables (``<table>__rebuild``, same columns, indexes
   and row-level security) and a view over them tracked as ``<name>__rebuild``
   are filled by replaying every context the read model follows;
2. one transaction locks the live view's tracking rows (the live projector
   waits at the start of its next batch), lets both the live view and the copy
   catch up to the head inside the lock, optionally compares them row for row
   (at one instant: read models that keep changing compare equal), renames the
   tables (keeping the live index names) and sets the live position; the live
   projector carries on from there.

With ``tenant`` set, only that tenant is rebuilt, in place: the copy holds that
tenant alone, and the switch replaces its rows in one transaction. The search
read model adds its index to these steps (``projections.search.rebuild``).
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

import structlog
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from infra.envelope import Envelope
from infra.eventlog import EventLog
from projections.base import ProjectionView
from projections.slice import Parts, ReadModel, Rebuild, RebuildContext, RebuildStatus

log = structlog.get_logger(__name__)

SHADOW = "__rebuild"
_BATCH = 500
_INDEX_DEF = re.compile(r"^CREATE (UNIQUE )?INDEX \S+ ON \S+ (USING .*)$")


@contextmanager
def phase(status: RebuildStatus, name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        status.phases[name] = round(time.perf_counter() - started, 3)


# ------------------------------------------------------------------ tables


def copy_structure(curs: Cursor[DictRow], live: str, shadow: str) -> None:
    curs.execute(SQL("DROP TABLE IF EXISTS {}").format(Identifier(shadow)))
    curs.execute(
        SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(Identifier(shadow), Identifier(live))
    )
    # LIKE copies no row-level security: the table that will be switched in gets it now.
    curs.execute("SELECT kf_protect_tenant_table(%s::regclass)", (shadow,))


def _indexes(curs: Cursor[DictRow], table: str) -> dict[tuple[str, str], str]:
    """The table's index names by what they index (uniqueness, method and columns)."""
    rows = curs.execute(
        "SELECT indexname, indexdef FROM pg_indexes"
        " WHERE schemaname = current_schema() AND tablename = %s",
        (table,),
    ).fetchall()
    found = {}
    for row in rows:
        match = _INDEX_DEF.match(row["indexdef"])
        if match:
            found[(match.group(1) or "", match.group(2))] = row["indexname"]
    return found


def swap_tables(curs: Cursor[DictRow], pairs: Sequence[tuple[str, str]]) -> None:
    """Live ← shadow for each pair; the old live tables are dropped, their index names kept."""
    for live, shadow in pairs:
        names = _indexes(curs, live)
        old = f"{live}__old"
        curs.execute(SQL("DROP TABLE IF EXISTS {}").format(Identifier(old)))
        curs.execute(SQL("ALTER TABLE {} RENAME TO {}").format(Identifier(live), Identifier(old)))
        curs.execute(
            SQL("ALTER TABLE {} RENAME TO {}").format(Identifier(shadow), Identifier(live))
        )
        curs.execute(SQL("DROP TABLE {}").format(Identifier(old)))
        for definition, name in _indexes(curs, live).items():
            wanted = names.get(definition)
            if wanted is not None and wanted != name:
                curs.execute(
                    SQL("ALTER INDEX {} RENAME TO {}").format(Identifier(name), Identifier(wanted))
                )


def _columns(curs: Cursor[DictRow], table: str) -> list[str]:
    """The table's columns that can be inserted into (generated ones left out)."""
    rows = curs.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
        " AND table_name = %s AND is_generated = 'NEVER' ORDER BY ordinal_position",
        (table,),
    ).fetchall()
    return [row["column_name"] for row in rows]


def replace_tenant_rows(curs: Cursor[DictRow], live: str, shadow: str, tenant: str) -> None:
    columns = SQL(", ").join(Identifier(c) for c in _columns(curs, live))
    curs.execute(SQL("DELETE FROM {} WHERE tenant_id = %s").format(Identifier(live)), (tenant,))
    curs.execute(
        SQL("INSERT INTO {live} ({cols}) SELECT {cols} FROM {shadow} WHERE tenant_id = %s").format(
            live=Identifier(live), shadow=Identifier(shadow), cols=columns
        ),
        (tenant,),
    )
    curs.execute(SQL("DROP TABLE {}").format(Identifier(shadow)))


def same_rows(run: Rebuild, curs: Cursor[DictRow]) -> bool:
    """Whether every table of the copy holds exactly the live rows (of the tenant, or all).

    Run inside the switch, once both have applied everything up to the same
    positions: a read model that keeps changing (reads are recorded as they
    happen) is compared at one instant, not while it moves.
    """
    projection = run.live.projection
    where = SQL(" WHERE tenant_id = %s") if run.tenant else SQL("")
    for table in projection.tables:
        query = SQL(
            "SELECT count(*) AS n FROM ((SELECT * FROM {a}{w} EXCEPT ALL SELECT * FROM {b}{w})"
            " UNION ALL (SELECT * FROM {b}{w} EXCEPT ALL SELECT * FROM {a}{w})) AS diff"
        ).format(a=Identifier(table), b=Identifier(table + SHADOW), w=where)
        row = curs.execute(query, (run.tenant,) * 4 if run.tenant else ()).fetchone()
        if row is None or int(row["n"]) != 0:
            return False
    return True


# ----------------------------------------------------------------- replaying


def _batches(
    log: EventLog, after: int, tenant: str | None, until: int | None = None
) -> Iterator[list[Envelope]]:
    """The log after ``after`` (up to ``until``), in batches of the tenant's events (or all)."""
    while True:
        batch = [e for e in log.read(after, _BATCH) if until is None or e.position <= until]
        if not batch:
            return
        after = batch[-1].position
        yield [e for e in batch if tenant is None or e.tenant_id == tenant]


def prepare_tables(run: Rebuild) -> None:
    """Empty copies of the read model's tables, and no tracking left from an earlier try."""
    projection = run.live.projection
    with run.context.datastore.transaction(commit=True) as curs:
        for table in projection.tables:
            copy_structure(curs, table, table + SHADOW)
        curs.execute(
            SQL("DROP TABLE IF EXISTS {}").format(Identifier(f"{run.model.name}{SHADOW}_tracking"))
        )


def shadow_view(run: Rebuild, parts: Parts | None = None) -> ProjectionView:
    view = run.model.make_view(parts or run.context.parts, SHADOW)
    view.create_schema()
    view.refresh_positions()
    return view


def replay(
    run: Rebuild,
    view: ProjectionView,
    on_batch: Callable[[Sequence[Envelope]], None] | None = None,
) -> None:
    """Apply every event of the read model's contexts (of the tenant, or all) to ``view``."""
    status = run.status
    logs = {c: run.context.event_logs[c] for c in view.contexts}
    status.total = sum(log.head() for log in logs.values())
    status.processed = 0
    for context, log in logs.items():
        reached = view.position(context)
        for batch in _batches(log, reached, run.tenant):
            if batch:
                view.apply_batch(batch)
                reached = batch[-1].position
                if on_batch is not None:
                    on_batch(batch)
        status.processed += max(reached, view.position(context))


def catch_up_in(
    run: Rebuild,
    curs: Cursor[DictRow],
    view: ProjectionView,
    tenant: str | None,
    heads: dict[str, int],
) -> dict[str, int]:
    """Inside the switch's transaction: apply what came since, up to ``heads`` exactly.

    Events committed after ``heads`` were read are left to the live projector,
    which carries on from there; none is skipped.
    """
    positions = view.lock_positions(curs)
    for context in view.contexts:
        log = run.context.event_logs[context]
        head = heads[context]
        for batch in _batches(log, positions.get(context, 0), tenant, until=head):
            if batch:
                view.apply_in(curs, batch)
        # Up to the head even when the tail held only other tenants' events.
        if head > positions.get(context, 0):
            view.set_position(curs, context, head)
            positions[context] = head
    return positions


Step = Callable[[Cursor[DictRow]], None]


def switch(run: Rebuild, shadow: ProjectionView, extra: Step | None = None) -> None:
    """Make the copy the live read model in one transaction (``extra`` runs inside it)."""
    live = run.live
    tables = list(live.projection.tables)
    run.status.state = "switching"
    with run.context.datastore.transaction(commit=True) as curs:
        live.lock_positions(curs)
        # Both take what came since, up to the same heads: the live view every
        # tenant's (its position then moves with the rebuilt rows), the copy its own.
        heads = {c: run.context.event_logs[c].head() for c in live.contexts}
        catch_up_in(run, curs, live, None, heads)
        positions = catch_up_in(run, curs, shadow, run.tenant, heads)
        if run.compare:
            started = time.perf_counter()
            run.status.matches_live = same_rows(run, curs)
            run.status.phases[f"{run.model.name}.compare"] = round(time.perf_counter() - started, 3)
        if extra is not None:
            extra(curs)
        if run.tenant is None:
            swap_tables(curs, [(t, t + SHADOW) for t in tables])
            for context in live.contexts:
                live.set_position(curs, context, positions.get(context, 0))
        else:
            for table in tables:
                replace_tenant_rows(curs, table, table + SHADOW, run.tenant)
        curs.execute(SQL("DROP TABLE IF EXISTS {}").format(Identifier(shadow.tracking_table_name)))
    live.refresh_positions()


def rebuild_tables(run: Rebuild) -> None:
    """The default: the read model's tables rebuilt beside the live ones, switched in one step."""
    name = run.model.name
    prepare_tables(run)
    shadow = shadow_view(run)
    run.status.state, run.status.projection = "building", name
    with phase(run.status, f"{name}.replay"):
        replay(run, shadow)
    with phase(run.status, f"{name}.switch"):  # compares inside, at one instant
        switch(run, shadow)


# ------------------------------------------------------------------ running


class Rebuilder:
    def __init__(self, context: RebuildContext, read_models: Sequence[ReadModel]) -> None:
        self.context = context
        self.read_models = {model.name: model for model in read_models}

    def run(
        self,
        status: RebuildStatus,
        *,
        compare: bool = True,
    ) -> RebuildStatus:
        matches: list[bool | None] = []
        try:
            for name in status.projections:
                model = self.read_models.get(name)
                if model is None:
                    raise ValueError(f"unknown read model {name!r}")
                status.matches_live = None
                started = time.perf_counter()
                run = Rebuild(model, self.context, status, status.tenant, compare)
                (model.rebuild or rebuild_tables)(run)
                matches.append(status.matches_live)
                status.results[name] = {
                    "events": status.processed,
                    "matches_live": status.matches_live,
                    "seconds": round(time.perf_counter() - started, 3),
                }
                log.info(
                    "rebuild_switched",
                    projection=name,
                    tenant=status.tenant,
                    events=status.processed,
                    matches_live=status.matches_live,
                )
            status.matches_live = _all_matched(matches) if compare else None
            status.state = "done"
        except Exception as exc:
            status.state, status.error = "failed", repr(exc)
            log.exception("rebuild_failed", projections=status.projections, tenant=status.tenant)
        finally:
            status.finished_at = datetime.now(UTC)
        return status


def _all_matched(matches: Sequence[bool | None]) -> bool | None:
    if any(m is False for m in matches):
        return False
    return True if matches and all(m is True for m in matches) else None


class RebuildBusyError(RuntimeError):
    """A rebuild is already running in this process."""


class RebuildJobs:
    """Runs one rebuild at a time in a background thread and keeps their statuses."""

    def __init__(self, rebuilder: Callable[[], Rebuilder]) -> None:
        self._rebuilder = rebuilder
        self._jobs: dict[str, RebuildStatus] = {}
        self._lock = threading.Lock()
        self._running: str | None = None

    def start(
        self, projections: list[str], tenant: str | None, *, compare: bool = True
    ) -> RebuildStatus:
        with self._lock:
            if self._running is not None and self._jobs[self._running].state not in (
                "done",
                "failed",
            ):
                raise RebuildBusyError(f"rebuild {self._running} is still running")
            status = RebuildStatus(id=uuid.uuid4().hex, projections=projections, tenant=tenant)
            self._jobs[status.id] = status
            self._running = status.id
        thread = threading.Thread(
            target=lambda: self._rebuilder().run(status, compare=compare),
            name=f"rebuild-{status.id[:8]}",
            daemon=True,
        )
        thread.start()
        return status

    def get(self, rebuild_id: str) -> RebuildStatus | None:
        return self._jobs.get(rebuild_id)

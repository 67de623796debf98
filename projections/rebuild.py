"""Rebuilding read models from the event store, beside the live ones, switched in one step.

Nothing is re-parsed or re-embedded: events name the blobs (chunks, vectors)
that the handlers read. A rebuild:

1. builds a shadow copy (tables ``<table>__rebuild``, and for search a new edge
   shard directory or a new Qdrant collection) by replaying the documents log;
2. optionally compares it with the live read model;
3. switches in one transaction that first locks the live view's tracking rows:
   the live projector waits at the start of its next batch, the shadow catches
   up to the head inside the lock, then the tables are renamed (and the index
   pointer or alias moved) and the live position set, and the transaction
   commits. The live projector carries on from there.

With ``tenant`` set, only that tenant is rebuilt, in place: the shadow holds
that tenant alone, and the switch replaces its rows (one transaction) and its
points (rebuilt points overwrite theirs by id first, then points no longer
present are removed), so searches never see the tenant empty.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import structlog
from eventsourcing.postgres import PostgresDatastore
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from infra.blobs import BlobStore
from infra.envelope import Envelope
from infra.eventlog import EventLog
from projections.base import ProjectionView
from projections.fulltext import FulltextView
from projections.search import IndexHolder, SearchView
from projections.search_index import (
    Bm25Encoder,
    EdgeSearchIndex,
    IndexSpec,
    SearchIndex,
    ServerSearchIndex,
)

log = structlog.get_logger(__name__)

Projection = Literal["search", "fulltext"]
SHADOW = "__rebuild"
_BATCH = 500


@dataclass
class RebuildStatus:
    id: str
    projections: list[str]
    tenant: str | None
    state: str = "pending"  # pending | building | switching | done | failed
    projection: str | None = None
    processed: int = 0
    total: int = 0
    chunks: int = 0
    matches_live: bool | None = None
    error: str | None = None
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None

    @property
    def seconds(self) -> float:
        end = self.finished_at or datetime.now(UTC)
        return (end - self.started_at).total_seconds()


@dataclass
class RebuildContext:
    """What a rebuild needs of the running system."""

    datastore: PostgresDatastore
    event_log: EventLog
    blobs: BlobStore
    bm25: Bm25Encoder
    index_spec: IndexSpec
    live_fulltext: FulltextView
    live_search: SearchView
    index: IndexHolder
    index_dir: Path
    pointer_file: Path
    qdrant: Any | None  # a qdrant_client.QdrantClient when a server is configured
    collection_alias: str
    search_threads: int
    hnsw_ef: int


@contextmanager
def _phase(status: RebuildStatus, name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        status.phases[name] = round(time.perf_counter() - started, 3)


def _table_exists(curs: Cursor[DictRow], table: str) -> bool:
    row = curs.execute("SELECT to_regclass(%s) AS oid", (table,)).fetchone()
    return row is not None and row["oid"] is not None


def _copy_structure(curs: Cursor[DictRow], live: str, shadow: str) -> None:
    curs.execute(SQL("DROP TABLE IF EXISTS {}").format(Identifier(shadow)))
    curs.execute(
        SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(Identifier(shadow), Identifier(live))
    )
    # LIKE copies no row-level security: the table that will be switched in gets it now.
    curs.execute("SELECT kf_protect_tenant_table(%s::regclass)", (shadow,))


def _swap_tables(curs: Cursor[DictRow], pairs: Sequence[tuple[str, str]]) -> None:
    """Live ← shadow for each pair; the old live tables are dropped."""
    for live, shadow in pairs:
        old = f"{live}__old"
        curs.execute(SQL("DROP TABLE IF EXISTS {}").format(Identifier(old)))
        curs.execute(SQL("ALTER TABLE {} RENAME TO {}").format(Identifier(live), Identifier(old)))
        curs.execute(
            SQL("ALTER TABLE {} RENAME TO {}").format(Identifier(shadow), Identifier(live))
        )
        curs.execute(SQL("DROP TABLE {}").format(Identifier(old)))


def _replace_tenant_rows(
    curs: Cursor[DictRow], live: str, shadow: str, tenant: str, columns: str
) -> None:
    curs.execute(SQL("DELETE FROM {} WHERE tenant_id = %s").format(Identifier(live)), (tenant,))
    curs.execute(
        SQL("INSERT INTO {live} ({cols}) SELECT {cols} FROM {shadow} WHERE tenant_id = %s").format(
            live=Identifier(live), shadow=Identifier(shadow), cols=SQL(columns)
        ),
        (tenant,),
    )
    curs.execute(SQL("DROP TABLE {}").format(Identifier(shadow)))


_FULLTEXT_CHUNK_COLUMNS = (
    "tenant_id, document_id, chunk_index, filename, media_type, uploaded_at,"
    " page_start, page_end, text"
)
_FULLTEXT_DOCUMENT_COLUMNS = "tenant_id, document_id, filename, media_type, uploaded_at"
_SEARCH_DOCUMENT_COLUMNS = (
    "tenant_id, document_id, filename, media_type, uploaded_at, status, chunk_count"
)


class Rebuilder:
    def __init__(self, context: RebuildContext) -> None:
        self.c = context

    # -------------------------------------------------------------- replaying

    def _envelopes(self, after: int, tenant: str | None) -> Iterator[list[Envelope]]:
        while True:
            batch = list(self.c.event_log.read(after, _BATCH))
            if not batch:
                return
            after = batch[-1].position
            yield [e for e in batch if tenant is None or e.tenant_id == tenant]

    def _replay(self, view: ProjectionView, tenant: str | None, status: RebuildStatus) -> None:
        status.total = self.c.event_log.head()
        for batch in self._envelopes(view.position("documents"), tenant):
            if batch:
                view.apply_batch(batch)
            status.processed = batch[-1].position if batch else status.processed
            status.chunks += sum(
                int(e.data.get("chunk_count", 0))
                for e in batch
                if e.event_type == "Document.Embedded"
            )
        status.processed = max(status.processed, view.position("documents"))

    def _catch_up_in(self, curs: Cursor[DictRow], view: ProjectionView, tenant: str | None) -> int:
        after = view.lock_positions(curs).get("documents", 0)
        position = after
        for batch in self._envelopes(after, tenant):
            if batch:
                view.apply_in(curs, batch)
        # Advance to the head even when the tail held only other tenants' events.
        head = self.c.event_log.head()
        if head > position:
            view.set_position(curs, "documents", head)
            position = head
        return position

    # --------------------------------------------------------------- fulltext

    def rebuild_fulltext(self, status: RebuildStatus, *, tenant: str | None, compare: bool) -> None:
        live = self.c.live_fulltext
        chunks, documents = live.chunks_table, live.documents_table
        shadow_chunks, shadow_documents = chunks + SHADOW, documents + SHADOW
        with self.c.datastore.transaction(commit=True) as curs:
            _copy_structure(curs, chunks, shadow_chunks)
            _copy_structure(curs, documents, shadow_documents)
            curs.execute(
                SQL("DROP TABLE IF EXISTS {}").format(Identifier(f"fulltext{SHADOW}_tracking"))
            )
        shadow = FulltextView(
            self.c.datastore,
            self.c.blobs,
            chunks_table=shadow_chunks,
            documents_table=shadow_documents,
            name=f"fulltext{SHADOW}",
        )
        status.state, status.projection = "building", "fulltext"
        with _phase(status, "fulltext.replay"):
            self._replay(shadow, tenant, status)
        if compare:
            with _phase(status, "fulltext.compare"):
                status.matches_live = self._same_rows(chunks, shadow_chunks, tenant)
        status.state = "switching"
        with _phase(status, "fulltext.switch"), self.c.datastore.transaction(commit=True) as curs:
            live_position = live.lock_positions(curs)["documents"]
            if tenant is None:
                position = self._catch_up_in(curs, shadow, None)
                _swap_tables(curs, [(chunks, shadow_chunks), (documents, shadow_documents)])
                live.set_position(curs, "documents", max(position, live_position))
            else:
                # The live view takes every tenant's pending events first, so its
                # position can move to the head with the rebuilt tenant's rows.
                position = self._catch_up_in(curs, live, None)
                self._catch_up_in(curs, shadow, tenant)
                _replace_tenant_rows(curs, chunks, shadow_chunks, tenant, _FULLTEXT_CHUNK_COLUMNS)
                _replace_tenant_rows(
                    curs, documents, shadow_documents, tenant, _FULLTEXT_DOCUMENT_COLUMNS
                )
            curs.execute(
                SQL("DROP TABLE IF EXISTS {}").format(Identifier(shadow.tracking_table_name))
            )
        live.refresh_positions()

    def _same_rows(self, live: str, shadow: str, tenant: str | None) -> bool:
        where = SQL(" WHERE tenant_id = %s") if tenant else SQL("")
        params = (tenant, tenant) if tenant else ()
        query = SQL(
            "SELECT count(*) AS n FROM ("
            "(SELECT {cols} FROM {a}{w} EXCEPT SELECT {cols} FROM {b}{w})"
            " UNION ALL (SELECT {cols} FROM {b}{w} EXCEPT SELECT {cols} FROM {a}{w})) AS diff"
        ).format(
            cols=SQL(_FULLTEXT_CHUNK_COLUMNS), a=Identifier(live), b=Identifier(shadow), w=where
        )
        with self.c.datastore.get_connection() as conn:
            row = conn.execute(query, params * 2 if tenant else ()).fetchone()
        return row is not None and int(row["n"]) == 0

    # ----------------------------------------------------------------- search

    def _new_shadow_index(self, tenant: str | None) -> tuple[SearchIndex, Callable[[], None]]:
        """A fresh index for the shadow, and how to dispose of it if unused."""
        stamp = f"{int(time.time())}-{uuid.uuid4().hex[:6]}"
        if self.c.qdrant is not None:
            collection = f"{self.c.collection_alias}_{stamp.replace('-', '_')}"
            ServerSearchIndex.create_collection(self.c.qdrant, collection, self.c.index_spec)
            index: SearchIndex = ServerSearchIndex(
                self.c.qdrant, collection, hnsw_ef=self.c.hnsw_ef
            )
            return index, lambda: self.c.qdrant.delete_collection(collection)
        path = self.c.index_dir / (
            f"search-{stamp}" if tenant is None else f"tenant-rebuild-{stamp}"
        )
        index = EdgeSearchIndex(
            path, self.c.index_spec, search_threads=self.c.search_threads, hnsw_ef=self.c.hnsw_ef
        )

        def dispose() -> None:
            index.close()
            shutil.rmtree(path, ignore_errors=True)

        return index, dispose

    def rebuild_search(self, status: RebuildStatus, *, tenant: str | None, compare: bool) -> None:
        live = self.c.live_search
        table, shadow_table = live.table, live.table + SHADOW
        with self.c.datastore.transaction(commit=True) as curs:
            _copy_structure(curs, table, shadow_table)
            curs.execute(
                SQL("DROP TABLE IF EXISTS {}").format(Identifier(f"search{SHADOW}_tracking"))
            )
        shadow_index, dispose = self._new_shadow_index(tenant)
        shadow_holder = IndexHolder(lambda: shadow_index)
        shadow = SearchView(
            self.c.datastore,
            shadow_holder,
            self.c.blobs,
            self.c.bm25,
            model=self.c.index_spec.model,
            dimension=self.c.index_spec.dimension,
            table=shadow_table,
            name=f"search{SHADOW}",
        )
        switched = False
        try:
            status.state, status.projection = "building", "search"
            with _phase(status, "search.replay"):
                self._replay(shadow, tenant, status)
            if tenant is None and isinstance(shadow_index, EdgeSearchIndex):
                status.state = "optimizing"
                with _phase(status, "search.optimize"):
                    shadow_index = optimize_elsewhere(shadow_index)
                shadow_holder.swap(shadow_index)
            if compare:
                with _phase(status, "search.compare"):
                    status.matches_live = same_points(self.c.index.current, shadow_index, tenant)
            status.state = "switching"
            with _phase(status, "search.switch"), self.c.datastore.transaction(commit=True) as curs:
                live_position = live.lock_positions(curs)["documents"]
                if tenant is None:
                    position = self._catch_up_in(curs, shadow, None)
                    self._switch_index(shadow_index)
                    _swap_tables(curs, [(table, shadow_table)])
                    live.set_position(curs, "documents", max(position, live_position))
                    switched = True
                else:
                    self._catch_up_in(curs, live, None)
                    self._catch_up_in(curs, shadow, tenant)
                    replace_tenant_points(self.c.index.current, shadow_index, tenant)
                    _replace_tenant_rows(
                        curs, table, shadow_table, tenant, _SEARCH_DOCUMENT_COLUMNS
                    )
                curs.execute(
                    SQL("DROP TABLE IF EXISTS {}").format(Identifier(shadow.tracking_table_name))
                )
            live.refresh_positions()
        finally:
            if not switched:
                dispose()

    def _switch_index(self, new_index: SearchIndex) -> None:
        """Make ``new_index`` the live one: alias or pointer first, then this process."""
        if self.c.qdrant is not None and isinstance(new_index, ServerSearchIndex):
            from qdrant_client import models

            alias = self.c.collection_alias
            old = {
                a.alias_name: a.collection_name for a in self.c.qdrant.get_aliases().aliases
            }.get(alias)
            self.c.qdrant.update_collection_aliases(
                change_aliases_operations=[
                    models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)),
                    models.CreateAliasOperation(
                        create_alias=models.CreateAlias(
                            collection_name=new_index.collection, alias_name=alias
                        )
                    ),
                ]
            )
            if old and old != new_index.collection:
                threading.Timer(30, lambda: self.c.qdrant.delete_collection(old)).start()  # type: ignore[union-attr]
            return
        assert isinstance(new_index, EdgeSearchIndex)
        temporary = self.c.pointer_file.with_suffix(".tmp")
        temporary.write_text(new_index.path.name)
        temporary.replace(self.c.pointer_file)  # atomic: a restart opens the new shard
        previous = self.c.index.swap(new_index)
        if previous is not None:
            # In-flight searches may still hold the old shard for a moment.
            old_path = getattr(previous, "path", None)

            def retire() -> None:
                previous.close()
                if old_path is not None:
                    shutil.rmtree(old_path, ignore_errors=True)

            threading.Timer(10, retire).start()

    # ---------------------------------------------------------------- running

    def run(
        self,
        status: RebuildStatus,
        *,
        compare: bool = True,
        on_progress: Callable[[RebuildStatus], None] | None = None,
    ) -> RebuildStatus:
        try:
            for projection in status.projections:
                status.chunks = 0  # counted per read model; each rebuild indexes them all
                if projection == "fulltext":
                    self.rebuild_fulltext(status, tenant=status.tenant, compare=compare)
                elif projection == "search":
                    self.rebuild_search(status, tenant=status.tenant, compare=compare)
                else:
                    raise ValueError(f"unknown projection {projection!r}")
                log.info(
                    "rebuild_switched",
                    projection=projection,
                    tenant=status.tenant,
                    events=status.processed,
                    matches_live=status.matches_live,
                )
            status.state = "done"
        except Exception as exc:
            status.state, status.error = "failed", repr(exc)
            log.exception("rebuild_failed", projections=status.projections, tenant=status.tenant)
        finally:
            status.finished_at = datetime.now(UTC)
        return status


def optimize_elsewhere(index: EdgeSearchIndex) -> EdgeSearchIndex:
    """Build the shard's HNSW in a child process (the engine holds the GIL meanwhile).

    The shard is closed here, optimised by ``projections.optimize_shard`` in a
    process of its own, and opened again; searches in this process go on.
    """
    import subprocess
    import sys

    index.close()
    done = subprocess.run(  # noqa: S603 - our own module, our own shard path
        [sys.executable, "-m", "projections.optimize_shard", str(index.path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"optimising {index.path} failed: {done.stderr[-2000:]}")
    log.info("shard_optimized", path=str(index.path), result=done.stdout.strip())
    return EdgeSearchIndex(
        index.path, index.spec, search_threads=index.search_threads, hnsw_ef=index.hnsw_ef
    )


def same_points(live: SearchIndex, shadow: SearchIndex, tenant: str | None) -> bool:
    """Whether two indexes hold the same points (ids, payloads, vectors) for ``tenant`` or all."""

    def snapshot(
        index: SearchIndex,
    ) -> tuple[dict[str, tuple[str, tuple[int, ...]]], dict[str, Any]]:
        described: dict[str, tuple[str, tuple[int, ...]]] = {}
        vectors: dict[str, Any] = {}
        for p in index.points(tenant):
            order = np.argsort(p.sparse.indices)
            described[p.id] = (
                json.dumps(p.payload, sort_keys=True),
                tuple(int(i) for i in np.asarray(p.sparse.indices)[order]),
            )
            vectors[p.id] = (
                np.asarray(p.dense, dtype=np.float32),
                np.asarray(p.sparse.values, dtype=np.float32)[order],
            )
        return described, vectors

    described_live, vectors_live = snapshot(live)
    described_shadow, vectors_shadow = snapshot(shadow)
    if described_live != described_shadow:
        return False
    return all(
        np.allclose(vectors_live[i][0], vectors_shadow[i][0], atol=1e-5)
        and np.allclose(vectors_live[i][1], vectors_shadow[i][1], atol=1e-5)
        for i in described_live
    )


def replace_tenant_points(live: SearchIndex, shadow: SearchIndex, tenant: str) -> None:
    rebuilt: set[str] = set()
    batch = []
    for point in shadow.points(tenant):
        rebuilt.add(point.id)
        batch.append(point)
        if len(batch) >= 256:
            live.upsert(batch)
            batch = []
    live.upsert(batch)
    stale_documents = {
        str(p.payload.get("document_id")) for p in live.points(tenant) if p.id not in rebuilt
    }
    for document_id in stale_documents:
        live.delete_document(tenant, document_id)


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

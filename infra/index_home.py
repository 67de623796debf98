"""Where the search index lives, and how a new one is made and switched in.

The live index is an edge shard under ``<data_dir>/index`` named by the
pointer file ``search.current`` (the engine in-process), or the collection a
Qdrant server's alias names. A rebuild makes a new shard or collection beside
it, fills it, and switches: pointer or alias first, then this process's
``IndexHolder``. ``IndexHolder`` opens the live index on first use, because an
in-process shard belongs to exactly one process (the engine locks its files).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from infra.search_index import (
    EdgeSearchIndex,
    IndexMismatchError,
    IndexSpec,
    SearchIndex,
    ServerSearchIndex,
)

log = structlog.get_logger(__name__)

POINTER = "search.current"
# An index switched out is closed and removed this long after (searches in flight end).
RETIRE_AFTER_S = 10


class IndexHolder:
    """The live index, opened on first use; a rebuild swaps in a new one in one step."""

    def __init__(self, open_index: Callable[[], SearchIndex]) -> None:
        self._open = open_index
        self._index: SearchIndex | None = None
        self._lock = threading.Lock()

    @property
    def current(self) -> SearchIndex:
        index = self._index
        if index is None:
            with self._lock:
                if self._index is None:
                    self._index = self._open()
                index = self._index
        return index

    @property
    def is_open(self) -> bool:
        return self._index is not None

    def swap(self, index: SearchIndex) -> SearchIndex | None:
        with self._lock:
            previous, self._index = self._index, index
        return previous

    def close(self) -> None:
        with self._lock:
            if self._index is not None:
                self._index.close()
                self._index = None


@dataclass
class IndexHome:
    """An edge-shard directory (``qdrant`` None) or a Qdrant server (a ``QdrantClient``)."""

    spec: IndexSpec
    index_dir: Path
    qdrant: Any | None
    alias: str
    search_threads: int = 1
    hnsw_ef: int = 128

    @property
    def pointer_file(self) -> Path:
        return self.index_dir / POINTER

    def edge_path(self) -> Path:
        name = self.pointer_file.read_text().strip() if self.pointer_file.exists() else "search-0"
        return self.index_dir / name

    def open_live(self) -> SearchIndex:
        if self.qdrant is None:
            return EdgeSearchIndex(
                self.edge_path(),
                self.spec,
                search_threads=self.search_threads,
                hnsw_ef=self.hnsw_ef,
            )
        from qdrant_client import models

        client = self.qdrant
        aliases = {a.alias_name: a.collection_name for a in client.get_aliases().aliases}
        if self.alias not in aliases:
            collection = f"{self.alias}_v1"
            if not client.collection_exists(collection):
                ServerSearchIndex.create_collection(client, collection, self.spec)
            client.update_collection_aliases(
                change_aliases_operations=[
                    models.CreateAliasOperation(
                        create_alias=models.CreateAlias(
                            collection_name=collection, alias_name=self.alias
                        )
                    )
                ]
            )
        info = client.get_collection(self.alias)
        vectors = info.config.params.vectors
        size = vectors["dense"].size if isinstance(vectors, dict) else None
        if size != self.spec.dimension:
            raise IndexMismatchError(
                f"Qdrant collection {self.alias!r} has {size}-dimensional dense vectors;"
                f" {self.spec.dimension} are configured"
            )
        return ServerSearchIndex(client, self.alias, hnsw_ef=self.hnsw_ef)

    def new_index(self, *, whole: bool) -> tuple[SearchIndex, Callable[[], None]]:
        """A fresh index beside the live one, and how to dispose of it if unused."""
        stamp = f"{int(time.time())}-{uuid.uuid4().hex[:6]}"
        if self.qdrant is not None:
            collection = f"{self.alias}_{stamp.replace('-', '_')}"
            ServerSearchIndex.create_collection(self.qdrant, collection, self.spec)
            server = ServerSearchIndex(self.qdrant, collection, hnsw_ef=self.hnsw_ef)
            return server, lambda: self.qdrant.delete_collection(collection)
        self.index_dir.mkdir(parents=True, exist_ok=True)
        path = self.index_dir / (f"search-{stamp}" if whole else f"tenant-rebuild-{stamp}")
        edge = EdgeSearchIndex(
            path, self.spec, search_threads=self.search_threads, hnsw_ef=self.hnsw_ef
        )

        def dispose() -> None:
            edge.close()
            shutil.rmtree(path, ignore_errors=True)

        return edge, dispose

    def switch(self, holder: IndexHolder, new_index: SearchIndex) -> None:
        """Make ``new_index`` the live one: alias or pointer first, then ``holder``."""
        if self.qdrant is not None and isinstance(new_index, ServerSearchIndex):
            from qdrant_client import models

            client = self.qdrant
            old = {a.alias_name: a.collection_name for a in client.get_aliases().aliases}.get(
                self.alias
            )
            client.update_collection_aliases(
                change_aliases_operations=[
                    models.DeleteAliasOperation(
                        delete_alias=models.DeleteAlias(alias_name=self.alias)
                    ),
                    models.CreateAliasOperation(
                        create_alias=models.CreateAlias(
                            collection_name=new_index.collection, alias_name=self.alias
                        )
                    ),
                ]
            )
            if old and old != new_index.collection:
                threading.Timer(30, lambda: client.delete_collection(old)).start()
            return
        assert isinstance(new_index, EdgeSearchIndex)
        temporary = self.pointer_file.with_suffix(".tmp")
        temporary.write_text(new_index.path.name)
        temporary.replace(self.pointer_file)  # atomic: a restart opens the new shard
        previous = holder.swap(new_index)
        if previous is not None:
            # In-flight searches may still hold the old shard for a moment.
            old_path = getattr(previous, "path", None)

            def retire() -> None:
                previous.close()
                if old_path is not None:
                    shutil.rmtree(old_path, ignore_errors=True)

            threading.Timer(RETIRE_AFTER_S, retire).start()


def purge(home: IndexHome, holder: IndexHolder, *, live: bool = True) -> dict[str, Any]:
    """Rewrite ``holder``'s index with only its live points, so no copy of a deleted one is left.

    Deleting a point leaves its payload in the engine's segments and write-ahead log
    until they are rewritten, which the engine does on its own schedule or never (an
    edge shard keeps its log's file). This copies every live point into a fresh shard
    (or collection), builds its HNSW if the old one had one, and switches it in: for
    the live index (``live``) through the pointer or alias, removing the old one once
    searches in flight are done with it; for a rebuild's copy in ``holder`` alone,
    removing the old one at once. Run by the search projector for a batch with
    erasures, while it holds the read model's position locks: no other writer touches
    the index meanwhile.
    """
    started = time.monotonic()
    old = holder.current
    indexed = isinstance(old, EdgeSearchIndex) and old.indexed_vectors() > 0
    fresh, dispose = home.new_index(whole=True)
    copied = 0
    try:
        batch: list[Any] = []
        for point in old.points(None):
            batch.append(point)
            if len(batch) >= 512:
                fresh.upsert(batch)
                copied += len(batch)
                batch = []
        fresh.upsert(batch)
        copied += len(batch)
        if indexed and isinstance(fresh, EdgeSearchIndex):
            fresh = optimize_elsewhere(fresh)
        if live:
            home.switch(holder, fresh)
        else:
            holder.swap(fresh)
            remove_index(home, old)
    except BaseException:
        dispose()
        raise
    detail = {
        "index": "rewritten",
        "points_kept": copied,
        "old_index_removed_within_s": RETIRE_AFTER_S if live else 0,
        "seconds": round(time.monotonic() - started, 3),
    }
    log.info("index_purged", **detail)
    return detail


def remove_index(home: IndexHome, index: SearchIndex) -> None:
    """Close an index that is not the live one and delete it (shard directory or collection)."""
    if isinstance(index, ServerSearchIndex):
        if home.qdrant is not None:
            home.qdrant.delete_collection(index.collection)
        return
    index.close()
    path = getattr(index, "path", None)
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


def optimize_elsewhere(index: EdgeSearchIndex) -> EdgeSearchIndex:
    """Build the shard's HNSW in a child process (the engine holds the GIL meanwhile).

    The shard is closed here, optimised by ``infra.optimize_shard`` in a
    process of its own, and opened again; searches in this process go on.
    """
    index.close()
    done = subprocess.run(  # noqa: S603 - our own module, our own shard path
        [sys.executable, "-m", "infra.optimize_shard", str(index.path)],
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
    """The tenant's points in ``live`` become ``shadow``'s: overwrite by id, then drop the rest."""
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

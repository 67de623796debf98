"""Purging the search index: deleted points leave no copy in its files or collections."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from qdrant_client import QdrantClient

import infra.index_home as index_home
from config.root import Container
from infra.index_home import IndexHolder, IndexHome, purge
from infra.search_index import ChunkPoint, Filters, ServerSearchIndex, Sparse, point_id
from tests.files import files_with


@pytest.fixture(scope="module")
def container(make_container: Callable[..., Container]) -> Iterator[Container]:
    yield make_container()


def _points(document_id: str, words: str, n: int, dimension: int) -> list[ChunkPoint]:
    rng = random.Random(document_id)
    return [
        ChunkPoint(
            id=point_id(document_id, i),
            dense=[rng.random() for _ in range(dimension)],
            sparse=Sparse([i + 1], [1.0]),
            payload={
                "tenant_id": "t",
                "document_id": document_id,
                "chunk_index": i,
                "text": f"{words} {i}",
                "filename": f"{words}.txt",
                "media_type": "text/plain",
                "uploaded_at": "2026-12-02T00:00:00+00:00",
            },
        )
        for i in range(n)
    ]


def test_an_edge_shard_is_rewritten_without_the_deleted_points(
    container: Container, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(index_home, "RETIRE_AFTER_S", 0.1)
    home = IndexHome(container.index_spec, tmp_path / "index", None, "kf_chunks")
    holder = IndexHolder(home.open_live)
    canary = f"zqp{uuid.uuid4().hex[:10]}"
    dimension = container.index_spec.dimension
    kept, gone = str(uuid.uuid4()), str(uuid.uuid4())
    holder.current.upsert(_points(kept, "kept words", 300, dimension))
    holder.current.upsert(_points(gone, canary, 5, dimension))
    holder.current.flush()  # type: ignore[attr-defined]
    holder.current.delete_document("t", gone)
    assert files_with(tmp_path / "index", canary.encode())  # deleting alone leaves copies
    detail = purge(home, holder)
    assert detail["points_kept"] == 300
    deadline = time.monotonic() + 10
    while files_with(tmp_path / "index", canary.encode()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not files_with(tmp_path / "index", canary.encode())
    assert holder.current.count("t") == 300
    found = holder.current.query(
        "t", dense=None, sparse=Sparse([1], [1.0]), filters=Filters(), limit=5
    )
    assert found.sparse and all(h.id != point_id(gone, 0) for h in found.sparse)
    holder.close()
    reopened = home.open_live()  # the pointer names the new shard: a restart opens it
    assert reopened.count("t") == 300
    reopened.close()


@pytest.mark.filterwarnings("ignore::UserWarning")  # qdrant-client local mode notices
def test_a_server_collection_is_replaced_and_the_old_one_deleted(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    deleted: list[str] = []
    client = QdrantClient(":memory:")
    original = client.delete_collection

    def delete_collection(name: str, **kwargs: object) -> bool:
        deleted.append(name)
        return original(name)

    monkeypatch.setattr(client, "delete_collection", delete_collection)
    monkeypatch.setattr(
        index_home.threading, "Timer", lambda _delay, action: type(
            "Now", (), {"start": staticmethod(action)}
        )()
    )  # fmt: skip
    home = IndexHome(container.index_spec, Path("unused"), client, "kf_chunks")
    holder = IndexHolder(home.open_live)
    dimension = container.index_spec.dimension
    kept, gone = str(uuid.uuid4()), str(uuid.uuid4())
    holder.current.upsert(_points(kept, "kept words", 20, dimension))
    holder.current.upsert(_points(gone, "erased words", 3, dimension))
    holder.current.delete_document("t", gone)
    before = {a.alias_name: a.collection_name for a in client.get_aliases().aliases}["kf_chunks"]
    detail = purge(home, holder)
    after = {a.alias_name: a.collection_name for a in client.get_aliases().aliases}["kf_chunks"]
    assert detail["points_kept"] == 20 and after != before
    assert deleted == [before]
    assert isinstance(holder.current, ServerSearchIndex)
    assert holder.current.count("t") == 20
    assert {p.payload["document_id"] for p in holder.current.points("t")} == {kept}

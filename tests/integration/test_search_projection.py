"""Search and full-text projections on real PostgreSQL, the real model and both index engines."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import QdrantClient

from config.root import Container
from config.runtime import build_stages
from infra.embedding import MODEL_NAME, SentenceTransformerEmbedder
from infra.envelope import Envelope
from infra.index_home import IndexHolder, same_points
from infra.search_index import (
    EdgeSearchIndex,
    Filters,
    Fusion,
    IndexMismatchError,
    IndexSpec,
    ServerSearchIndex,
)
from processors.stages import DocumentRef
from projections.base import ProjectionView
from projections.fulltext import FulltextView
from projections.search import SearchService, SearchSettings
from tests.read_models import copy_of, envelopes, rows

TEXTS = {
    "tenant-1": [
        "The harbour master logged every vessel entering the port at dawn.",
        "Quarterly budget figures show the pension fund grew by four percent.",
    ],
    "tenant-2": [
        "The harbour pilot guided the tanker through the narrow channel.",
        "A glacier retreat study measured ice loss over thirty years.",
    ],
}
FUSION = Fusion(k=60, dense_weight=1.0, sparse_weight=1.0, prefetch=50)


@pytest.fixture(scope="module")
def container(
    make_container: Callable[..., Container], embedder: SentenceTransformerEmbedder
) -> Iterator[Container]:
    built = make_container()
    stages = build_stages(built)
    stages._embedder_factory = lambda: embedder
    for tenant, texts in TEXTS.items():
        for text in texts:
            result = built.documents.upload_document(
                tenant_id=tenant,
                actor="key:t",
                filename=f"{text[:10]}.txt",
                declared_type=None,
                content=text.encode(),
            )
            ref = DocumentRef(tenant, result.id)
            stages.parse(ref)
            stages.chunk(ref)
            stages.embed([ref])
    yield built


def _envelopes(container: Container) -> list[Envelope]:
    return envelopes(container, "documents")


def _search_view(container: Container, index: Any, name: str) -> ProjectionView:
    return copy_of(container, "search", f"_{name}", index=IndexHolder(lambda: index))


def test_search_projection_fed_twice_leaves_identical_points(
    container: Container, tmp_path: Path
) -> None:
    envelopes = _envelopes(container)
    once = EdgeSearchIndex(tmp_path / "once", container.index_spec)
    twice = EdgeSearchIndex(tmp_path / "twice", container.index_spec)
    _search_view(container, once, "once").apply_batch(envelopes)
    view = _search_view(container, twice, "twice")
    view.apply_batch(envelopes)
    assert view.apply_batch(envelopes) == 0  # the second delivery is skipped by position
    # Even forced through the handlers again (positions reset), the points stay the same.
    with container.parts.datastore.transaction(commit=True) as curs:
        view.set_position(curs, "documents", 0)
    view.apply_batch(envelopes)
    assert once.count() == twice.count() == 4
    assert same_points(once, twice, None)


def test_fulltext_projection_fed_twice_leaves_identical_rows(container: Container) -> None:
    fed = _envelopes(container)
    view = copy_of(container, "fulltext", "_t")
    assert isinstance(view, FulltextView)

    def chunks() -> list[dict[str, Any]]:
        return rows(view)["fulltext_chunks"]

    view.apply_batch(fed)
    first = chunks()
    assert view.apply_batch(fed) == 0
    assert view.apply_batch(fed[:2]) == 0
    assert chunks() == first and len(first) == 4
    hits = view.search("tenant-1", "harbour", filters=Filters(), limit=10)
    assert [h.filename for h in hits] == ["The harbou.txt"]
    assert "<mark>harbour</mark>" in hits[0].snippet


@pytest.mark.filterwarnings("ignore::UserWarning")  # qdrant-client local mode notices
@pytest.mark.parametrize("engine", ["edge", "server"])
def test_both_engines_answer_the_same_shape_per_tenant(
    container: Container, embedder: SentenceTransformerEmbedder, engine: str, tmp_path: Path
) -> None:
    if engine == "edge":
        index: Any = EdgeSearchIndex(tmp_path / "edge", container.index_spec)
    else:
        # qdrant-client's local mode speaks the server API; fine for a handful of points.
        client = QdrantClient(":memory:")
        ServerSearchIndex.create_collection(client, "kf_chunks_test", container.index_spec)
        index = ServerSearchIndex(client, "kf_chunks_test")
    _search_view(container, index, engine).apply_batch(_envelopes(container))
    service = SearchService(
        IndexHolder(lambda: index), embedder, container.bm25, SearchSettings(fusion=FUSION)
    )
    for mode in ("hybrid", "vector", "keyword"):
        found = service.search("tenant-1", "harbour vessel", mode, 10, Filters())  # type: ignore[arg-type]
        assert found.results, (engine, mode)
        assert {r.document_id for r in found.results} <= _ids(container, "tenant-1")
        assert found.results[0].text.startswith("The harbour master")
    index.close()


def _ids(container: Container, tenant: str) -> set[str]:
    return {e.aggregate_id for e in _envelopes(container) if e.tenant_id == tenant}


def test_an_index_built_with_another_model_fails_loudly(
    container: Container, tmp_path: Path
) -> None:
    EdgeSearchIndex(tmp_path / "old", IndexSpec("some-other-model", 768, "bm25")).close()
    with pytest.raises(IndexMismatchError, match="some-other-model"):
        EdgeSearchIndex(tmp_path / "old", container.index_spec)


def test_bm25_idf_is_computed_per_tenant(container: Container, tmp_path: Path) -> None:
    """Another tenant's documents must not change your keyword scores."""
    index = EdgeSearchIndex(tmp_path / "idf", container.index_spec)
    view = _search_view(container, index, "idf")
    envelopes = _envelopes(container)
    tenant_one = [e for e in envelopes if e.tenant_id == "tenant-1"]
    view.apply_batch(tenant_one)
    query = container.bm25.query("harbour")
    alone = index.query("tenant-1", dense=None, sparse=query, filters=Filters(), limit=5).sparse
    with container.parts.datastore.transaction(commit=True) as curs:
        view.set_position(curs, "documents", 0)
    view.apply_batch([e for e in envelopes if e.tenant_id == "tenant-2"])
    shared = index.query("tenant-1", dense=None, sparse=query, filters=Filters(), limit=5).sparse
    assert [(h.id, round(h.score, 5)) for h in alone] == [(h.id, round(h.score, 5)) for h in shared]
    payload = index.payloads([alone[0].id])[alone[0].id]
    index.close()
    assert payload["tenant_id"] == "tenant-1" and uuid.UUID(payload["document_id"])


def test_a_model_change_is_refused_at_start(container: Container) -> None:
    with container.parts.datastore.transaction(commit=True) as curs:
        curs.execute(
            "UPDATE search_index_meta SET model = 'older-model' WHERE index_name = 'search'"
        )
    try:
        container.check_index_spec()  # records the spec on first use...
        with container.parts.datastore.transaction(commit=True) as curs:
            curs.execute(
                "UPDATE search_index_meta SET model = 'older-model' WHERE index_name = 'search'"
            )
        with pytest.raises(IndexMismatchError, match="older-model"):
            container.check_index_spec()  # ...and refuses another one afterwards
    finally:
        with container.parts.datastore.transaction(commit=True) as curs:
            curs.execute(
                "UPDATE search_index_meta SET model = %s WHERE index_name = 'search'", (MODEL_NAME,)
            )

"""Searching the index: vector, BM25 or both, always within one tenant.

``SearchService`` queries the live index (through the ``IndexHolder`` the
search projection writes); ``SearchView`` is the projection's PostgreSQL side
(its positions, for read-your-writes).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from infra.embedding import Embedder
from infra.index_home import IndexHolder
from infra.search_index import Bm25Encoder, Filters, Fusion, Hit, fuse
from projections.base import ProjectionView
from projections.highlight import snippet

Mode = Literal["hybrid", "vector", "keyword"]


class SearchView(ProjectionView):
    """The search projection's tracking and document rows; queries go to ``SearchService``."""


# ------------------------------------------------------------------ queries


@dataclass(frozen=True)
class SearchSettings:
    fusion: Fusion
    max_k: int = 100


@dataclass(frozen=True)
class ResultChunk:
    document_id: str
    filename: str
    media_type: str
    chunk_index: int
    page_start: int | None
    page_end: int | None
    text: str
    snippet: str
    score: float
    ranks: dict[str, int | None]


@dataclass
class SearchResults:
    mode: str
    results: list[ResultChunk]
    timings_ms: dict[str, float] = field(default_factory=dict)


class SearchService:
    """Vector, keyword (BM25) and hybrid queries over the live index, always per tenant."""

    def __init__(
        self,
        index: IndexHolder,
        embedder: Embedder,
        encoder: Bm25Encoder,
        settings: SearchSettings,
    ) -> None:
        self._index = index
        self._embedder = embedder
        self._encoder = encoder
        self._settings = settings

    def search(
        self,
        tenant_id: str,
        query: str,
        mode: Mode,
        k: int,
        filters: Filters,
        *,
        found: Callable[[list[tuple[str, int]]], None] | None = None,
    ) -> SearchResults:
        """``found``: called with the results' (document id, chunk index), in order, once
        they are known and before their snippets are made (the search route starts
        recording the read then, so that its append overlaps the snippets)."""
        timings: dict[str, float] = {}
        started = time.perf_counter()
        dense = None
        if mode in ("vector", "hybrid"):
            dense = self._embedder.embed([query])[0].tolist()
            timings["embed"] = (time.perf_counter() - started) * 1000
        sparse = self._encoder.query(query) if mode in ("keyword", "hybrid") else None
        queried = time.perf_counter()
        fusion = self._settings.fusion
        # In hybrid mode each leg contributes its top `prefetch` (at least k) to the fusion.
        leg_limit = max(k, fusion.prefetch) if mode == "hybrid" else k
        legs = self._index.current.query(
            tenant_id, dense=dense, sparse=sparse, filters=filters, limit=leg_limit
        )
        fused = fuse(legs, fusion, k) if mode == "hybrid" else (legs.dense or legs.sparse)[:k]
        # Candidates come back without payloads; only the k that survive fusion
        # are fetched (a chunk's payload holds its text: ~1 KB each).
        payloads = self._index.current.payloads([hit.id for hit in fused])
        fused = [Hit(hit.id, hit.score, payloads.get(hit.id, {})) for hit in fused]
        timings["index"] = (time.perf_counter() - queried) * 1000
        # Belt and braces: the engine's filter already kept only this tenant.
        fused = [hit for hit in fused if hit.payload.get("tenant_id") == tenant_id]
        if found is not None:
            found([(str(h.payload["document_id"]), int(h.payload["chunk_index"])) for h in fused])
        dense_rank = _ranks(legs.dense)
        sparse_rank = _ranks(legs.sparse)
        query_terms = self._encoder.terms(query)
        results = [
            _result(
                hit,
                query_terms,
                self._encoder.terms,
                {
                    "vector": dense_rank.get(hit.id) if mode != "keyword" else None,
                    "keyword": sparse_rank.get(hit.id) if mode != "vector" else None,
                },
            )
            for hit in fused
        ]
        timings["total"] = (time.perf_counter() - started) * 1000
        return SearchResults(mode=mode, results=results, timings_ms=timings)


def _ranks(hits: Sequence[Hit]) -> dict[str, int]:
    return {hit.id: rank for rank, hit in enumerate(hits, start=1)}


def _result(
    hit: Hit, query_terms: frozenset[int], terms_of: Any, ranks: dict[str, int | None]
) -> ResultChunk:
    payload = hit.payload
    text = str(payload.get("text", ""))
    return ResultChunk(
        document_id=str(payload["document_id"]),
        filename=str(payload.get("filename", "")),
        media_type=str(payload.get("media_type", "")),
        chunk_index=int(payload["chunk_index"]),
        page_start=payload.get("page_start"),
        page_end=payload.get("page_end"),
        text=text,
        snippet=snippet(text, query_terms, terms_of),
        score=hit.score,
        ranks=ranks,
    )

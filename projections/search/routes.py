"""Search over HTTP: ``GET /v1/search`` (query string) and ``POST /v1/search`` (JSON with filters).

Modes: ``hybrid`` (vector and BM25 fused by weighted RRF), ``vector``,
``keyword`` (BM25) and ``exact`` (PostgreSQL full text with web-search syntax,
every match, paged). The tenant always comes from the key.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field, field_validator

from domain.access import Principal
from domain.activity import ReadKind
from domain.media import SUPPORTED_MEDIA_TYPES
from infra.search_index import Filters, point_id
from infra.web import ERROR_RESPONSES, ApiError, ErrorBody, Viewer
from projections.fulltext.view import FulltextView
from projections.http import Models, PendingRead, ReadLog, Reads
from projections.search.view import SearchService

router = APIRouter(prefix="/v1/search", tags=["search"])

Mode = Literal["hybrid", "vector", "keyword", "exact"]
MAX_OFFSET = 10_000


class SearchFilters(BaseModel):
    document_ids: list[UUID] = Field(default_factory=list, max_length=1000)
    media_types: list[str] = Field(default_factory=list, max_length=10)
    uploaded_after: datetime | None = None
    uploaded_before: datetime | None = None

    @field_validator("media_types")
    @classmethod
    def _known_types(cls, values: list[str]) -> list[str]:
        unknown = sorted(set(values) - set(SUPPORTED_MEDIA_TYPES))
        if unknown:
            raise ValueError(
                f"unknown media type(s) {unknown}; known: {list(SUPPORTED_MEDIA_TYPES)}"
            )
        return values


class SearchRequest(BaseModel):
    query: str = Field(description="What to look for.")
    mode: Mode = "hybrid"
    k: int = Field(10, ge=1, description="Results to return (at most search.max_k).")
    offset: int = Field(0, ge=0, le=MAX_OFFSET, description="Skip this many results (exact mode).")
    min_position: int | None = Field(
        None, ge=0, description="Wait until the index has this position."
    )
    filters: SearchFilters = Field(default_factory=SearchFilters)


class Ranks(BaseModel):
    vector: int | None = None
    keyword: int | None = None


class SearchHit(BaseModel):
    document_id: UUID
    filename: str
    media_type: str
    chunk_index: int
    page: int | None = Field(
        description="Page of the chunk's first character (None for text files)."
    )
    page_end: int | None
    text: str
    snippet: str = Field(description="HTML-escaped excerpt with matches in <mark> tags.")
    score: float = Field(description="Fused RRF score (hybrid), similarity, BM25 or ts_rank_cd.")
    ranks: Ranks = Field(description="Rank of this chunk in each leg that ran (1 = best).")


class SearchResponse(BaseModel):
    query: str
    mode: Mode
    k: int
    results: list[SearchHit]
    took_ms: float


_ERRORS = {
    **ERROR_RESPONSES,
    503: {"model": ErrorBody, "description": "The index did not reach min_position in time"},
}


def _run(
    request: Request, principal: Principal, body: SearchRequest, models: Models, reads: Reads
) -> SearchResponse:
    principal_tenant = principal.tenant_id
    settings = request.app.state.settings.search
    query = body.query.strip()
    if not query:
        raise ApiError(422, "empty_query", "The query is empty.")
    if len(query) > settings.max_query_chars:
        raise ApiError(
            422,
            "query_too_long",
            f"The query is {len(query)} characters; the limit is {settings.max_query_chars}.",
        )
    if "\x00" in query:
        raise ApiError(422, "invalid_query", "The query contains a NUL character.")
    if body.k > settings.max_k:
        raise ApiError(
            422, "k_too_large", f"k is {body.k}; at most {settings.max_k} results per request."
        )
    f = body.filters
    after = (
        f.uploaded_after.replace(tzinfo=f.uploaded_after.tzinfo or UTC)
        if f.uploaded_after
        else None
    )
    before = (
        f.uploaded_before.replace(tzinfo=f.uploaded_before.tzinfo or UTC)
        if f.uploaded_before
        else None
    )
    if after and before and after >= before:
        raise ApiError(
            422, "invalid_filter", "uploaded_after must be earlier than uploaded_before."
        )
    filters = Filters(
        document_ids=tuple(str(d) for d in f.document_ids),
        media_types=tuple(f.media_types),
        uploaded_after=after,
        uploaded_before=before,
    )
    started = time.perf_counter()
    if body.mode == "exact":
        models.wait("fulltext", "documents", body.min_position)
        fulltext: FulltextView = request.app.state.views["fulltext"]
        exact = fulltext.search(
            principal_tenant, query, filters=filters, limit=body.k, offset=body.offset
        )
        hits = [
            SearchHit(
                document_id=UUID(h.document_id),
                filename=h.filename,
                media_type=h.media_type,
                chunk_index=h.chunk_index,
                page=h.page_start,
                page_end=h.page_end,
                text=h.text,
                snippet=h.snippet,
                score=h.score,
                ranks=Ranks(),
            )
            for h in exact
        ]
    else:
        if body.offset:
            raise ApiError(422, "invalid_request", "offset is only supported in exact mode.")
        models.wait("search", "documents", body.min_position)
        service: SearchService = request.app.state.search
        pending: list[PendingRead] = []

        def shown(results: list[tuple[str, int]]) -> None:
            # Recorded while the snippets and the response are made (waited for below).
            pending.append(
                reads.start(
                    principal,
                    ReadKind.SEARCH,
                    query=query,
                    documents=[document_id for document_id, _ in results],
                    chunks=[point_id(d, chunk_index) for d, chunk_index in results],
                    mode=body.mode,
                )
            )

        found = service.search(principal_tenant, query, body.mode, body.k, filters, found=shown)
        hits = [
            SearchHit(
                document_id=UUID(r.document_id),
                filename=r.filename,
                media_type=r.media_type,
                chunk_index=r.chunk_index,
                page=r.page_start,
                page_end=r.page_end,
                text=r.text,
                snippet=r.snippet,
                score=r.score,
                ranks=Ranks(vector=r.ranks.get("vector"), keyword=r.ranks.get("keyword")),
            )
            for r in found.results
        ]
    if body.mode == "exact":
        reads.record(
            principal,
            ReadKind.SEARCH,
            query=query,
            documents=[str(hit.document_id) for hit in hits],
            chunks=[point_id(str(hit.document_id), hit.chunk_index) for hit in hits],
            mode=body.mode,
        )
    else:
        [recording] = pending
        recording.wait()  # durable before the response leaves, or a 503
    took = round((time.perf_counter() - started) * 1000, 2)
    return SearchResponse(query=query, mode=body.mode, k=body.k, results=hits, took_ms=took)


@router.get("", response_model=SearchResponse, responses=_ERRORS)
def search_get(
    request: Request,
    principal: Viewer,
    models: Models,
    reads: ReadLog,
    q: Annotated[str, Query(description="What to look for.")],
    mode: Mode = "hybrid",
    k: Annotated[int, Query(ge=1)] = 10,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    min_position: Annotated[int | None, Query(ge=0)] = None,
    document_id: Annotated[list[UUID] | None, Query(max_length=1000)] = None,
    media_type: Annotated[list[str] | None, Query(max_length=10)] = None,
    uploaded_after: datetime | None = None,
    uploaded_before: datetime | None = None,
) -> SearchResponse:
    """Search the tenant's documents; filters repeat (``document_id=…&document_id=…``)."""
    try:
        filters = SearchFilters(
            document_ids=document_id or [],
            media_types=media_type or [],
            uploaded_after=uploaded_after,
            uploaded_before=uploaded_before,
        )
    except ValueError as exc:
        raise ApiError(422, "invalid_filter", str(exc)) from exc
    body = SearchRequest(
        query=q, mode=mode, k=k, offset=offset, min_position=min_position, filters=filters
    )
    return _run(request, principal, body, models, reads)


@router.post("", response_model=SearchResponse, responses=_ERRORS)
def search_post(
    request: Request, principal: Viewer, models: Models, reads: ReadLog, body: SearchRequest
) -> SearchResponse:
    """Search with filters: document ids, media types, uploaded before/after."""
    return _run(request, principal, body, models, reads)

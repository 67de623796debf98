"""The full-text read model: every chunk's text in PostgreSQL, for exact search.

``mode=exact`` runs ``websearch_to_tsquery('english', …)`` over a generated
``tsvector`` with a GIN index: quoted phrases, ``or``, ``-term``; every match
is returned (paged), ranked by ``ts_rank_cd``, with ``ts_headline`` highlights.
This is what a reviewer uses to find every passage that mentions a name; the
ranking for hybrid search is the BM25 leg in the search index, not this.
Every query is scoped to one tenant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from psycopg.sql import SQL, Identifier

from infra.search_index import Filters
from projections.base import ProjectionView
from projections.fulltext.projection import CHUNKS
from projections.highlight import HEADLINE_OPTIONS, escape_headline


@dataclass(frozen=True)
class ExactHit:
    document_id: str
    filename: str
    media_type: str
    chunk_index: int
    page_start: int | None
    page_end: int | None
    text: str
    snippet: str
    score: float


class FulltextView(ProjectionView):
    """Exact search over the chunks ``FulltextProjection`` keeps."""

    # ---------------------------------------------------------------- queries

    def search(
        self, tenant_id: str, query: str, *, filters: Filters, limit: int, offset: int = 0
    ) -> list[ExactHit]:
        conditions = ["tenant_id = %(tenant)s", "tsv @@ q"]
        params: dict[str, Any] = {
            "tenant": tenant_id,
            "query": query,
            "limit": limit,
            "offset": offset,
            "headline": HEADLINE_OPTIONS,
        }
        if filters.document_ids:
            conditions.append("document_id = ANY(%(documents)s)")
            params["documents"] = [UUID(d) for d in filters.document_ids]
        if filters.media_types:
            conditions.append("media_type = ANY(%(types)s)")
            params["types"] = list(filters.media_types)
        if filters.uploaded_after:
            conditions.append("uploaded_at >= %(after)s")
            params["after"] = filters.uploaded_after
        if filters.uploaded_before:
            conditions.append("uploaded_at < %(before)s")
            params["before"] = filters.uploaded_before
        sql = SQL(
            "SELECT document_id, filename, media_type, chunk_index, page_start, page_end, text,"
            " ts_rank_cd(tsv, q) AS score,"
            " ts_headline('english', text, q, %(headline)s) AS headline"
            " FROM {table}, websearch_to_tsquery('english', %(query)s) AS q"
            " WHERE {conditions}"
            " ORDER BY score DESC, document_id, chunk_index LIMIT %(limit)s OFFSET %(offset)s"
        ).format(
            table=Identifier(self.projection.table(CHUNKS)),
            conditions=SQL(" AND ").join(SQL(c) for c in conditions),
        )
        with self.tenant_reads(tenant_id) as conn:
            rows = conn.execute(sql, params).fetchall()
        return [
            ExactHit(
                document_id=str(r["document_id"]),
                filename=r["filename"],
                media_type=r["media_type"],
                chunk_index=r["chunk_index"],
                page_start=r["page_start"],
                page_end=r["page_end"],
                text=r["text"],
                snippet=escape_headline(r["headline"]),
                score=float(r["score"]),
            )
            for r in rows
        ]

"""The full-text read model: every chunk's text in PostgreSQL, for exact search.

``mode=exact`` runs ``websearch_to_tsquery('english', …)`` over a generated
``tsvector`` with a GIN index: quoted phrases, ``or``, ``-term``; every match
is returned (paged), ranked by ``ts_rank_cd``, with ``ts_headline`` highlights.
This is what a reviewer uses to find every passage that mentions a name; the
ranking for hybrid search is the BM25 leg in the search index, not this.
Every query is scoped to one tenant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.postgres import PostgresDatastore
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from domain.content import decode_chunks
from infra.blobs import BatchBlobs, BlobStore
from infra.envelope import Envelope
from projections.base import (
    DocumentKey,
    OutOfOrderError,
    ProjectionView,
    document_metadata,
    handles,
    uploaded_metadata,
)
from projections.highlight import HEADLINE_OPTIONS, escape_headline
from projections.search_index import Filters


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
    name = "fulltext"
    contexts = ("documents",)

    def __init__(
        self,
        datastore: PostgresDatastore,
        blobs: BlobStore,
        *,
        chunks_table: str = "fulltext_chunks",
        documents_table: str = "fulltext_documents",
        name: str | None = None,
    ) -> None:
        if name is not None:
            self.name = name
        self.chunks_table = chunks_table
        self.documents_table = documents_table
        self._blobs = BatchBlobs(blobs)
        self._meta: dict[DocumentKey, dict[str, Any]] = {}
        self._rows: list[tuple[Any, ...]] = []
        self._insert = SQL(
            "INSERT INTO {} (tenant_id, document_id, filename, media_type, uploaded_at)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
        ).format(Identifier(documents_table))
        self._copy = SQL(
            "COPY {} (tenant_id, document_id, chunk_index, filename, media_type, uploaded_at,"
            " page_start, page_end, text) FROM STDIN"
        ).format(Identifier(chunks_table))
        super().__init__(datastore)

    def before_batch(self, curs: Cursor[DictRow], envelopes: Sequence[Envelope]) -> None:
        embedded = [e for e in envelopes if e.event_type == "Document.Embedded"]
        self._blobs.prefetch([(e.tenant_id, e.data["chunks_sha256"]) for e in embedded])
        self._meta = document_metadata(
            curs, self.documents_table, [(e.tenant_id, UUID(e.aggregate_id)) for e in embedded]
        )
        self._rows = []

    def after_batch(self, curs: Cursor[DictRow]) -> None:
        self.writes.flush(curs)
        self._copy_rows(curs)

    def _copy_rows(self, curs: Cursor[DictRow]) -> None:
        rows, self._rows = self._rows, []
        if rows:
            with curs.copy(self._copy) as copy:
                for row in rows:
                    copy.write_row(row)

    @handles("Document.Uploaded")
    def _uploaded(self, curs: Cursor[DictRow], envelope: Envelope) -> None:
        key, meta = uploaded_metadata(envelope)
        self._meta.setdefault(key, meta)
        self.writes.add(
            self._insert, (*key, meta["filename"], meta["media_type"], meta["uploaded_at"])
        )

    @handles("Document.Embedded")
    def _embedded(self, curs: Cursor[DictRow], envelope: Envelope) -> None:
        key = (envelope.tenant_id, UUID(envelope.aggregate_id))
        meta = self._meta.get(key)
        if meta is None:
            raise OutOfOrderError(f"fulltext: Embedded before Uploaded for {key[1]}")
        chunks = decode_chunks(self._blobs.get(envelope.tenant_id, envelope.data["chunks_sha256"]))
        self._rows.extend(
            (
                *key,
                chunk.chunk_index,
                meta["filename"],
                meta["media_type"],
                meta["uploaded_at"],
                chunk.page_start,
                chunk.page_end,
                chunk.text,
            )
            for chunk in chunks
        )

    @handles("Document.Deleted")
    def _deleted(self, curs: Cursor[DictRow], envelope: Envelope) -> None:
        # What the batch queued so far goes first, so the delete sees it.
        self.writes.flush(curs)
        self._copy_rows(curs)
        for table in (self.chunks_table, self.documents_table):
            curs.execute(
                SQL("DELETE FROM {} WHERE tenant_id = %s AND document_id = %s").format(
                    Identifier(table)
                ),
                (envelope.tenant_id, UUID(envelope.aggregate_id)),
            )

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
            table=Identifier(self.chunks_table),
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

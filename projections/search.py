"""The search read model: chunks in a Qdrant index, queried by vector, BM25 or both.

Handlers run inside the view's PostgreSQL transaction but write the index
first: the transaction that records the position commits only after the index
has acknowledged the write. Index writes are idempotent (deterministic point
ids, delete by filter), so an event applied again after a crash changes
nothing. ``Document.Uploaded`` keeps the metadata points need;
``Document.Embedded`` indexes the chunks from the blobs its event names (no
re-parsing, no re-embedding); ``Document.Deleted`` removes every point of the
document.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from eventsourcing.postgres import PostgresDatastore
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from domain.content import decode_chunks
from infra.blobs import BatchBlobs, BlobStore
from infra.embedding import Embedder, matrix_from_bytes
from infra.envelope import Envelope
from projections.base import (
    DocumentKey,
    OutOfOrderError,
    ProjectionView,
    document_metadata,
    handles,
    uploaded_metadata,
)
from projections.highlight import snippet
from projections.search_index import (
    Bm25Encoder,
    ChunkPoint,
    Filters,
    Fusion,
    Hit,
    IndexMismatchError,
    SearchIndex,
    fuse,
    point_id,
)

Mode = Literal["hybrid", "vector", "keyword"]


class IndexHolder:
    """The live index, opened on first use; a rebuild swaps in a new one in one step.

    Opening is deferred because an in-process index belongs to exactly one
    process (the engine locks its files): a CLI command that only needs the
    projection's PostgreSQL side must not try to open it.
    """

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


class SearchView(ProjectionView):
    name = "search"
    contexts = ("documents",)

    def __init__(
        self,
        datastore: PostgresDatastore,
        index: IndexHolder,
        blobs: BlobStore,
        encoder: Bm25Encoder,
        *,
        model: str,
        dimension: int,
        table: str = "search_documents",
        name: str | None = None,
    ) -> None:
        if name is not None:
            self.name = name  # a rebuild tracks under its own name until it is switched in
        self.table = table
        self.index = index
        self._blobs = BatchBlobs(blobs)
        self._pending: list[ChunkPoint] = []
        self._meta: dict[DocumentKey, dict[str, Any]] = {}
        self._encoder = encoder
        self._model = model
        self._dimension = dimension
        t = Identifier(table)
        self._insert = SQL(
            "INSERT INTO {} (tenant_id, document_id, filename, media_type, uploaded_at, status)"
            " VALUES (%s, %s, %s, %s, %s, 'uploaded')"
            " ON CONFLICT (tenant_id, document_id) DO NOTHING"
        ).format(t)
        self._indexed = SQL(
            "UPDATE {} SET status = 'indexed', chunk_count = %s"
            " WHERE tenant_id = %s AND document_id = %s"
        ).format(t)
        self._removed = SQL(
            "UPDATE {} SET status = 'deleted' WHERE tenant_id = %s AND document_id = %s"
        ).format(t)
        super().__init__(datastore)

    def before_batch(self, curs: Cursor[DictRow], envelopes: Sequence[Envelope]) -> None:
        self._pending = []
        embedded = [e for e in envelopes if e.event_type == "Document.Embedded"]
        self._blobs.prefetch(
            [
                (e.tenant_id, e.data[f])
                for e in embedded
                for f in ("chunks_sha256", "embeddings_sha256")
            ]
        )
        self._meta = document_metadata(
            curs, self.table, [(e.tenant_id, UUID(e.aggregate_id)) for e in embedded]
        )

    def after_batch(self, curs: Cursor[DictRow]) -> None:
        self._flush()

    def _flush(self) -> None:
        """Send buffered points to the index: a few large upserts rather than one per document."""
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), 512):
            self.index.current.upsert(pending[start : start + 512])

    @handles("Document.Uploaded")
    def _uploaded(self, curs: Cursor[DictRow], envelope: Envelope) -> None:
        key, meta = uploaded_metadata(envelope)
        self._meta.setdefault(key, meta)
        self.writes.add(
            self._insert, (*key, meta["filename"], meta["media_type"], meta["uploaded_at"])
        )

    @handles("Document.Embedded")
    def _embedded(self, curs: Cursor[DictRow], envelope: Envelope) -> None:
        data = envelope.data
        if (data["model"], data["dimension"]) != (self._model, self._dimension):
            raise IndexMismatchError(
                f"document {envelope.aggregate_id} was embedded with {data['model']} "
                f"({data['dimension']} dims); the index holds {self._model} ({self._dimension})"
            )
        key = (envelope.tenant_id, UUID(envelope.aggregate_id))
        meta = self._meta.get(key)
        if meta is None:
            raise OutOfOrderError(f"search: Embedded before Uploaded for {envelope.aggregate_id}")
        chunks = decode_chunks(self._blobs.get(envelope.tenant_id, data["chunks_sha256"]))
        matrix = matrix_from_bytes(self._blobs.get(envelope.tenant_id, data["embeddings_sha256"]))
        if len(chunks) != matrix.shape[0]:
            raise ValueError(f"{len(chunks)} chunks but {matrix.shape[0]} vectors")
        uploaded_at: datetime = meta["uploaded_at"]
        self._pending.extend(
            ChunkPoint(
                id=point_id(envelope.aggregate_id, chunk.chunk_index),
                dense=matrix[i].tolist(),
                sparse=self._encoder.document(chunk.text),
                payload={
                    "tenant_id": envelope.tenant_id,
                    "document_id": envelope.aggregate_id,
                    "chunk_index": chunk.chunk_index,
                    "page_start": chunk.page_start,
                    "page_end": chunk.page_end,
                    "text": chunk.text,
                    "filename": meta["filename"],
                    "media_type": meta["media_type"],
                    "uploaded_at": uploaded_at.isoformat(),
                },
            )
            for i, chunk in enumerate(chunks)
        )
        self.writes.add(self._indexed, (len(chunks), *key))

    @handles("Document.Deleted")
    def _deleted(self, curs: Cursor[DictRow], envelope: Envelope) -> None:
        self._flush()  # a delete must follow the upserts queued before it
        self.index.current.delete_document(envelope.tenant_id, envelope.aggregate_id)
        self.writes.add(self._removed, (envelope.tenant_id, UUID(envelope.aggregate_id)))


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
        self, tenant_id: str, query: str, mode: Mode, k: int, filters: Filters
    ) -> SearchResults:
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
            # Belt and braces: the engine's filter already kept only this tenant.
            if hit.payload.get("tenant_id") == tenant_id
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

"""What document events do to the search index: points per chunk, and document metadata.

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

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.sql import SQL, Identifier

from domain.content import decode_chunks
from domain.document import Document
from infra.blobs import BatchBlobs, BlobStore
from infra.crypto import ERASED, KeyErasedError, document_key
from infra.embedding import matrix_from_bytes
from infra.envelope import Envelope
from infra.index_home import IndexHolder, IndexHome, purge
from infra.search_index import Bm25Encoder, ChunkPoint, IndexMismatchError, IndexSpec, point_id
from projections.base import (
    DocumentKey,
    OutOfOrderError,
    Projection,
    confirm_erasure,
    document_metadata,
    handles,
    restored_metadata,
    restores_embedded,
    uploaded_metadata,
)
from projections.rows import Rows, postgres

TABLE = "search_documents"


class SearchProjection(Projection):
    name = "search"
    opens_sealed = True
    tables = {TABLE: ("tenant_id", "document_id")}

    def __init__(
        self,
        index: IndexHolder,
        blobs: BlobStore,
        encoder: Bm25Encoder,
        spec: IndexSpec,
        *,
        variant: str = "",
        home: IndexHome | None = None,
    ) -> None:
        super().__init__(variant=variant)
        self.index = index
        self.home = home
        self._blobs = BatchBlobs(blobs)
        self._pending: list[ChunkPoint] = []
        self._meta: dict[DocumentKey, dict[str, Any]] = {}
        self._encoder = encoder
        self._model = spec.model
        self._dimension = spec.dimension
        t = Identifier(self.table(TABLE))
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
        self._restored_row = SQL(
            "UPDATE {} SET status = 'uploaded' WHERE tenant_id = %s AND document_id = %s"
        ).format(t)
        self._erased_row = SQL(
            "UPDATE {} SET status = 'erased', filename = %s, chunk_count = NULL"
            " WHERE tenant_id = %s AND document_id = %s"
        ).format(t)
        self._erasures: list[Envelope] = []

    def before_batch(self, rows: Rows, envelopes: Sequence[Envelope]) -> None:
        self._pending = []
        self._erasures = []
        embedded = [e for e in envelopes if e.event_type == "Document.Embedded"]
        indexed = embedded + [e for e in envelopes if restores_embedded(e)]
        self._blobs.keys = self.keys
        self._blobs.prefetch(
            [
                (e.tenant_id, document_key(e.aggregate_id), e.data[f])
                for e in indexed
                for f in ("chunks_sha256", "embeddings_sha256")
            ]
        )
        self._meta = document_metadata(
            postgres(rows).cursor,
            self.table(TABLE),
            [(e.tenant_id, UUID(e.aggregate_id)) for e in embedded],
        )

    def _flush(self) -> None:
        """Send buffered points to the index: a few large upserts rather than one per document."""
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), 512):
            self.index.current.upsert(pending[start : start + 512])

    @handles(Document.Uploaded)
    def _uploaded(self, rows: Rows, envelope: Envelope) -> None:
        key, meta = uploaded_metadata(envelope)
        self._meta.setdefault(key, meta)
        postgres(rows).writes.add(
            self._insert, (*key, meta["filename"], meta["media_type"], meta["uploaded_at"])
        )

    @handles(Document.Embedded)
    def _embedded(self, rows: Rows, envelope: Envelope) -> None:
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
        self._index(rows, envelope, meta)

    @handles(Document.Restored)
    def _restored(self, rows: Rows, envelope: Envelope) -> None:
        """Out of the trash: its points again, from the blobs its event names."""
        key, meta = restored_metadata(envelope)
        self._meta[key] = meta
        postgres(rows).writes.add(self._insert, (*key, meta["filename"], meta["media_type"],
                                                 meta["uploaded_at"]))  # fmt: skip
        postgres(rows).writes.add(self._restored_row, (*key,))
        if restores_embedded(envelope):
            self._index(rows, envelope, meta)

    def _index(self, rows: Rows, envelope: Envelope, meta: dict[str, Any]) -> None:
        data = envelope.data
        key = (envelope.tenant_id, UUID(envelope.aggregate_id))
        blob_key = document_key(envelope.aggregate_id)
        try:
            chunks = decode_chunks(
                self._blobs.get(envelope.tenant_id, blob_key, data["chunks_sha256"])
            )
            matrix = matrix_from_bytes(
                self._blobs.get(envelope.tenant_id, blob_key, data["embeddings_sha256"])
            )
        except KeyErasedError:
            return  # a replay of an erased document: nothing of it is indexed again
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
        postgres(rows).writes.add(self._indexed, (len(chunks), *key))

    @handles(Document.Deleted)
    def _deleted(self, rows: Rows, envelope: Envelope) -> None:
        self._flush()  # a delete must follow the upserts queued before it
        self.index.current.delete_document(envelope.tenant_id, envelope.aggregate_id)
        postgres(rows).writes.add(self._removed, (envelope.tenant_id, UUID(envelope.aggregate_id)))

    @handles(Document.Erased)
    def _erased(self, rows: Rows, envelope: Envelope) -> None:
        """Points deleted at once; then, before the batch commits, the index is rewritten
        (``purge``) so that no segment or log of it keeps a copy of their payloads."""
        self._flush()
        self.index.current.delete_document(envelope.tenant_id, envelope.aggregate_id)
        postgres(rows).writes.add(
            self._erased_row, (ERASED, envelope.tenant_id, UUID(envelope.aggregate_id))
        )
        self._erasures.append(envelope)

    def after_batch(self, rows: Rows) -> None:
        self._flush()
        erasures, self._erasures = self._erasures, []
        if erasures:
            assert self.home is not None, "a search read model that erases needs its IndexHome"
            detail = purge(self.home, self.index, live=not self.variant)
            for envelope in erasures:
                confirm_erasure(rows, self.name, envelope, detail)

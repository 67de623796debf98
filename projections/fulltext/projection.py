"""What document events do to the full-text read model: every chunk's text, per document.

``Document.Uploaded`` keeps the metadata chunks carry (filename, type, upload
time); ``Document.Embedded`` copies the chunks from the blob its event names
(no re-parsing), with ``COPY``; ``Document.Deleted`` removes the document's rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from psycopg.sql import SQL, Identifier

from domain.content import decode_chunks
from domain.document import Document
from infra.blobs import BatchBlobs, BlobStore
from infra.crypto import KeyErasedError, document_key
from infra.envelope import Envelope
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
from projections.rows import PostgresRows, Rows, postgres

CHUNKS = "fulltext_chunks"
DOCUMENTS = "fulltext_documents"


class FulltextProjection(Projection):
    name = "fulltext"
    opens_sealed = True
    tables = {
        CHUNKS: ("tenant_id", "document_id", "chunk_index"),
        DOCUMENTS: ("tenant_id", "document_id"),
    }

    def __init__(self, blobs: BlobStore, *, variant: str = "") -> None:
        super().__init__(variant=variant)
        self._blobs = BatchBlobs(blobs)
        self._meta: dict[DocumentKey, dict[str, Any]] = {}
        self._rows: list[tuple[Any, ...]] = []
        self._insert = SQL(
            "INSERT INTO {} (tenant_id, document_id, filename, media_type, uploaded_at)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
        ).format(Identifier(self.table(DOCUMENTS)))
        self._copy = SQL(
            "COPY {} (tenant_id, document_id, chunk_index, filename, media_type, uploaded_at,"
            " page_start, page_end, text) FROM STDIN"
        ).format(Identifier(self.table(CHUNKS)))

    def before_batch(self, rows: Rows, envelopes: Sequence[Envelope]) -> None:
        embedded = [e for e in envelopes if e.event_type == "Document.Embedded"]
        indexed = embedded + [e for e in envelopes if restores_embedded(e)]
        self._blobs.keys = self.keys
        self._blobs.prefetch(
            [(e.tenant_id, document_key(e.aggregate_id), e.data["chunks_sha256"]) for e in indexed]
        )
        self._meta = document_metadata(
            postgres(rows).cursor,
            self.table(DOCUMENTS),
            [(e.tenant_id, UUID(e.aggregate_id)) for e in embedded],
        )
        self._rows = []

    def after_batch(self, rows: Rows) -> None:
        self._flush(postgres(rows))

    def _flush(self, rows: PostgresRows) -> None:
        """Send what the batch queued: metadata rows, then the chunks (one COPY)."""
        rows.writes.flush(rows.cursor)
        pending, self._rows = self._rows, []
        if pending:
            with rows.cursor.copy(self._copy) as copy:
                for row in pending:
                    copy.write_row(row)

    @handles(Document.Uploaded)
    def _uploaded(self, rows: Rows, envelope: Envelope) -> None:
        key, meta = uploaded_metadata(envelope)
        self._meta.setdefault(key, meta)
        postgres(rows).writes.add(
            self._insert, (*key, meta["filename"], meta["media_type"], meta["uploaded_at"])
        )

    @handles(Document.Embedded)
    def _embedded(self, rows: Rows, envelope: Envelope) -> None:
        key = (envelope.tenant_id, UUID(envelope.aggregate_id))
        meta = self._meta.get(key)
        if meta is None:
            raise OutOfOrderError(f"fulltext: Embedded before Uploaded for {key[1]}")
        self._index(key, meta, envelope.data["chunks_sha256"])

    @handles(Document.Restored)
    def _restored(self, rows: Rows, envelope: Envelope) -> None:
        """Out of the trash: its rows again, from the event and the chunks blob."""
        data = envelope.data
        key, meta = restored_metadata(envelope)
        self._meta[key] = meta
        postgres(rows).writes.add(
            self._insert, (*key, meta["filename"], meta["media_type"], meta["uploaded_at"])
        )
        if restores_embedded(envelope):
            self._index(key, meta, data["chunks_sha256"])

    def _index(self, key: DocumentKey, meta: dict[str, Any], chunks_sha256: str) -> None:
        try:
            raw = self._blobs.get(key[0], document_key(key[1]), chunks_sha256)
        except KeyErasedError:
            return  # a replay of an erased document: its text is gone, and stays gone
        chunks = decode_chunks(raw)
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

    @handles(Document.Deleted)
    def _deleted(self, rows: Rows, envelope: Envelope) -> None:
        self._drop(rows, envelope)

    @handles(Document.Erased)
    def _erased(self, rows: Rows, envelope: Envelope) -> None:
        chunks, _ = self._drop(rows, envelope)
        confirm_erasure(rows, self.name, envelope, {"chunks_deleted": chunks})

    def _drop(self, rows: Rows, envelope: Envelope) -> tuple[int, int]:
        self._meta.pop((envelope.tenant_id, UUID(envelope.aggregate_id)), None)
        self._flush(postgres(rows))  # what the batch queued so far goes first
        key = {"tenant_id": envelope.tenant_id, "document_id": UUID(envelope.aggregate_id)}
        return rows.delete(CHUNKS, key), rows.delete(DOCUMENTS, key)

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
from infra.envelope import Envelope
from projections.base import (
    DocumentKey,
    OutOfOrderError,
    Projection,
    document_metadata,
    handles,
    uploaded_metadata,
)
from projections.rows import PostgresRows, Rows, postgres

CHUNKS = "fulltext_chunks"
DOCUMENTS = "fulltext_documents"


class FulltextProjection(Projection):
    name = "fulltext"
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
        self._blobs.prefetch([(e.tenant_id, e.data["chunks_sha256"]) for e in embedded])
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

    @handles(Document.Deleted)
    def _deleted(self, rows: Rows, envelope: Envelope) -> None:
        self._flush(postgres(rows))  # what the batch queued so far goes first
        for table in (CHUNKS, DOCUMENTS):
            rows.delete(
                table, {"tenant_id": envelope.tenant_id, "document_id": UUID(envelope.aggregate_id)}
            )

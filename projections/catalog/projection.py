"""What document events do to the catalog: one row per document, its status and counts,
and every version of that row (the catalog as it stood at any time).

Each handler checks the aggregate version it expects, so an event applied out
of order fails loudly instead of corrupting a row.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from domain.document import Document
from infra.crypto import ERASED
from infra.envelope import Envelope
from projections.base import Projection, confirm_erasure, handles
from projections.rows import Rows

TABLE = "catalog_documents"
VERSIONS = "catalog_versions"


class CatalogProjection(Projection):
    name = "catalog"
    opens_sealed = True
    tables = {
        TABLE: ("tenant_id", "document_id"),
        VERSIONS: ("tenant_id", "document_id", "version"),
    }

    def apply(self, rows: Rows, envelope: Envelope) -> None:
        """Apply the event to the document's row, then keep the row as it now stands."""
        if envelope.event_type not in self._handlers:
            return
        super().apply(rows, envelope)
        key = {"tenant_id": envelope.tenant_id, "document_id": UUID(envelope.aggregate_id)}
        for row in rows.select(TABLE, key):
            rows.insert(VERSIONS, row)

    def _update(self, rows: Rows, envelope: Envelope, values: dict[str, Any]) -> None:
        key = {"tenant_id": envelope.tenant_id, "document_id": UUID(envelope.aggregate_id)}
        self.advance(rows, TABLE, key, envelope, values)

    @handles(Document.Uploaded)
    def _uploaded(self, rows: Rows, envelope: Envelope) -> None:
        data = envelope.data
        rows.insert(
            TABLE,
            {
                "tenant_id": envelope.tenant_id,
                "document_id": UUID(envelope.aggregate_id),
                "filename": data["filename"],
                "media_type": data["media_type"],
                "size_bytes": data["size_bytes"],
                "content_sha256": data["content_sha256"],
                "status": "uploaded",
                "warnings": [],
                "legal_hold": False,
                "uploaded_by": envelope.actor,
                "uploaded_at": envelope.occurred_at,
                "updated_at": envelope.occurred_at,
                "version": envelope.aggregate_version,
                "position": envelope.position,
            },
        )

    @handles(Document.Parsed)
    def _parsed(self, rows: Rows, envelope: Envelope) -> None:
        data = envelope.data
        self._update(
            rows,
            envelope,
            {
                "status": "parsed",
                "page_count": data["page_count"],
                "char_count": data["char_count"],
                "warnings": list(data["warnings"]),
            },
        )

    @handles(Document.Chunked)
    def _chunked(self, rows: Rows, envelope: Envelope) -> None:
        self._update(
            rows, envelope, {"status": "chunked", "chunk_count": envelope.data["chunk_count"]}
        )

    @handles(Document.Embedded)
    def _embedded(self, rows: Rows, envelope: Envelope) -> None:
        self._update(rows, envelope, {"status": "embedded"})

    @handles(Document.Failed)
    def _failed(self, rows: Rows, envelope: Envelope) -> None:
        data = envelope.data
        self._update(
            rows,
            envelope,
            {
                "status": "failed",
                "failure_stage": data["stage"],
                "failure_code": data["code"],
                "failure_reason": data["reason"],
            },
        )

    @handles(Document.Deleted)
    def _deleted(self, rows: Rows, envelope: Envelope) -> None:
        self._update(rows, envelope, {"status": "deleted", "deleted_at": envelope.occurred_at})

    @handles(Document.Restored)
    def _restored(self, rows: Rows, envelope: Envelope) -> None:
        self._update(rows, envelope, {"status": envelope.data["status"], "deleted_at": None})

    @handles(Document.Retried)
    def _retried(self, rows: Rows, envelope: Envelope) -> None:
        self._update(
            rows,
            envelope,
            {
                "status": envelope.data["status"],
                "failure_stage": None,
                "failure_code": None,
                "failure_reason": None,
            },
        )

    @handles(Document.Held)
    def _held(self, rows: Rows, envelope: Envelope) -> None:
        self._update(rows, envelope, {"legal_hold": True})

    @handles(Document.Released)
    def _released(self, rows: Rows, envelope: Envelope) -> None:
        self._update(rows, envelope, {"legal_hold": False})

    @handles(Document.Erased)
    def _erased(self, rows: Rows, envelope: Envelope) -> None:
        """The row stays (that a document was here, its size and digest, who uploaded it);
        its file name, in the row and in every earlier version of it, does not."""
        key = {"tenant_id": envelope.tenant_id, "document_id": UUID(envelope.aggregate_id)}
        versions = rows.update(VERSIONS, key, {"filename": ERASED})
        self._update(
            rows,
            envelope,
            {
                "status": "erased",
                "filename": ERASED,
                "deleted_at": envelope.occurred_at,
                "failure_reason": None,
                "warnings": [],
            },
        )
        confirm_erasure(
            rows,
            self.name,
            envelope,
            {
                "erased_by": envelope.actor,
                "erased_at": envelope.timestamp,
                "cause": envelope.data["cause"],
                "file_name_dropped_from_versions": versions + 1,
            },
        )

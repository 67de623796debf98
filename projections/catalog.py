"""The document catalog: status, counts and sizes per document, per tenant.

Tables: ``catalog_documents`` (migrations/0002_catalog.sql) and the library's
``catalog_tracking``. Each handler checks the aggregate version it expects, so
an event applied out of order fails loudly instead of corrupting a row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from infra.envelope import Envelope
from projections.base import (
    InvalidCursorError,
    ProjectionView,
    handles,
)

__all__ = ["CatalogEntry", "CatalogPage", "CatalogView", "InvalidCursorError"]


@dataclass(frozen=True)
class CatalogEntry:
    document_id: UUID
    tenant_id: str
    filename: str
    media_type: str
    size_bytes: int
    content_sha256: str
    status: str
    page_count: int | None
    char_count: int | None
    chunk_count: int | None
    warnings: list[str]
    failure_stage: str | None
    failure_code: str | None
    failure_reason: str | None
    uploaded_by: str
    uploaded_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
    version: int
    position: int

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> CatalogEntry:
        return cls(**{k: row[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class CatalogPage:
    entries: list[CatalogEntry]
    next_cursor: str | None


_SELECT = "SELECT * FROM catalog_documents"


class CatalogView(ProjectionView):
    name = "catalog"
    contexts = ("documents",)

    # ---------------------------------------------------------------- handlers

    def _update(
        self, curs: Cursor[DictRow], envelope: Envelope, assignments: str, params: tuple[Any, ...]
    ) -> None:
        self.advance_row(curs, "catalog_documents", "document_id", envelope, assignments, params)

    @handles("Document.Uploaded")
    def _uploaded(self, curs: Cursor[DictRow], envelope: Envelope) -> None:
        data = envelope.data
        curs.execute(
            "INSERT INTO catalog_documents (tenant_id, document_id, filename, media_type,"
            " size_bytes, content_sha256, status, uploaded_by, uploaded_at, updated_at,"
            " version, position) VALUES (%s, %s, %s, %s, %s, %s, 'uploaded', %s, %s, %s, %s, %s)",
            (
                envelope.tenant_id,
                UUID(envelope.aggregate_id),
                data["filename"],
                data["media_type"],
                data["size_bytes"],
                data["content_sha256"],
                envelope.actor,
                envelope.occurred_at,
                envelope.occurred_at,
                envelope.aggregate_version,
                envelope.position,
            ),
        )

    @handles("Document.Parsed")
    def _parsed(self, curs: Cursor[DictRow], envelope: Envelope) -> None:
        data = envelope.data
        self._update(
            curs,
            envelope,
            "status = 'parsed', page_count = %s, char_count = %s, warnings = %s",
            (data["page_count"], data["char_count"], Jsonb(data["warnings"])),
        )

    @handles("Document.Chunked")
    def _chunked(self, curs: Cursor[DictRow], envelope: Envelope) -> None:
        self._update(
            curs, envelope, "status = 'chunked', chunk_count = %s", (envelope.data["chunk_count"],)
        )

    @handles("Document.Embedded")
    def _embedded(self, curs: Cursor[DictRow], envelope: Envelope) -> None:
        self._update(curs, envelope, "status = 'embedded'", ())

    @handles("Document.Failed")
    def _failed(self, curs: Cursor[DictRow], envelope: Envelope) -> None:
        data = envelope.data
        self._update(
            curs,
            envelope,
            "status = 'failed', failure_stage = %s, failure_code = %s, failure_reason = %s",
            (data["stage"], data["code"], data["reason"]),
        )

    @handles("Document.Deleted")
    def _deleted(self, curs: Cursor[DictRow], envelope: Envelope) -> None:
        self._update(curs, envelope, "status = 'deleted', deleted_at = %s", (envelope.occurred_at,))

    # ----------------------------------------------------------------- queries

    def get(self, tenant_id: str, document_id: UUID) -> CatalogEntry | None:
        with self.tenant_reads(tenant_id) as conn:
            row = conn.execute(
                _SELECT + " WHERE tenant_id = %s AND document_id = %s", (tenant_id, document_id)
            ).fetchone()
        return CatalogEntry.from_row(row) if row else None

    def page(
        self,
        tenant_id: str,
        *,
        limit: int,
        cursor: str | None = None,
        status: str | None = None,
        include_deleted: bool = False,
    ) -> CatalogPage:
        where: tuple[str, ...] = ()
        if status is not None:
            where = ("status = %s",)
        elif not include_deleted:
            where = ("status <> 'deleted'",)
        rows, next_cursor = self.newest_first(
            tenant_id,
            "catalog_documents",
            ("uploaded_at", "document_id"),
            limit=limit,
            cursor=cursor,
            where=where,
            params=() if status is None else (status,),
        )
        entries = [CatalogEntry.from_row(r) for r in rows]
        return CatalogPage(entries, next_cursor)

    def counts(self, tenant_id: str | None = None) -> dict[str, int]:
        """Documents per status (all tenants when ``tenant_id`` is None)."""
        query = "SELECT status, count(*) AS n FROM catalog_documents"
        if tenant_id is not None:
            with self.tenant_reads(tenant_id) as conn:
                rows = conn.execute(
                    query + " WHERE tenant_id = %s GROUP BY status", (tenant_id,)
                ).fetchall()
        else:
            with self.datastore.get_connection() as conn:
                rows = conn.execute(query + " GROUP BY status").fetchall()
        return {row["status"]: int(row["n"]) for row in rows}

"""Reading the document catalog: one document, or a tenant's newest first, or counts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from projections.base import InvalidCursorError, ProjectionView

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
    """The catalog's queries (rows written by ``CatalogProjection``)."""

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

"""Reading the document catalog: one document, or a tenant's newest first, or counts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from psycopg.sql import SQL, Composable, Identifier

from projections.base import (
    InvalidCursorError,
    ProjectionView,
    decode_cursor,
    encode_cursor,
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
# Each document's newest version written by a time: the catalog as it stood then.
_AS_OF = (
    "SELECT DISTINCT ON (document_id) * FROM catalog_versions"
    " WHERE tenant_id = %s AND updated_at <= %s ORDER BY document_id, version DESC"
)


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

    def get_as_of(self, tenant_id: str, document_id: UUID, as_of: datetime) -> CatalogEntry | None:
        """One document as it stood at ``as_of`` (None: not uploaded by then)."""
        with self.tenant_reads(tenant_id) as conn:
            row = conn.execute(
                "SELECT * FROM catalog_versions WHERE tenant_id = %s AND document_id = %s"
                " AND updated_at <= %s ORDER BY version DESC LIMIT 1",
                (tenant_id, document_id, as_of),
            ).fetchone()
        return CatalogEntry.from_row(row) if row else None

    def page_as_of(
        self,
        tenant_id: str,
        as_of: datetime,
        *,
        limit: int,
        cursor: str | None = None,
        status: str | None = None,
        include_deleted: bool = False,
    ) -> CatalogPage:
        """A page of the catalog as it stood at ``as_of``: each document's newest version
        written by then (documents uploaded later are absent; ones deleted later are not)."""
        conditions: list[Composable] = []
        params: list[Any] = [tenant_id, as_of]
        if status is not None:
            conditions.append(SQL("status = %s"))
            params.append(status)
        elif not include_deleted:
            conditions.append(SQL("status <> 'deleted'"))
        if cursor is not None:
            conditions.append(SQL("(uploaded_at, document_id) < (%s, %s)"))
            params.extend(decode_cursor(cursor))
        params.append(limit + 1)
        query = SQL(
            "SELECT * FROM ({}) v WHERE {} ORDER BY uploaded_at DESC, document_id DESC LIMIT %s"
        ).format(SQL(_AS_OF), SQL(" AND ").join(conditions or [SQL("TRUE")]))
        with self.tenant_reads(tenant_id) as conn:
            rows = conn.execute(query, params).fetchall()
        last = rows[limit - 1] if len(rows) > limit else None
        next_cursor = encode_cursor(last["uploaded_at"], last["document_id"]) if last else None
        return CatalogPage([CatalogEntry.from_row(r) for r in rows[:limit]], next_cursor)

    def original(self, tenant_id: str, sha256: str) -> bytes | None:
        """The uploaded file's bytes, from the blob store (None: not there)."""
        with self.tenant_reads(tenant_id) as conn:
            row = conn.execute(
                "SELECT content FROM blobs WHERE tenant_id = %s AND sha256 = %s",
                (tenant_id, sha256),
            ).fetchone()
        return None if row is None else bytes(row["content"])

    def quota_use(self, tenant_id: str, metric: str) -> tuple[Decimal, int]:
        """Documents the tenant keeps (not deleted), or their bytes, and the documents
        position the figure is at: both read in one statement."""
        figure = "count(*)" if metric == "documents" else "coalesce(sum(size_bytes), 0)"
        query = SQL(
            "SELECT (SELECT notification_id FROM {tracking}"  # noqa: S608 - constants
            "  WHERE application_name = 'documents') AS through,"
            f" (SELECT {figure} FROM {{documents}} WHERE tenant_id = %s"
            "  AND status <> 'deleted') AS used"
        ).format(
            tracking=Identifier(self.tracking_table_name),
            documents=Identifier(self.projection.table("catalog_documents")),
        )
        with self.datastore.get_connection() as conn:
            row = conn.execute(query, (tenant_id,)).fetchone()
        assert row is not None
        return Decimal(row["used"]), int(row["through"] or 0)

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

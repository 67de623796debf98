"""Reading the document catalog: one document, or a tenant's newest first, or counts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from psycopg.sql import SQL, Composable, Identifier

from infra.crypto import Opener, document_key
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
    legal_hold: bool = False

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> CatalogEntry:
        return cls(**{k: row[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class CatalogPage:
    entries: list[CatalogEntry]
    next_cursor: str | None


_SELECT = "SELECT * FROM catalog_documents"
# A document in one of these is still on its way through the stages.
IN_PROGRESS = ("uploaded", "parsed", "chunked")
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

    def ahead_of(self, tenant_id: str, entry: CatalogEntry) -> int | None:
        """How many of the tenant's documents uploaded before this one are still being
        processed (None once it is final: embedded, failed, deleted or erased)."""
        if entry.status not in IN_PROGRESS:
            return None
        with self.tenant_reads(tenant_id) as conn:
            row = conn.execute(
                # The statuses written out: the partial index catalog_in_progress matches.
                "SELECT count(*) AS n FROM catalog_documents WHERE tenant_id = %s"
                " AND status IN ('uploaded', 'parsed', 'chunked')"
                " AND (uploaded_at, document_id) < (%s, %s)",
                (tenant_id, entry.uploaded_at, entry.document_id),
            ).fetchone()
        assert row is not None
        return int(row["n"])

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
            where = ("status NOT IN ('deleted', 'erased')",)
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
            conditions.append(SQL("status NOT IN ('deleted', 'erased')"))
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

    def original(self, tenant_id: str, document_id: UUID, sha256: str) -> bytes | None:
        """The uploaded file's bytes, from the blob store, opened with the document's key
        (None: not there, or its key is gone: the document was erased)."""
        key_id = document_key(document_id)
        with self.tenant_reads(tenant_id) as conn:
            row = conn.execute(
                "SELECT key_id, content FROM blobs WHERE tenant_id = %s AND sha256 = %s"
                " AND key_id IN (%s, '') ORDER BY key_id DESC LIMIT 1",
                (tenant_id, sha256, key_id),
            ).fetchone()
        if row is None:
            return None
        if not row["key_id"]:
            return bytes(row["content"])  # stored before data keys
        key = Opener(self.projection.keys).key(key_id)
        return None if key is None else key.open(bytes(row["content"]))

    def erasure(self, tenant_id: str, document_id: UUID) -> dict[str, Any] | None:
        """What an erasure of the document did, as far as it has gone (None: not erased).

        From the owner's tables (the reader role sees none of them): the keys the
        erasure destroyed, and each read model's confirmation (``confirm_erasure``).
        """
        subject = document_key(document_id)
        with self.datastore.get_connection() as conn:
            confirmations = conn.execute(
                "SELECT read_model, position, detail, confirmed_at FROM erasure_confirmations"
                " WHERE tenant_id = %s AND subject = %s ORDER BY read_model",
                (tenant_id, subject),
            ).fetchall()
            keys = conn.execute(
                "SELECT key_id, erased_at FROM erased_keys WHERE tenant_id = %s AND cause = %s"
                " ORDER BY key_id",
                (tenant_id, subject),
            ).fetchall()
            remaining = conn.execute(
                "SELECT (SELECT count(*) FROM data_keys WHERE key_id = %s) AS keys,"
                " (SELECT count(*) FROM blobs WHERE tenant_id = %s AND key_id = %s) AS blobs",
                (subject, tenant_id, subject),
            ).fetchone()
        catalog = next((c for c in confirmations if c["read_model"] == self.projection.name), None)
        if catalog is None and not keys:
            return None
        detail = dict(catalog["detail"]) if catalog is not None else {}
        assert remaining is not None
        return {
            "tenant_id": tenant_id,
            "document_id": str(document_id),
            "erased_at": detail.get("erased_at"),
            "erased_by": detail.get("erased_by"),
            "cause": detail.get("cause"),
            "position": catalog["position"] if catalog is not None else None,
            "keys_destroyed": [k["key_id"] for k in keys],
            "key_still_stored": bool(remaining["keys"]),
            "blobs_still_stored": int(remaining["blobs"]),
            "read_models": [
                {
                    "name": c["read_model"],
                    "position": int(c["position"]),
                    "confirmed_at": c["confirmed_at"].isoformat(),
                    "detail": c["detail"],
                }
                for c in confirmations
            ],
        }

    def quota_use(self, tenant_id: str, metric: str) -> tuple[Decimal, int]:
        """Documents the tenant keeps (not deleted), or their bytes, and the documents
        position the figure is at: both read in one statement."""
        figure = "count(*)" if metric == "documents" else "coalesce(sum(size_bytes), 0)"
        query = SQL(
            "SELECT (SELECT notification_id FROM {tracking}"  # noqa: S608 - constants
            "  WHERE application_name = 'documents') AS through,"
            f" (SELECT {figure} FROM {{documents}} WHERE tenant_id = %s"
            "  AND status NOT IN ('deleted', 'erased')) AS used"
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

"""Reading the key list: one key, or a tenant's keys newest first (never a secret)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from projections.base import ProjectionView


@dataclass(frozen=True)
class KeyEntry:
    key_id: UUID
    tenant_id: str
    name: str
    role: str
    issued_by: str
    issued_at: datetime
    expires_at: datetime | None
    revoked_by: str | None
    revoked_at: datetime | None
    position: int

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> KeyEntry:
        return cls(**{k: row[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class KeyPage:
    entries: list[KeyEntry]
    next_cursor: str | None


class KeysView(ProjectionView):
    """The key list's queries (rows written by ``KeysProjection``)."""

    # ----------------------------------------------------------------- queries

    def get(self, tenant_id: str, key_id: UUID) -> KeyEntry | None:
        with self.tenant_reads(tenant_id) as conn:
            row = conn.execute(
                "SELECT * FROM api_keys WHERE tenant_id = %s AND key_id = %s", (tenant_id, key_id)
            ).fetchone()
        return KeyEntry.from_row(row) if row else None

    def page(
        self,
        tenant_id: str,
        *,
        limit: int,
        cursor: str | None = None,
        include_revoked: bool = True,
    ) -> KeyPage:
        rows, next_cursor = self.newest_first(
            tenant_id,
            "api_keys",
            ("issued_at", "key_id"),
            limit=limit,
            cursor=cursor,
            where=() if include_revoked else ("revoked_at IS NULL",),
        )
        entries = [KeyEntry.from_row(r) for r in rows]
        return KeyPage(entries, next_cursor)

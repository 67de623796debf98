"""API keys as an admin lists them: name, role, who issued them, expiry, revocation.

Table ``api_keys`` (migrations/0004_isolation.sql) and the library's
``keys_tracking``. The secret's hash is not copied here: authentication reads
the event-sourced key itself, so this read model only serves listings.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import Cursor
from psycopg.rows import DictRow

from infra.envelope import Envelope
from projections.base import (
    OutOfOrderError,
    ProjectionView,
    handles,
)


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
    name = "keys"
    contexts = ("access",)

    @handles("ApiKey.Issued")
    def _issued(self, curs: Cursor[DictRow], envelope: Envelope) -> None:
        data = envelope.data
        expires_at = data.get("expires_at")
        curs.execute(
            "INSERT INTO api_keys (tenant_id, key_id, name, role, issued_by, issued_at,"
            " expires_at, position) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (
                envelope.tenant_id,
                UUID(envelope.aggregate_id),
                data["name"],
                data["role"],
                envelope.actor,
                envelope.occurred_at,
                datetime.fromisoformat(expires_at) if expires_at else None,
                envelope.position,
            ),
        )

    @handles("ApiKey.Revoked")
    def _revoked(self, curs: Cursor[DictRow], envelope: Envelope) -> None:
        curs.execute(
            "UPDATE api_keys SET revoked_by = %s, revoked_at = %s, position = %s"
            " WHERE tenant_id = %s AND key_id = %s AND revoked_at IS NULL",
            (
                envelope.actor,
                envelope.occurred_at,
                envelope.position,
                envelope.tenant_id,
                UUID(envelope.aggregate_id),
            ),
        )
        if curs.rowcount != 1:
            raise OutOfOrderError(
                f"keys: revoke of {envelope.aggregate_id} without an issued, unrevoked row"
            )

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

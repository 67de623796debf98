"""Reading the key and user lists: one, or a tenant's newest first (never a secret)."""

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


@dataclass(frozen=True)
class UserEntry:
    user_id: UUID
    tenant_id: str
    email: str
    role: str
    status: str
    invited_by: str
    invited_at: datetime
    link_expires_at: datetime | None
    password_set_at: datetime | None
    disabled_at: datetime | None
    last_sign_in_at: datetime | None
    sign_ins: int
    position: int

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> UserEntry:
        return cls(**{k: row[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class UserPage:
    entries: list[UserEntry]
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

    def last_used(self, tenant_id: str, actors: list[str]) -> dict[str, datetime]:
        """When each actor (``key:<id>``) last did anything the audit trail recorded: a
        command, a recorded read or a refusal (as far as the audit projector has come)."""
        if not actors:
            return {}
        with self.tenant_reads(tenant_id) as conn:
            rows = conn.execute(
                "SELECT actor, max(occurred_at) AS at FROM audit_events"
                " WHERE tenant_id = %s AND actor = ANY(%s) GROUP BY actor",
                (tenant_id, actors),
            ).fetchall()
        return {row["actor"]: row["at"] for row in rows}

    # ------------------------------------------------------------------ people

    def get_user(self, tenant_id: str, user_id: UUID) -> UserEntry | None:
        with self.tenant_reads(tenant_id) as conn:
            row = conn.execute(
                "SELECT * FROM users WHERE tenant_id = %s AND user_id = %s", (tenant_id, user_id)
            ).fetchone()
        return UserEntry.from_row(row) if row else None

    def users(
        self, tenant_id: str, *, limit: int, cursor: str | None = None, status: str | None = None
    ) -> UserPage:
        rows, next_cursor = self.newest_first(
            tenant_id,
            "users",
            ("invited_at", "user_id"),
            limit=limit,
            cursor=cursor,
            where=() if status is None else ("status = %s",),
            params=() if status is None else (status,),
        )
        return UserPage([UserEntry.from_row(r) for r in rows], next_cursor)

"""Reading the audit trail: a tenant's entries newest first, filtered, keyset-paged."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from infra.crypto import Opener
from projections.base import ProjectionView


@dataclass(frozen=True)
class AuditEntry:
    entry_id: UUID
    tenant_id: str
    context: str
    position: int
    occurred_at: datetime
    actor: str
    actor_role: str | None  # the role the actor's key was issued with (None: not a key)
    action: str
    resource_type: str
    resource_id: UUID
    resource_version: int
    request_id: str | None
    client_address: str | None
    user_agent: str | None
    changes: dict[str, Any]
    chain_index: int | None
    previous_hash: str | None
    entry_hash: str | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> AuditEntry:
        return cls(**{k: row[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class AuditPage:
    entries: list[AuditEntry]
    next_cursor: str | None


@dataclass(frozen=True)
class AuditFilter:
    actor: str | None = None
    action: str | None = None  # an event type; ``*`` matches any run of characters
    resource_type: str | None = None
    resource_id: UUID | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    request_id: str | None = None


def like_pattern(action: str) -> str:
    """``Document.*`` as a LIKE pattern (``%`` and ``_`` taken literally)."""
    escaped = action.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def _conditions(match: AuditFilter) -> tuple[list[str], list[Any]]:
    """SQL conditions (constant text with %s) and their parameters for a filter."""
    where: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("actor", match.actor),
        ("resource_type", match.resource_type),
        ("resource_id", match.resource_id),
        ("request_id", match.request_id),
    ):
        if value is not None:
            where.append(f"{column} = %s")
            params.append(value)
    if match.action is not None:
        where.append("action LIKE %s ESCAPE '\\'")
        params.append(like_pattern(match.action))
    if match.since is not None:
        where.append("occurred_at >= %s")
        params.append(match.since)
    if match.until is not None:
        where.append("occurred_at < %s")
        params.append(match.until)
    return where, params


class AuditView(ProjectionView):
    """The audit trail's queries (rows written by ``AuditProjection``)."""

    def page(
        self, tenant_id: str, match: AuditFilter, *, limit: int, cursor: str | None = None
    ) -> AuditPage:
        where, params = _conditions(match)
        rows, next_cursor = self.newest_first(
            tenant_id,
            "audit_events",
            ("occurred_at", "entry_id"),
            limit=limit,
            cursor=cursor,
            where=where,
            params=params,
        )
        roles = self._roles(tenant_id, {row["actor"] for row in rows})
        entries = [AuditEntry.from_row({**r, "actor_role": roles.get(r["actor"])}) for r in rows]
        return AuditPage(entries, next_cursor)

    def stream(self, tenant_id: str, match: AuditFilter) -> Iterator[AuditEntry]:
        """Every matching entry, oldest first, read through a server-side cursor: an export
        of any size holds one batch of rows in memory at a time."""
        where, params = _conditions(match)
        conditions = " AND ".join(["e.tenant_id = %s", *(f"e.{c}" for c in where)])
        query = (
            "SELECT e.*, a.role AS actor_role FROM audit_events e"  # noqa: S608 - constant text
            " LEFT JOIN audit_actors a ON a.tenant_id = e.tenant_id AND a.actor = e.actor"
            f" WHERE {conditions} ORDER BY e.occurred_at, e.context, e.position"
        )
        with self.tenant_reads(tenant_id) as conn, conn.cursor(name="audit_export") as cursor:
            cursor.itersize = 1000
            cursor.execute(query, [tenant_id, *params])
            for row in cursor:
                yield AuditEntry.from_row(row)

    def query_text(self, tenant_id: str, sha256: str) -> str | None:
        """A query's text, if a recorded read of this tenant carries its digest."""
        with self.tenant_reads(tenant_id) as conn:
            rows = conn.execute(
                "SELECT b.key_id, b.content FROM blobs b WHERE b.tenant_id = %s AND b.sha256 = %s"
                " AND EXISTS (SELECT 1 FROM audit_events e WHERE e.tenant_id = b.tenant_id"
                " AND e.action = 'Read.Recorded'"
                " AND e.changes -> 'values' ->> 'query_sha256' = b.sha256)"
                " ORDER BY b.key_id LIMIT 5",
                (tenant_id, sha256),
            ).fetchall()
        opener = Opener(self.projection.keys)
        for row in rows:
            if not row["key_id"]:
                return bytes(row["content"]).decode()
            # Sealed with its read's key (it showed documents): gone once one is erased.
            key = opener.key(row["key_id"])
            if key is not None:
                return key.open(bytes(row["content"])).decode()
        return None

    def _roles(self, tenant_id: str, actors: set[str]) -> dict[str, str]:
        if not actors:
            return {}
        with self.tenant_reads(tenant_id) as conn:
            found = conn.execute(
                "SELECT actor, role FROM audit_actors WHERE tenant_id = %s AND actor = ANY(%s)",
                (tenant_id, sorted(actors)),
            ).fetchall()
        return {row["actor"]: row["role"] for row in found}

"""Reading dead letters: a tenant's, newest first; and, for readiness, the projectors
stopped on one (across tenants)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from projections.base import ProjectionView

OPEN_STATES = ("parked", "retrying")


@dataclass(frozen=True)
class DeadLetterEntry:
    letter_id: UUID
    component: str
    subject: str
    context: str
    event_position: int
    event_type: str
    aggregate_id: str
    attempts: int
    error: str
    state: str
    parked_at: datetime
    updated_at: datetime
    updated_by: str
    reason: str
    position: int

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> DeadLetterEntry:
        return cls(**{k: row[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class DeadLetterPage:
    entries: list[DeadLetterEntry]
    next_cursor: str | None


class DeadLettersView(ProjectionView):
    def page(
        self, tenant_id: str, *, limit: int, cursor: str | None = None, state: str | None = None
    ) -> DeadLetterPage:
        rows, next_cursor = self.newest_first(
            tenant_id,
            "dead_letters",
            ("parked_at", "letter_id"),
            limit=limit,
            cursor=cursor,
            where=() if state is None else ("state = %s",),
            params=() if state is None else (state,),
        )
        return DeadLetterPage([DeadLetterEntry.from_row(r) for r in rows], next_cursor)

    def get(self, tenant_id: str, letter_id: UUID) -> DeadLetterEntry | None:
        with self.tenant_reads(tenant_id) as conn:
            row = conn.execute(
                "SELECT * FROM dead_letters WHERE tenant_id = %s AND letter_id = %s",
                (tenant_id, letter_id),
            ).fetchone()
        return DeadLetterEntry.from_row(row) if row else None

    def stopped_projections(self) -> list[DeadLetterEntry]:
        """Letters of projectors still parked or retrying, every tenant's (readiness)."""
        with self.datastore.transaction(commit=False) as curs:
            rows = curs.execute(
                "SELECT * FROM dead_letters WHERE state IN ('parked', 'retrying')"
                " AND component LIKE %s ORDER BY parked_at LIMIT 20",
                ("projection:%",),
            ).fetchall()
        return [DeadLetterEntry.from_row(r) for r in rows]

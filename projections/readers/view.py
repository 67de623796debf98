"""Reading who saw a document: each principal, through which route, when, how many times."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from projections.base import ProjectionView


@dataclass(frozen=True)
class Reader:
    actor: str
    route: str
    times: int
    first_seen: datetime
    last_seen: datetime


class ReadersView(ProjectionView):
    """Who-saw queries (rows written by ``ReadersProjection``)."""

    def readers(
        self,
        tenant_id: str,
        document_id: UUID,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[Reader]:
        conditions = ["tenant_id = %s", "document_id = %s"]
        params: list[Any] = [tenant_id, document_id]
        if since is not None:
            conditions.append("occurred_at >= %s")
            params.append(since)
        if until is not None:
            conditions.append("occurred_at < %s")
            params.append(until)
        with self.tenant_reads(tenant_id) as conn:
            rows = conn.execute(
                "SELECT actor, route, count(*) AS times, min(occurred_at) AS first_seen,"  # noqa: S608 - constant conditions
                " max(occurred_at) AS last_seen FROM document_reads"
                f" WHERE {' AND '.join(conditions)}"
                " GROUP BY actor, route ORDER BY max(occurred_at) DESC, actor, route",
                params,
            ).fetchall()
        return [Reader(**row) for row in rows]

"""The audit trail over HTTP: ``GET /v1/audit/events`` (auditors and admins)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from infra.web import ERROR_RESPONSES, ApiError, Auditor
from projections.audit.view import AuditEntry, AuditFilter, AuditView
from projections.base import InvalidCursorError
from projections.http import view_of

router = APIRouter(prefix="/v1/audit", tags=["audit"])
Trail = Annotated[AuditView, Depends(view_of("audit", AuditView))]


class Resource(BaseModel):
    type: str = Field(description="The aggregate: Document, ApiKey, Tenant, Conversation.")
    id: UUID
    version: int


class Changes(BaseModel):
    fields: list[str] = Field(description="Every field the event recorded.")
    values: dict[str, Any] = Field(
        description="Values of the fields that are neither content nor secrets."
    )


class AuditEntryOut(BaseModel):
    id: UUID
    occurred_at: datetime
    tenant_id: str
    actor: str
    actor_role: str | None = Field(description="The role of the actor's key (None: not a key).")
    action: str = Field(description="The event's type, e.g. Document.Uploaded.")
    resource: Resource
    context: str
    position: int
    request_id: str | None
    client_address: str | None
    user_agent: str | None
    changes: Changes

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditEntryOut:
        return cls(
            id=entry.entry_id,
            occurred_at=entry.occurred_at,
            tenant_id=entry.tenant_id,
            actor=entry.actor,
            actor_role=entry.actor_role,
            action=entry.action,
            resource=Resource(
                type=entry.resource_type, id=entry.resource_id, version=entry.resource_version
            ),
            context=entry.context,
            position=entry.position,
            request_id=entry.request_id,
            client_address=entry.client_address,
            user_agent=entry.user_agent,
            changes=Changes(**entry.changes),
        )


class AuditList(BaseModel):
    items: list[AuditEntryOut]
    next_cursor: str | None


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=value.tzinfo or UTC) if value else None


@router.get("/events", response_model=AuditList, responses=ERROR_RESPONSES)
def audit_events(
    principal: Auditor,
    trail: Trail,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    actor: Annotated[str | None, Query(max_length=300, description="e.g. key:<id>")] = None,
    action: Annotated[
        str | None,
        Query(max_length=100, description="An event type; * is a wildcard (Document.*)."),
    ] = None,
    resource_type: Annotated[str | None, Query(max_length=100)] = None,
    resource_id: UUID | None = None,
    since: Annotated[datetime | None, Query(description="From this time on.")] = None,
    until: Annotated[datetime | None, Query(description="Before this time.")] = None,
    request_id: Annotated[str | None, Query(max_length=64)] = None,
) -> AuditList:
    """Every recorded event of the tenant, newest first: who did what to which resource."""
    match = AuditFilter(
        actor=actor,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        since=_aware(since),
        until=_aware(until),
        request_id=request_id,
    )
    if match.since and match.until and match.since >= match.until:
        raise ApiError(422, "invalid_filter", "since must be earlier than until.")
    for name, value in (("actor", actor), ("action", action), ("request_id", request_id)):
        if value is not None and not value.isprintable():
            raise ApiError(422, "invalid_filter", f"{name} contains control characters.")
    try:
        page = trail.page(principal.tenant_id, match, limit=limit, cursor=cursor)
    except InvalidCursorError as exc:
        raise ApiError(422, "invalid_cursor", str(exc)) from exc
    return AuditList(
        items=[AuditEntryOut.of(e) for e in page.entries], next_cursor=page.next_cursor
    )

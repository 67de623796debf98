"""The audit trail over HTTP (auditors and admins): ``GET /v1/audit/events``, newest first and
paged, and ``GET /v1/audit/export``, everything that matches, oldest first, streamed."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from domain.activity import ReadKind
from domain.document import DocumentNotFoundError
from infra.web import ERROR_RESPONSES, ApiError, Auditor, ErrorBody, Viewer
from projections.audit.view import AuditEntry, AuditFilter, AuditView
from projections.base import InvalidCursorError
from projections.http import ReadLog, view_of

router = APIRouter(tags=["audit"])
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


class ChainLink(BaseModel):
    index: int = Field(description="The entry's place in its tenant's chain for its context.")
    previous_hash: str
    entry_hash: str


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
    chain: ChainLink | None = Field(description="None for entries projected before chains.")

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
            chain=ChainLink(
                index=entry.chain_index,
                previous_hash=entry.previous_hash or "",
                entry_hash=entry.entry_hash,
            )
            if entry.chain_index is not None and entry.entry_hash is not None
            else None,
        )


class AuditList(BaseModel):
    items: list[AuditEntryOut]
    next_cursor: str | None


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=value.tzinfo or UTC) if value else None


def _filters(
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
) -> AuditFilter:
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
    return match


Filters = Annotated[AuditFilter, Depends(_filters)]


def _described(match: AuditFilter) -> str:
    """The filters as the query text a read records (kept apart, readable by auditors)."""
    given = {k: str(v) for k, v in match.__dict__.items() if v is not None}
    return json.dumps(given, sort_keys=True)


@router.get("/v1/audit/events", response_model=AuditList, responses=ERROR_RESPONSES)
def audit_events(
    principal: Auditor,
    trail: Trail,
    match: Filters,
    reads: ReadLog,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> AuditList:
    """Every recorded event of the tenant, newest first: who did what to which resource."""
    reads.record(principal, ReadKind.AUDIT_QUERY, query=_described(match))
    try:
        page = trail.page(principal.tenant_id, match, limit=limit, cursor=cursor)
    except InvalidCursorError as exc:
        raise ApiError(422, "invalid_cursor", str(exc)) from exc
    return AuditList(
        items=[AuditEntryOut.of(e) for e in page.entries], next_cursor=page.next_cursor
    )


CSV_COLUMNS = [
    "id", "occurred_at", "tenant_id", "actor", "actor_role", "action", "resource_type",
    "resource_id", "resource_version", "context", "position", "request_id", "client_address",
    "user_agent", "changed_fields", "changed_values", "chain_index", "previous_hash",
    "entry_hash",
]  # fmt: skip


def _csv_row(entry: AuditEntry) -> list[Any]:
    return [
        entry.entry_id, entry.occurred_at.isoformat(), entry.tenant_id, entry.actor,
        entry.actor_role, entry.action, entry.resource_type, entry.resource_id,
        entry.resource_version, entry.context, entry.position, entry.request_id,
        entry.client_address, entry.user_agent, " ".join(entry.changes.get("fields", [])),
        json.dumps(entry.changes.get("values", {}), sort_keys=True, default=str),
        entry.chain_index, entry.previous_hash, entry.entry_hash,
    ]  # fmt: skip


def _lines(entries: Iterator[AuditEntry], export: str) -> Iterator[bytes]:
    """The export's bytes in chunks of about 64 KB (a chunk per entry would cost the
    server a hop to its thread pool and a send for every line)."""
    if export == "jsonl":
        chunk: list[bytes] = []
        size = 0
        for entry in entries:
            line = AuditEntryOut.of(entry).model_dump_json().encode() + b"\n"
            chunk.append(line)
            size += len(line)
            if size > 64 * 1024:
                yield b"".join(chunk)
                chunk, size = [], 0
        yield b"".join(chunk)
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for entry in entries:
        writer.writerow(_csv_row(entry))
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


@router.get(
    "/v1/audit/export",
    response_class=StreamingResponse,
    responses={
        **ERROR_RESPONSES,
        200: {
            "description": "The matching entries, oldest first, streamed.",
            "content": {"application/x-ndjson": {}, "text/csv": {}},
        },
    },
)
def export_audit_events(
    principal: Auditor,
    trail: Trail,
    match: Filters,
    reads: ReadLog,
    export_format: Annotated[
        Literal["jsonl", "csv"], Query(alias="format", description="jsonl or csv")
    ] = "jsonl",
) -> StreamingResponse:
    """Every matching entry of the tenant, oldest first, as JSON lines or CSV, streamed in
    constant memory whatever its size."""
    reads.record(principal, ReadKind.AUDIT_EXPORT, query=_described(match))
    media = "application/x-ndjson" if export_format == "jsonl" else "text/csv"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return StreamingResponse(
        _lines(trail.stream(principal.tenant_id, match), export_format),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="audit-{stamp}.{export_format}"'},
    )


class HistoryStep(BaseModel):
    action: str = Field(description="e.g. Document.Parsed")
    occurred_at: datetime
    actor: str
    actor_role: str | None
    version: int
    request_id: str | None
    changes: Changes


class DocumentHistory(BaseModel):
    document_id: UUID
    steps: list[HistoryStep]


@router.get(
    "/v1/documents/{document_id}/history",
    response_model=DocumentHistory,
    responses={**ERROR_RESPONSES, 404: {"model": ErrorBody}},
    tags=["documents"],
)
def document_history(
    principal: Viewer, trail: Trail, reads: ReadLog, document_id: UUID
) -> DocumentHistory:
    """The document's events in order, from the log: who uploaded it, each processing stage,
    failures, deletion, with the actor and request of each."""
    match = AuditFilter(resource_type="Document", resource_id=document_id)
    steps = [
        HistoryStep(
            action=entry.action,
            occurred_at=entry.occurred_at,
            actor=entry.actor,
            actor_role=entry.actor_role,
            version=entry.resource_version,
            request_id=entry.request_id,
            changes=Changes(**entry.changes),
        )
        for entry in trail.stream(principal.tenant_id, match)
    ]
    if not steps:
        raise DocumentNotFoundError(f"No document {document_id}.")
    reads.record(principal, ReadKind.HISTORY, documents=[str(document_id)])
    steps.sort(key=lambda step: step.version)
    return DocumentHistory(document_id=document_id, steps=steps)


class QueryText(BaseModel):
    sha256: str
    text: str


@router.get(
    "/v1/audit/queries/{sha256}",
    response_model=QueryText,
    responses={**ERROR_RESPONSES, 404: {"model": ErrorBody}},
)
def query_text(
    principal: Auditor,
    trail: Trail,
    reads: ReadLog,
    sha256: Annotated[str, PathParam(pattern="^[0-9a-f]{64}$")],
) -> QueryText:
    """The text of a query that a recorded read carries by digest; reading it is recorded."""
    text = trail.query_text(principal.tenant_id, sha256)
    if text is None:
        raise ApiError(404, "query_not_found", f"No recorded query {sha256}.")
    reads.record(principal, ReadKind.QUERY_TEXT, query_sha256=sha256)  # not stored again
    return QueryText(sha256=sha256, text=text)


class VerificationOut(BaseModel):
    tenant_id: str
    checked_at: datetime
    ok: bool = Field(description="Every chain recomputes from the event store; no finding")
    entries: int
    checkpoints: int = Field(description="Signed checkpoints checked")
    findings: list[str] = Field(description="What broke, first entry of each chain named")
    not_yet_covered: dict[str, int] = Field(
        description="Entries newer than the newest checkpoint, per tenant/context"
    )
    not_yet_projected: int
    dropped_by_retention: int
    unreadable_checkpoints: list[str]


@router.get(
    "/v1/audit/verification",
    response_model=VerificationOut,
    responses=ERROR_RESPONSES,
)
def audit_verification(principal: Auditor, reads: ReadLog, request: Request) -> VerificationOut:
    """Recompute the tenant's audit chains from the event store now and check them against
    the trail and the signed checkpoints (what ``kf audit verify --tenant`` does)."""
    from projections.audit.checkpoints import BadCheckpointError
    from projections.audit.verify import verify_database

    reads.record(principal, ReadKind.AUDIT_QUERY, query="verification")
    state = request.app.state
    unreadable: list[str] = []
    checkpoints = {}
    try:
        checkpoints[principal.tenant_id] = state.checkpoint_store.read(principal.tenant_id)
    except BadCheckpointError as exc:
        unreadable.append(str(exc))
    report = verify_database(
        state.database_url,
        list(state.event_logs),
        checkpoints,
        state.signer.public_key,
        tenant=principal.tenant_id,
    )
    summary = report.summary()
    return VerificationOut(
        tenant_id=principal.tenant_id,
        checked_at=datetime.now(UTC),
        ok=report.ok and not unreadable,
        entries=report.entries,
        checkpoints=report.checkpoints,
        findings=[str(f) for f in report.findings],
        not_yet_covered=summary["not_yet_covered"],
        not_yet_projected=report.unprojected,
        dropped_by_retention=report.retained_away,
        unreadable_checkpoints=unreadable,
    )

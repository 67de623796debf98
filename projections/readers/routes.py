"""Who saw this? ``GET /v1/audit/documents/{id}/readers`` (auditors and admins)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from domain.activity import ReadKind
from infra.web import ERROR_RESPONSES, ApiError, Auditor
from projections.http import ReadLog, view_of
from projections.readers.view import Reader, ReadersView

router = APIRouter(tags=["audit"])
Readers = Annotated[ReadersView, Depends(view_of("readers", ReadersView))]


class ReaderOut(BaseModel):
    actor: str = Field(description="key:<id>, or jwt:<issuer#subject>")
    route: str = Field(
        description="search, document, file (a download), transcript, prompt, provenance,"
        " answer, chat_completion"
    )
    times: int
    first_seen: datetime
    last_seen: datetime

    @classmethod
    def of(cls, reader: Reader) -> ReaderOut:
        return cls(**reader.__dict__)


class ReadersOut(BaseModel):
    document_id: UUID
    readers: list[ReaderOut]


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=value.tzinfo or UTC) if value else None


@router.get("/v1/audit/documents/{document_id}/readers", response_model=ReadersOut,
            responses=ERROR_RESPONSES)  # fmt: skip
def document_readers(
    principal: Auditor,
    readers: Readers,
    reads: ReadLog,
    document_id: UUID,
    since: Annotated[datetime | None, Query(description="Shown from this time on.")] = None,
    until: Annotated[datetime | None, Query(description="Shown before this time.")] = None,
) -> ReadersOut:
    """Every principal that was shown any chunk of the document: through which route, when
    first and last, and how many times."""
    since, until = _aware(since), _aware(until)
    if since and until and since >= until:
        raise ApiError(422, "invalid_filter", "since must be earlier than until.")
    found = readers.readers(principal.tenant_id, document_id, since=since, until=until)
    reads.record(principal, ReadKind.READERS, documents=[str(document_id)])
    return ReadersOut(document_id=document_id, readers=[ReaderOut.of(r) for r in found])

"""Dead letters over HTTP (admins): ``GET /v1/admin/dead-letters`` and one letter.

Retrying and dropping are commands (``POST /v1/admin/dead-letters/{id}/retry|drop``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from infra.web import ERROR_RESPONSES, Admin, ApiError, ErrorBody
from projections.base import InvalidCursorError
from projections.dead_letters.view import DeadLetterEntry, DeadLettersView
from projections.http import MinPosition, Models, view_of

router = APIRouter(prefix="/v1/admin/dead-letters", tags=["operations"])
Letters = Annotated[DeadLettersView, Depends(view_of("dead_letters", DeadLettersView))]
State = Literal["parked", "retrying", "resolved", "dropped"]


class DeadLetterOut(BaseModel):
    id: UUID
    component: str = Field(description="worker:<stage> or projection:<read model>")
    subject: str = Field(description="document:<id> (a worker's) or <context>:<position>")
    context: str = Field(description="The context of the event that failed")
    event_position: int
    event_type: str
    aggregate_id: str
    attempts: int
    error: str = Field(description="The last error's type and message")
    state: State = Field(
        description="parked (waiting for an operator), retrying, resolved (the retry went "
        "through), dropped (given up: a projector went on past the event)"
    )
    parked_at: datetime
    updated_at: datetime
    updated_by: str
    reason: str = Field(description="The operator's reason for the last retry or drop")
    position: int = Field(description="Of the letter's latest event (activity context)")

    @classmethod
    def of(cls, entry: DeadLetterEntry) -> DeadLetterOut:
        fields = dict(entry.__dict__)
        return cls(id=fields.pop("letter_id"), **fields)


class DeadLetterList(BaseModel):
    items: list[DeadLetterOut]
    next_cursor: str | None


_ERRORS = {**ERROR_RESPONSES, 404: {"model": ErrorBody}}


@router.get("", response_model=DeadLetterList, responses=ERROR_RESPONSES)
def list_dead_letters(
    principal: Admin,
    letters: Letters,
    models: Models,
    state: State | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    min_position: MinPosition = None,
) -> DeadLetterList:
    """What workers and projectors gave up on after their attempts, newest first."""
    models.wait("dead_letters", "activity", min_position)
    try:
        page = letters.page(principal.tenant_id, limit=limit, cursor=cursor, state=state)
    except InvalidCursorError as exc:
        raise ApiError(422, "invalid_cursor", str(exc)) from exc
    return DeadLetterList(
        items=[DeadLetterOut.of(e) for e in page.entries], next_cursor=page.next_cursor
    )


@router.get("/{letter_id}", response_model=DeadLetterOut, responses=_ERRORS)
def get_dead_letter(
    principal: Admin,
    letters: Letters,
    models: Models,
    letter_id: UUID,
    min_position: MinPosition = None,
) -> DeadLetterOut:
    models.wait("dead_letters", "activity", min_position)
    entry = letters.get(principal.tenant_id, letter_id)
    if entry is None:
        raise ApiError(404, "dead_letter_not_found", f"No dead letter {letter_id}.")
    return DeadLetterOut.of(entry)

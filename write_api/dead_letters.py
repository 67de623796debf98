"""Acting on dead letters (admins): retry (a projector tries the event again; a worker's
document goes through its stage again) or drop (given up for good)."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter
from pydantic import BaseModel, Field

from commands.base import CommandResult
from infra.web import ERROR_RESPONSES, Admin, ErrorBody
from write_api.deps import Letters

router = APIRouter(prefix="/v1/admin/dead-letters", tags=["operations"])

_ERRORS = {
    **ERROR_RESPONSES,
    404: {"model": ErrorBody},
    409: {"model": ErrorBody, "description": "Not in a state that allows it"},
}


class Decision(BaseModel):
    reason: str = Field("", max_length=500, description="Why (kept with the event).")


class Decided(BaseModel):
    id: UUID
    position: int = Field(description="Pass as min_position to GET /v1/admin/dead-letters.")
    changed: bool = Field(description="False when it was already so.")

    @classmethod
    def of(cls, result: CommandResult) -> Decided:
        return cls(id=result.id, position=result.position, changed=result.changed)


@router.post("/{letter_id}/retry", status_code=202, response_model=Decided, responses=_ERRORS)
def retry_dead_letter(
    principal: Admin, letters: Letters, letter_id: UUID, body: Decision | None = None
) -> Decided:
    """Another go. A projector stopped on the event applies it again (and goes on if it
    works, or parks it again after its attempts); a worker's document is sent through its
    failed stage again. 409 ``dead_letter_state`` for a dropped or resolved letter."""
    return Decided.of(
        letters.retry(
            tenant_id=principal.tenant_id,
            letter_id=letter_id,
            actor=principal.actor,
            reason=body.reason if body else "",
        )
    )


@router.post("/{letter_id}/drop", status_code=202, response_model=Decided, responses=_ERRORS)
def drop_dead_letter(
    principal: Admin, letters: Letters, letter_id: UUID, body: Decision | None = None
) -> Decided:
    """Give it up for good. A projector stopped on the event goes on past it (its read
    model never applies that event: rebuild it once the cause is fixed); a worker's
    document stays failed."""
    return Decided.of(
        letters.drop(
            tenant_id=principal.tenant_id,
            letter_id=letter_id,
            actor=principal.actor,
            reason=body.reason if body else "",
        )
    )

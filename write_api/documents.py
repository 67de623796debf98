"""Document commands over HTTP: upload, delete (to the trash), restore, retry, legal hold,
erase."""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from fastapi import APIRouter, Response, UploadFile
from pydantic import BaseModel, Field

from commands.budgets import BudgetGuard
from domain.access import Principal
from infra.web import ERROR_RESPONSES, Admin, Editor, ErrorBody
from write_api.deps import Documents, Guard

router = APIRouter(prefix="/v1/documents", tags=["documents"])


def _admission(
    guard: BudgetGuard, principal: Principal, size: int
) -> Callable[[], Callable[[int | None], None]]:
    """What a document command asks before storing: hold ``size`` bytes and one document on
    the tenant's quotas (or refuse), then settle the hold at the position recorded, or
    release it if nothing was."""

    def admit() -> Callable[[int | None], None]:
        hold = guard.hold_upload(principal.tenant_id, principal.actor, size)

        def stored(position: int | None) -> None:
            if hold is None:
                return
            if position is None:
                guard.release(hold)
            else:
                guard.settle_upload(hold, position)

        return stored

    return admit


class Accepted(BaseModel):
    id: UUID
    position: int = Field(description="Pass as min_position to read your own write.")
    duplicate: bool = Field(
        False, description="True when these bytes were already uploaded to this tenant."
    )


@router.post(
    "",
    status_code=202,
    response_model=Accepted,
    responses={
        **ERROR_RESPONSES,
        200: {"model": Accepted, "description": "Identical bytes already uploaded"},
        409: {"model": ErrorBody, "description": "Past the tenant's quota on documents"},
        413: {"model": ErrorBody, "description": "File too large, or past the storage quota"},
        415: {"model": ErrorBody, "description": "Unsupported file type"},
    },
)
def upload_document(
    principal: Editor,
    documents: Documents,
    guard: Guard,
    file: UploadFile,
    response: Response,
) -> Accepted:
    """Upload a PDF, DOCX, text or Markdown file; processing continues asynchronously.
    Past the tenant's quota on documents (409) or stored bytes (413): ``quota_exceeded``."""
    content = file.file.read()
    result = documents.upload_document(
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        filename=file.filename or "upload",
        declared_type=file.content_type,
        content=content,
        admit=_admission(guard, principal, len(content)),
    )
    if not result.changed:
        response.status_code = 200
    return Accepted(id=result.id, position=result.position, duplicate=not result.changed)


@router.delete(
    "/{document_id}",
    status_code=202,
    response_model=Accepted,
    responses={**ERROR_RESPONSES, 404: {"model": ErrorBody}, 409: {"model": ErrorBody}},
)
def delete_document(
    principal: Editor, documents: Documents, guard: Guard, document_id: UUID
) -> Accepted:
    """Delete a document; it disappears from every read model (and frees its quota)."""
    result = documents.delete_document(
        tenant_id=principal.tenant_id, actor=principal.actor, document_id=document_id
    )
    if result.changed:
        size = documents.get_document(principal.tenant_id, document_id).size_bytes
        guard.document_removed(principal.tenant_id, size, result.position)
    return Accepted(id=result.id, position=result.position)


@router.post(
    "/{document_id}/erase",
    status_code=202,
    response_model=Accepted,
    responses={**ERROR_RESPONSES, 404: {"model": ErrorBody}, 409: {"model": ErrorBody}},
)
def erase_document(
    principal: Admin, documents: Documents, guard: Guard, document_id: UUID
) -> Accepted:
    """Erase a document, irreversibly: its data key is destroyed with the ``Document.Erased``
    event (its bytes, text, chunks, vectors and file name, and every answer and prompt that
    quoted it, can no longer be read), and the read models drop their copies. The audit
    trail keeps that it existed, who read it, and who erased it when. Repeating it changes
    nothing. ``GET /v1/documents/{id}/erasure`` (with the position) is its certificate."""
    before = documents.get_document(principal.tenant_id, document_id)
    result = documents.erase_document(
        tenant_id=principal.tenant_id, actor=principal.actor, document_id=document_id
    )
    if result.changed and not before.is_deleted:
        guard.document_removed(principal.tenant_id, before.size_bytes, result.position)
    return Accepted(id=result.id, position=result.position)


@router.post(
    "/{document_id}/restore",
    status_code=202,
    response_model=Accepted,
    responses={
        **ERROR_RESPONSES,
        404: {"model": ErrorBody},
        409: {"model": ErrorBody, "description": "Past the tenant's quota on documents"},
        410: {"model": ErrorBody, "description": "The document was erased"},
        413: {"model": ErrorBody, "description": "Past the tenant's storage quota"},
    },
)
def restore_document(
    principal: Editor, documents: Documents, guard: Guard, document_id: UUID
) -> Accepted:
    """Take a deleted document out of the trash, as it was (it counts against the quotas
    again; processing interrupted by the delete carries on). Deleted documents are erased
    after ``retention.deleted_days``; an erased one cannot be restored (410)."""
    size = documents.get_document(principal.tenant_id, document_id).size_bytes
    result = documents.restore_document(
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        document_id=document_id,
        admit=_admission(guard, principal, size),
    )
    return Accepted(id=result.id, position=result.position)


@router.post(
    "/{document_id}/retry",
    status_code=202,
    response_model=Accepted,
    responses={
        **ERROR_RESPONSES,
        404: {"model": ErrorBody},
        409: {"model": ErrorBody, "description": "The document is not failed"},
    },
)
def retry_document(principal: Editor, documents: Documents, document_id: UUID) -> Accepted:
    """Send a failed document through the stage it failed in again (``Document.Retried``):
    its status goes back to that stage's input and the workers take it from there. 409
    ``document_not_failed`` for a document that is not failed."""
    result = documents.retry_document(
        tenant_id=principal.tenant_id, actor=principal.actor, document_id=document_id
    )
    return Accepted(id=result.id, position=result.position)


class HoldBody(BaseModel):
    reason: str = Field("", max_length=500, description="Why (a matter or case reference).")


@router.post(
    "/{document_id}/hold",
    status_code=202,
    response_model=Accepted,
    responses={**ERROR_RESPONSES, 404: {"model": ErrorBody}, 410: {"model": ErrorBody}},
)
def hold_document(
    principal: Admin, documents: Documents, document_id: UUID, body: HoldBody | None = None
) -> Accepted:
    """Put a document under legal hold: until the hold is lifted it can be neither deleted
    nor erased (409 ``legal_hold``), by anyone or by retention. Recorded as an event."""
    result = documents.hold_document(
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        document_id=document_id,
        reason=body.reason if body else "",
    )
    return Accepted(id=result.id, position=result.position)


@router.delete(
    "/{document_id}/hold",
    status_code=202,
    response_model=Accepted,
    responses={**ERROR_RESPONSES, 404: {"model": ErrorBody}},
)
def release_document(principal: Admin, documents: Documents, document_id: UUID) -> Accepted:
    """Lift a document's legal hold (an event)."""
    result = documents.release_document(
        tenant_id=principal.tenant_id, actor=principal.actor, document_id=document_id
    )
    return Accepted(id=result.id, position=result.position)

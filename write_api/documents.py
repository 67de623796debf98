"""Document commands over HTTP: upload and delete."""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from fastapi import APIRouter, Response, UploadFile
from pydantic import BaseModel, Field

from infra.web import ERROR_RESPONSES, Editor, ErrorBody
from write_api.deps import Documents, Guard

router = APIRouter(prefix="/v1/documents", tags=["documents"])


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

    def admit() -> Callable[[int | None], None]:
        """Valid new bytes: hold their place on the tenant's quotas (or refuse)."""
        hold = guard.hold_upload(principal.tenant_id, principal.actor, len(content))

        def stored(position: int | None) -> None:
            if hold is None:
                return
            if position is None:
                guard.release(hold)
            else:
                guard.settle_upload(hold, position)

        return stored

    result = documents.upload_document(
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        filename=file.filename or "upload",
        declared_type=file.content_type,
        content=content,
        admit=admit,
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

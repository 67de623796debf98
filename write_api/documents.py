"""Document commands over HTTP: upload and delete."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Response, UploadFile
from pydantic import BaseModel, Field

from infra.web import ERROR_RESPONSES, Editor, ErrorBody
from write_api.deps import Documents

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
        413: {"model": ErrorBody, "description": "File too large"},
        415: {"model": ErrorBody, "description": "Unsupported file type"},
    },
)
def upload_document(
    principal: Editor, documents: Documents, file: UploadFile, response: Response
) -> Accepted:
    """Upload a PDF, DOCX, text or Markdown file; processing continues asynchronously."""
    result = documents.upload_document(
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        filename=file.filename or "upload",
        declared_type=file.content_type,
        content=file.file.read(),
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
def delete_document(principal: Editor, documents: Documents, document_id: UUID) -> Accepted:
    """Delete a document; it disappears from every read model."""
    result = documents.delete_document(
        tenant_id=principal.tenant_id, actor=principal.actor, document_id=document_id
    )
    return Accepted(id=result.id, position=result.position)

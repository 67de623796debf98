"""The catalog over HTTP: ``GET /v1/documents`` and ``GET /v1/documents/{id}``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from domain.activity import ReadKind
from domain.document import DocumentNotFoundError
from infra.web import ERROR_RESPONSES, ApiError, ErrorBody, Viewer
from projections.catalog.view import CatalogEntry, CatalogView, InvalidCursorError
from projections.http import MinPosition, Models, ReadLog, view_of

router = APIRouter(prefix="/v1/documents", tags=["documents"])
Catalog = Annotated[CatalogView, Depends(view_of("catalog", CatalogView))]

Status = Literal["uploaded", "parsed", "chunked", "embedded", "failed", "deleted"]


class Failure(BaseModel):
    stage: str
    code: str
    reason: str


class DocumentOut(BaseModel):
    id: UUID
    filename: str
    media_type: str
    size_bytes: int
    content_sha256: str
    status: Status
    page_count: int | None
    char_count: int | None
    chunk_count: int | None
    warnings: list[str]
    failure: Failure | None
    uploaded_by: str
    uploaded_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
    version: int
    position: int

    @classmethod
    def of(cls, entry: CatalogEntry) -> DocumentOut:
        failure = None
        if entry.failure_stage is not None:
            failure = Failure(
                stage=entry.failure_stage,
                code=entry.failure_code or "",
                reason=entry.failure_reason or "",
            )
        return cls(
            id=entry.document_id,
            filename=entry.filename,
            media_type=entry.media_type,
            size_bytes=entry.size_bytes,
            content_sha256=entry.content_sha256,
            status=entry.status,
            page_count=entry.page_count,
            char_count=entry.char_count,
            chunk_count=entry.chunk_count,
            warnings=list(entry.warnings),
            failure=failure,
            uploaded_by=entry.uploaded_by,
            uploaded_at=entry.uploaded_at,
            updated_at=entry.updated_at,
            deleted_at=entry.deleted_at,
            version=entry.version,
            position=entry.position,
        )


class DocumentList(BaseModel):
    items: list[DocumentOut]
    next_cursor: str | None


_READ_ERRORS = {
    **ERROR_RESPONSES,
    503: {"model": ErrorBody, "description": "The catalog did not reach min_position in time"},
}


@router.get("", response_model=DocumentList, responses=_READ_ERRORS)
def list_documents(
    principal: Viewer,
    catalog: Catalog,
    models: Models,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    status: Status | None = None,
    include_deleted: bool = False,
    min_position: MinPosition = None,
) -> DocumentList:
    """The tenant's documents, newest first; follow ``next_cursor`` for more."""
    models.wait("catalog", "documents", min_position)
    try:
        page = catalog.page(
            principal.tenant_id,
            limit=limit,
            cursor=cursor,
            status=status,
            include_deleted=include_deleted,
        )
    except InvalidCursorError as exc:
        raise ApiError(422, "invalid_cursor", str(exc)) from exc
    return DocumentList(
        items=[DocumentOut.of(e) for e in page.entries], next_cursor=page.next_cursor
    )


@router.get(
    "/{document_id}",
    response_model=DocumentOut,
    responses={**_READ_ERRORS, 404: {"model": ErrorBody}},
)
def get_document(
    principal: Viewer,
    catalog: Catalog,
    models: Models,
    reads: ReadLog,
    document_id: UUID,
    min_position: MinPosition = None,
) -> DocumentOut:
    """One document's status, page and chunk counts, sizes and failure reason."""
    models.wait("catalog", "documents", min_position)
    entry = catalog.get(principal.tenant_id, document_id)
    if entry is None:
        raise DocumentNotFoundError(f"No document {document_id}.")
    reads.record(principal, ReadKind.DOCUMENT, documents=[str(document_id)])
    return DocumentOut.of(entry)

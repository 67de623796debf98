"""The catalog over HTTP: ``GET /v1/documents``, ``GET /v1/documents/{id}`` and the original
file, ``GET /v1/documents/{id}/content``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from domain.activity import ReadKind
from domain.document import DocumentNotFoundError
from infra.signing import Signer
from infra.web import ERROR_RESPONSES, Admin, ApiError, ErrorBody, Viewer
from projections.catalog.erasure import erasure_certificate
from projections.catalog.view import CatalogEntry, CatalogView, InvalidCursorError
from projections.http import MinPosition, Models, ReadLog, view_of

router = APIRouter(prefix="/v1/documents", tags=["documents"])
Catalog = Annotated[CatalogView, Depends(view_of("catalog", CatalogView))]

Status = Literal["uploaded", "parsed", "chunked", "embedded", "failed", "deleted", "erased"]


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
    legal_hold: bool = Field(
        False, description="Under legal hold: it can be neither deleted nor erased."
    )
    version: int
    position: int
    ahead: int | None = Field(
        None,
        description="While it is being processed (GET of one document only): how many of "
        "the tenant's documents uploaded before it are still being processed, in any stage. "
        "Null once it is final, and in lists.",
    )

    @classmethod
    def of(cls, entry: CatalogEntry, ahead: int | None = None) -> DocumentOut:
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
            legal_hold=entry.legal_hold,
            uploaded_at=entry.uploaded_at,
            updated_at=entry.updated_at,
            deleted_at=entry.deleted_at,
            version=entry.version,
            position=entry.position,
            ahead=ahead,
        )


class DocumentList(BaseModel):
    items: list[DocumentOut]
    next_cursor: str | None


AsOf = Annotated[
    datetime | None,
    Query(
        description="Answer from the events as they stood at this time (ISO 8601; UTC if"
        " no zone is given)."
    ),
]


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


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
    as_of: AsOf = None,
) -> DocumentList:
    """The tenant's documents, newest first; follow ``next_cursor`` for more.

    With ``as_of``, the catalog as it stood then: documents deleted later are
    listed (with the status they had), ones uploaded later are not."""
    models.wait("catalog", "documents", min_position)
    try:
        if as_of is None:
            page = catalog.page(
                principal.tenant_id,
                limit=limit,
                cursor=cursor,
                status=status,
                include_deleted=include_deleted,
            )
        else:
            page = catalog.page_as_of(
                principal.tenant_id,
                _utc(as_of),
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
    as_of: AsOf = None,
) -> DocumentOut:
    """One document's status, page and chunk counts, sizes and failure reason (with
    ``as_of``: as they stood then)."""
    models.wait("catalog", "documents", min_position)
    if as_of is None:
        entry = catalog.get(principal.tenant_id, document_id)
    else:
        entry = catalog.get_as_of(principal.tenant_id, document_id, _utc(as_of))
    if entry is None:
        suffix = "" if as_of is None else f" as of {_utc(as_of).isoformat()}"
        raise DocumentNotFoundError(f"No document {document_id}{suffix}.")
    reads.record(principal, ReadKind.DOCUMENT, documents=[str(document_id)])
    ahead = catalog.ahead_of(principal.tenant_id, entry) if as_of is None else None
    return DocumentOut.of(entry, ahead)


@router.get(
    "/{document_id}/content",
    response_class=Response,
    responses={
        **_READ_ERRORS,
        200: {"description": "The file as uploaded", "content": {"application/octet-stream": {}}},
        404: {"model": ErrorBody},
        410: {"model": ErrorBody, "description": "The document was deleted"},
    },
)
def get_content(
    principal: Viewer,
    catalog: Catalog,
    models: Models,
    reads: ReadLog,
    document_id: UUID,
    min_position: MinPosition = None,
    download: Annotated[
        bool, Query(description="Save it (attachment) instead of opening it in the browser.")
    ] = False,
) -> Response:
    """The original file, byte for byte as uploaded, with its type; opened in the browser
    (``inline``: a PDF opens at ``#page=N``) or, with ``download=true``, saved. Recorded
    as a read."""
    models.wait("catalog", "documents", min_position)
    entry = catalog.get(principal.tenant_id, document_id)
    if entry is None:
        raise DocumentNotFoundError(f"No document {document_id}.")
    if entry.status == "deleted":
        raise ApiError(410, "document_deleted", f"Document {document_id} was deleted.")
    if entry.status == "erased":
        raise ApiError(410, "document_erased", f"Document {document_id} was erased.")
    content = catalog.original(principal.tenant_id, document_id, entry.content_sha256)
    if content is None:
        raise ApiError(410, "content_gone", f"The file of document {document_id} is gone.")
    reads.record(principal, ReadKind.FILE, documents=[str(document_id)])
    headers = {
        "Content-Disposition": content_disposition(
            entry.filename, "attachment" if download else "inline"
        ),
        "ETag": f'"{entry.content_sha256}"',
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, no-store",
    }
    if entry.media_type != "application/pdf":
        # Opened in the browser, an uploaded file runs nothing and loads nothing (Chromium's
        # PDF viewer does not open in a sandboxed document, and a PDF runs no script there).
        headers["Content-Security-Policy"] = _SANDBOX
    return Response(content, media_type=entry.media_type, headers=headers)


_SANDBOX = "sandbox; default-src 'none'; style-src 'unsafe-inline'"


def content_disposition(filename: str, disposition: str = "attachment") -> str:
    """``attachment`` (or ``inline``) with an ASCII fallback name and the exact name
    (RFC 6266, RFC 5987)."""
    printable = "".join(c for c in filename if c.isprintable()) or "document"
    fallback = "".join(c if c.isascii() and c not in '"\\;' else "_" for c in printable)
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{quote(printable, safe='')}"


def _signer(request: Request) -> Signer:
    signer: Signer = request.app.state.signer
    return signer


def _erasing_read_models(request: Request) -> list[str]:
    """The read models that must confirm a document's erasure: those that handle it."""
    return sorted(
        name
        for name, view in request.app.state.views.items()
        if "Document.Erased" in view.projection.events
    )


@router.get(
    "/{document_id}/erasure",
    responses={**_READ_ERRORS, 404: {"model": ErrorBody}},
)
def get_erasure_certificate(
    principal: Admin,
    catalog: Catalog,
    models: Models,
    signer: Annotated[Signer, Depends(_signer)],
    expected: Annotated[list[str], Depends(_erasing_read_models)],
    document_id: UUID,
    min_position: MinPosition = None,
) -> dict[str, Any]:
    """The erasure certificate: what was erased, when, by whom, the keys destroyed and which
    read models confirmed it at which positions, signed (Ed25519) like the audit trail's
    checkpoints; ``complete`` once every read model that keeps document content has."""
    models.wait("catalog", "documents", min_position)
    found = catalog.erasure(principal.tenant_id, document_id)
    if found is None:
        raise ApiError(
            404, "not_erased", f"Document {document_id} was not erased (or does not exist)."
        )
    return erasure_certificate(found, expected, signer)

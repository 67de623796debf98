"""API-key listings over HTTP (admin only): never the secret, nor its hash."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from domain.access import ApiKeyNotFoundError
from infra.web import ERROR_RESPONSES, Admin, ApiError, ErrorBody
from projections.base import InvalidCursorError
from projections.http import MinPosition, Models, view_of
from projections.keys.view import KeyEntry, KeysView

router = APIRouter(prefix="/v1/keys", tags=["keys"])


Keys = Annotated[KeysView, Depends(view_of("keys", KeysView))]


class KeyOut(BaseModel):
    id: UUID
    name: str
    role: str
    issued_by: str
    issued_at: datetime
    expires_at: datetime | None
    revoked_by: str | None
    revoked_at: datetime | None
    position: int

    @classmethod
    def of(cls, entry: KeyEntry) -> KeyOut:
        return cls(
            id=entry.key_id,
            name=entry.name,
            role=entry.role,
            issued_by=entry.issued_by,
            issued_at=entry.issued_at,
            expires_at=entry.expires_at,
            revoked_by=entry.revoked_by,
            revoked_at=entry.revoked_at,
            position=entry.position,
        )


class KeyList(BaseModel):
    items: list[KeyOut]
    next_cursor: str | None


_READ_ERRORS = {
    **ERROR_RESPONSES,
    503: {"model": ErrorBody, "description": "The key list did not reach min_position in time"},
}


@router.get("", response_model=KeyList, responses=_READ_ERRORS)
def list_keys(
    principal: Admin,
    keys: Keys,
    models: Models,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    include_revoked: bool = True,
    min_position: MinPosition = None,
) -> KeyList:
    """The tenant's keys, newest first; follow ``next_cursor`` for more."""
    models.wait("keys", "access", min_position)
    try:
        page = keys.page(
            principal.tenant_id, limit=limit, cursor=cursor, include_revoked=include_revoked
        )
    except InvalidCursorError as exc:
        raise ApiError(422, "invalid_cursor", str(exc)) from exc
    return KeyList(items=[KeyOut.of(e) for e in page.entries], next_cursor=page.next_cursor)


@router.get(
    "/{key_id}", response_model=KeyOut, responses={**_READ_ERRORS, 404: {"model": ErrorBody}}
)
def get_key(
    principal: Admin, keys: Keys, models: Models, key_id: UUID, min_position: MinPosition = None
) -> KeyOut:
    """One key's name, role, expiry and revocation."""
    models.wait("keys", "access", min_position)
    entry = keys.get(principal.tenant_id, key_id)
    if entry is None:
        raise ApiKeyNotFoundError(f"No API key {key_id}.")
    return KeyOut.of(entry)

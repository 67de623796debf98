"""API-key and user listings over HTTP (admin only): never a secret, nor a hash."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from domain.access import ApiKeyNotFoundError, UserNotFoundError
from infra.web import ERROR_RESPONSES, Admin, ApiError, ErrorBody
from projections.base import InvalidCursorError
from projections.http import MinPosition, Models, view_of
from projections.keys.view import KeyEntry, KeysView, UserEntry

keys_router = APIRouter(prefix="/v1/keys", tags=["keys"])
users_router = APIRouter(prefix="/v1/users", tags=["users"])


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
    last_used_at: datetime | None = Field(
        None, description="When the audit trail last recorded the key acting (null: never)"
    )
    position: int

    @classmethod
    def of(cls, entry: KeyEntry, last_used_at: datetime | None = None) -> KeyOut:
        return cls(
            last_used_at=last_used_at,
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


@keys_router.get("", response_model=KeyList, responses=_READ_ERRORS)
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
    used = keys.last_used(principal.tenant_id, [f"key:{e.key_id}" for e in page.entries])
    return KeyList(
        items=[KeyOut.of(e, used.get(f"key:{e.key_id}")) for e in page.entries],
        next_cursor=page.next_cursor,
    )


@keys_router.get(
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
    used = keys.last_used(principal.tenant_id, [f"key:{key_id}"])
    return KeyOut.of(entry, used.get(f"key:{key_id}"))


class UserOut(BaseModel):
    id: UUID
    email: str
    role: str
    status: str = Field(description="invited (no password yet), active or disabled")
    invited_by: str
    invited_at: datetime
    link_expires_at: datetime | None = Field(description="When the live set-password link dies")
    password_set_at: datetime | None
    disabled_at: datetime | None
    last_sign_in_at: datetime | None
    sign_ins: int
    position: int

    @classmethod
    def of(cls, entry: UserEntry) -> UserOut:
        return cls(
            id=entry.user_id,
            email=entry.email,
            role=entry.role,
            status=entry.status,
            invited_by=entry.invited_by,
            invited_at=entry.invited_at,
            link_expires_at=entry.link_expires_at,
            password_set_at=entry.password_set_at,
            disabled_at=entry.disabled_at,
            last_sign_in_at=entry.last_sign_in_at,
            sign_ins=entry.sign_ins,
            position=entry.position,
        )


class UserList(BaseModel):
    users: list[UserOut]
    next_cursor: str | None


@users_router.get("", response_model=UserList, responses=_READ_ERRORS)
def list_users(
    principal: Admin,
    keys: Keys,
    models: Models,
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    status: Literal["invited", "active", "disabled"] | None = None,
    min_position: MinPosition = None,
) -> UserList:
    """The tenant's people, newest invitation first; follow ``next_cursor`` for more."""
    models.wait("keys", "access", min_position)
    try:
        page = keys.users(principal.tenant_id, limit=limit, cursor=cursor, status=status)
    except InvalidCursorError as exc:
        raise ApiError(422, "invalid_cursor", str(exc)) from exc
    return UserList(users=[UserOut.of(e) for e in page.entries], next_cursor=page.next_cursor)


@users_router.get(
    "/{user_id}", response_model=UserOut, responses={**_READ_ERRORS, 404: {"model": ErrorBody}}
)
def get_user(
    principal: Admin, keys: Keys, models: Models, user_id: UUID, min_position: MinPosition = None
) -> UserOut:
    """One person's address, role, status and last sign-in."""
    models.wait("keys", "access", min_position)
    entry = keys.get_user(principal.tenant_id, user_id)
    if entry is None:
        raise UserNotFoundError(f"No user {user_id}.")
    return UserOut.of(entry)


router = APIRouter()
router.include_router(keys_router)
router.include_router(users_router)

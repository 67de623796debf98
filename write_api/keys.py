"""API-key commands over HTTP: issue and revoke (admin only)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from domain.access import KEY_NAME_MAX, Role
from infra.web import ERROR_RESPONSES, Admin, ErrorBody, client_address
from write_api.deps import Access

router = APIRouter(prefix="/v1/keys", tags=["keys"])


class IssueKey(BaseModel):
    name: str = Field(min_length=1, max_length=KEY_NAME_MAX)
    role: Role
    expires_at: datetime | None = Field(
        None, description="When the key stops working (with a time zone); none: never."
    )


class IssuedKey(BaseModel):
    id: UUID
    position: int = Field(description="Pass as min_position to GET /v1/keys.")
    name: str
    role: Role
    expires_at: datetime | None
    key: str = Field(description="The secret token. Shown only now; store it safely.")


class Revoked(BaseModel):
    id: UUID
    position: int
    changed: bool = Field(description="False when the key was already revoked.")


@router.post(
    "",
    status_code=201,
    response_model=IssuedKey,
    responses={**ERROR_RESPONSES, 404: {"model": ErrorBody}},
)
def issue_key(principal: Admin, access: Access, body: IssueKey, request: Request) -> IssuedKey:
    """Issue a key for the caller's tenant; the secret is in this response only."""
    result, token = access.issue_api_key(
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        name=body.name,
        role=body.role,
        expires_at=body.expires_at,
        origin=client_address(request),
    )
    return IssuedKey(
        id=result.id,
        position=result.position,
        name=body.name.strip(),
        role=body.role,
        expires_at=body.expires_at,
        key=token,
    )


@router.delete(
    "/{key_id}",
    response_model=Revoked,
    responses={**ERROR_RESPONSES, 404: {"model": ErrorBody}, 409: {"model": ErrorBody}},
)
def revoke_key(principal: Admin, access: Access, key_id: UUID, request: Request) -> Revoked:
    """Revoke a key: the very next request made with it gets 401."""
    result = access.revoke_api_key(
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        key_id=key_id,
        origin=client_address(request),
    )
    return Revoked(id=result.id, position=result.position, changed=result.changed)

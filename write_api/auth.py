"""Exchanging an API key for a short-lived signed token."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

import structlog
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from commands.auth import Authenticator
from domain.access import AuthenticationFailed
from infra.web import ERROR_RESPONSES, ApiError, Authenticated, client_address

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/v1/auth", tags=["auth"])


class TokenOut(BaseModel):
    access_token: str = Field(description="Send as 'Authorization: Bearer <token>'.")
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the scheme's name
    expires_in: int = Field(description="Seconds until the token expires.")
    expires_at: datetime


@router.post("/token", response_model=TokenOut, responses=ERROR_RESPONSES)
def issue_token(principal: Authenticated, request: Request) -> TokenOut:
    """Exchange the API key in the Authorization header for a short-lived JWT.

    The token has the key's tenant and role, never outlives the key, and stops
    working when the key is revoked. A token cannot be exchanged for another.
    """
    authenticator: Authenticator = request.app.state.authenticator
    try:
        issued = authenticator.exchange(principal)
    except AuthenticationFailed as failure:
        raise ApiError(403, failure.reason, failure.message) from None
    log.info(
        "token_issued",
        jti=issued.jti,
        expires_at=issued.expires_at.isoformat(),
        client=client_address(request),
    )
    expires_in = max(0, int((issued.expires_at - datetime.now(UTC)).total_seconds()))
    return TokenOut(access_token=issued.token, expires_in=expires_in, expires_at=issued.expires_at)

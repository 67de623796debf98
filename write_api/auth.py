"""Exchanging an API key for a short-lived signed token; people signing in and out of the
web app with a password (a session cookie), and setting it from a one-time link."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Literal

import structlog
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from commands.auth import Authenticator, SignedIn
from domain.access import EMAIL_MAX, PASSWORD_MAX, AuthenticationFailed, Role, User
from domain.activity import NO_TENANT
from infra.ratelimit import Bucket, RateLimiter
from infra.telemetry import AUTH_FAILURES
from infra.web import (
    ERROR_RESPONSES,
    ApiError,
    Authenticated,
    ErrorBody,
    cleared_session_cookies,
    client_address,
    record_refusal,
    refuse_while_database_unreachable,
    session_cookies,
    set_cookies,
)
from write_api.deps import Access

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


# ------------------------------------------------------------ people signing in


class SignIn(BaseModel):
    email: str = Field(min_length=3, max_length=EMAIL_MAX)
    password: str = Field(min_length=1, max_length=PASSWORD_MAX)


class SetPassword(BaseModel):
    token: str = Field(min_length=1, max_length=300, description="From the set-password link.")
    password: str = Field(min_length=1, max_length=PASSWORD_MAX)


class Me(BaseModel):
    kind: Literal["user", "key", "external"]
    id: str
    email: str | None = None
    role: Role
    tenant_id: str


class SignedInOut(BaseModel):
    user: Me
    csrf_token: str = Field(description="Send as X-CSRF-Token on requests that change things.")
    expires_at: datetime = Field(description="When the session ends at the latest.")


def _authenticator(request: Request) -> Authenticator:
    authenticator: Authenticator = request.app.state.authenticator
    return authenticator


def _me_of_user(user: User) -> Me:
    return Me(
        kind="user", id=str(user.id), email=user.email, role=user.role, tenant_id=user.tenant_id
    )


def _signed_in(request: Request, signed: SignedIn) -> SignedInOut:
    max_age = int((signed.session_expires_at - datetime.now(UTC)).total_seconds())
    production = request.app.state.settings.mode == "production"
    set_cookies(
        request,
        session_cookies(signed.token.token, signed.csrf, max_age_s=max_age, secure=production),
    )
    return SignedInOut(
        user=_me_of_user(signed.user),
        csrf_token=signed.csrf,
        expires_at=signed.session_expires_at,
    )


async def _throttle_sign_in(request: Request, email: str) -> None:
    """Sign-in attempts draw on the account's bucket and the client's (always on)."""
    limiter: RateLimiter = request.app.state.login_limiter
    limits = request.app.state.settings.rate_limits
    account = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
    buckets = [
        Bucket(
            f"login-account:{account}", limits.login_account.burst, limits.login_account.per_hour
        ),
        Bucket(
            f"login-client:{client_address(request)}",
            limits.login_client.burst,
            limits.login_client.per_hour,
        ),
    ]
    if limiter.blocking:
        decision = await run_in_threadpool(limiter.acquire, buckets)
    else:
        decision = limiter.acquire(buckets)
    if not decision.allowed:
        log.warning("sign_in_throttled", bucket=decision.bucket.partition(":")[0])
        await record_refusal(
            request,
            tenant_id=NO_TENANT,
            claimed=f"user:{account}",
            reason="login_throttled",
            status=429,
        )
        raise ApiError(
            429,
            "login_throttled",
            f"Too many sign-in attempts; try again in {decision.retry_after_s} s.",
            {"Retry-After": str(decision.retry_after_s)},
        )


@router.post(
    "/login",
    response_model=SignedInOut,
    responses={**ERROR_RESPONSES, 429: {"model": ErrorBody}},
)
async def sign_in(body: SignIn, request: Request, access: Access) -> SignedInOut:
    """Sign in with an e-mail address and a password: sets the session cookie (HttpOnly)
    and the CSRF cookie. Repeated attempts are throttled per account and per client."""
    refuse_while_database_unreachable(request)
    await _throttle_sign_in(request, body.email)
    authenticator = _authenticator(request)
    try:
        signed = await run_in_threadpool(
            authenticator.sign_in,
            body.email,
            body.password,
            client=client_address(request),
            user_agent=request.headers.get("user-agent", ""),
        )
    except AuthenticationFailed as failure:
        AUTH_FAILURES.labels(failure.reason).inc()
        user_id, tenant_id = await run_in_threadpool(access.account_of, body.email)
        log.warning("sign_in_failed", claimed=f"user:{user_id}", client=client_address(request))
        await record_refusal(
            request,
            tenant_id=tenant_id or NO_TENANT,
            claimed=f"user:{user_id}",
            reason=failure.reason,
            status=401,
        )
        raise ApiError(401, failure.reason, failure.message) from None
    log.info("signed_in", user=str(signed.user.id), session=str(signed.session_id))
    return _signed_in(request, signed)


@router.post("/logout", status_code=204, responses=ERROR_RESPONSES)
def sign_out(principal: Authenticated, request: Request) -> Response:
    """End the session the cookie names (its token stops working at once) and clear the
    cookies."""
    _authenticator(request).sign_out(principal)
    production = request.app.state.settings.mode == "production"
    set_cookies(request, cleared_session_cookies(secure=production))
    return Response(status_code=204)


@router.get("/me", response_model=Me, responses=ERROR_RESPONSES)
def who_am_i(principal: Authenticated, access: Access) -> Me:
    """Who the credential (session cookie, key or token) stands for, with the role now."""
    if principal.user_id is not None:
        return _me_of_user(access.get_user(principal.tenant_id, principal.user_id))
    if principal.key_id is not None:
        return Me(
            kind="key", id=str(principal.key_id), role=principal.role, tenant_id=principal.tenant_id
        )
    return Me(
        kind="external", id=principal.subject, role=principal.role, tenant_id=principal.tenant_id
    )


@router.post(
    "/password",
    response_model=SignedInOut,
    responses={**ERROR_RESPONSES, 429: {"model": ErrorBody}},
)
async def set_password(body: SetPassword, request: Request, access: Access) -> SignedInOut:
    """Set a password with a one-time link (an invitation or a reset) and sign in. The link
    works once; a password refused as weak does not spend it."""
    refuse_while_database_unreachable(request)
    await _throttle_sign_in(request, body.token[:40])
    user = await run_in_threadpool(
        access.set_password_with_link,
        token=body.token,
        password=body.password,
        origin=client_address(request),
    )
    signed = await run_in_threadpool(
        _authenticator(request).signed_in_after_password,
        user,
        client=client_address(request),
        user_agent=request.headers.get("user-agent", ""),
    )
    log.info("password_set", user=str(user.id))
    return _signed_in(request, signed)

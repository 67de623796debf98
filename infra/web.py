"""HTTP plumbing shared by the read and write APIs.

Owns: the one place domain errors become HTTP statuses, the error body shape
(``{"code", "message", "request_id"}``), request ids bound into every log line,
request metrics, the upload body-size guard, and bearer-key authentication with
role checks. Routers stay thin: parse, call, map.
"""

from __future__ import annotations

import hmac
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Protocol
from urllib.parse import unquote_to_bytes

import psycopg
import structlog
from eventsourcing.persistence import InterfaceError as EventStoreInterfaceError
from eventsourcing.persistence import OperationalError as EventStoreOperationalError
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from domain.access import (
    AuthenticationFailed,
    KeyToken,
    OwnAccountError,
    Principal,
    Role,
    TenantExistsError,
    UserDisabledError,
    UserExistsError,
)
from domain.activity import NO_TENANT, DeadLetterStateError
from domain.conversation import QuestionPendingError
from domain.document import (
    DocumentNotFailedError,
    FileTooLargeError,
    LegalHoldError,
    UnsupportedMediaTypeError,
)
from domain.errors import ConflictError, DomainError, GoneError, NotFoundError, ValidationError
from domain.usage import (
    BudgetExceededError,
    DocumentQuotaExceededError,
    StorageQuotaExceededError,
)
from infra.causation import caused_by
from infra.ratelimit import Bucket, RateLimiter
from infra.telemetry import AUTH_FAILURES, DEPENDENCY_UP, RATE_LIMITED, REQUEST_LATENCY
from infra.tokens import SessionCheck

log = structlog.get_logger(__name__)


class ErrorBody(BaseModel):
    code: str
    message: str
    request_id: str | None = None
    details: dict[str, Any] | None = Field(
        None, description="Machine-readable particulars (budget_exceeded: which limit, ...)"
    )


class OpenAIError(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str


class OpenAIErrorBody(BaseModel):
    """Errors of the OpenAI-compatible routes, in the shape OpenAI clients read."""

    error: OpenAIError


# Routes that speak the OpenAI protocol answer errors in its shape (same codes).
OPENAI_COMPATIBLE_PATHS = ("/v1/chat/", "/v1/models")
_OPENAI_ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    429: "rate_limit_error",
}


def openai_error(status: int, code: str, message: str) -> dict[str, Any]:
    kind = _OPENAI_ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return OpenAIErrorBody(error=OpenAIError(message=message, type=kind, code=code)).model_dump()


class ApiError(Exception):
    """An error raised by the API layer itself (authentication, waiting, paging)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


class BodyTooLargeError(Exception):
    """The request body grew past the limit while it was being read."""


# The single mapping from domain errors to HTTP statuses (most specific first).
_STATUS_BY_ERROR: tuple[tuple[type[DomainError], int], ...] = (
    (FileTooLargeError, 413),
    (UnsupportedMediaTypeError, 415),
    (ConflictError, 409),
    (TenantExistsError, 409),
    (UserExistsError, 409),
    (UserDisabledError, 409),
    (OwnAccountError, 409),
    (QuestionPendingError, 409),
    (LegalHoldError, 409),
    (DocumentNotFailedError, 409),
    (DeadLetterStateError, 409),
    (BudgetExceededError, 429),
    (StorageQuotaExceededError, 413),
    (DocumentQuotaExceededError, 409),
    (NotFoundError, 404),
    (GoneError, 410),
    (ValidationError, 422),
)

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing, unknown, expired or revoked key"},
    403: {"model": ErrorBody, "description": "The key's role does not allow this"},
    422: {"model": ErrorBody, "description": "Invalid request"},
    503: {
        "model": ErrorBody,
        "description": "The database is not answering (database_unavailable): nothing was"
        " changed; retry after Retry-After",
    },
}
OPENAI_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {**response, "model": OpenAIErrorBody} for status, response in ERROR_RESPONSES.items()
}


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    details: dict[str, Any] | None = None,
) -> JSONResponse:
    if request.url.path.startswith(OPENAI_COMPATIBLE_PATHS):
        return JSONResponse(
            openai_error(status, code, message), status_code=status, headers=headers
        )
    body = ErrorBody(code=code, message=message, request_id=_request_id(request), details=details)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def _status_for(error: DomainError) -> int:
    for error_class, status in _STATUS_BY_ERROR:
        if isinstance(error, error_class):
            return status
    return 400


def install_error_handlers(app: FastAPI) -> None:
    async def on_domain_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DomainError)
        retry_after = getattr(exc, "retry_after_s", None)
        headers = {"Retry-After": str(retry_after)} if retry_after else None
        return error_response(
            request, _status_for(exc), exc.code, exc.message, headers, getattr(exc, "details", None)
        )

    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(request, exc.status, exc.code, exc.message, exc.headers)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', '')}"
            for err in exc.errors()
        )
        return error_response(request, 422, "invalid_request", problems or "Invalid request.")

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        codes = {
            404: "not_found",
            405: "method_not_allowed",
            400: "bad_request",
            413: "file_too_large",
        }
        message = str(exc.detail) if exc.detail else "Request failed."
        return error_response(
            request,
            exc.status_code,
            codes.get(exc.status_code, "http_error"),
            message,
            dict(exc.headers or {}),
        )

    async def on_body_too_large(request: Request, exc: Exception) -> JSONResponse:
        limit = getattr(request.app.state, "max_body_bytes", None)
        return error_response(
            request, 413, "file_too_large", f"The request body exceeds the limit of {limit} bytes."
        )

    async def on_database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        # PostgreSQL refused or dropped the connection, or a lock wait ran out: nothing
        # was committed (a command's events are appended in one transaction), so the
        # client can send it again.
        DEPENDENCY_UP.labels("postgres").set(0)
        log.warning("database_unavailable", path=request.url.path, error=repr(exc)[:300])
        return error_response(
            request,
            503,
            "database_unavailable",
            "The database is not answering; nothing was changed. Try again shortly.",
            {"Retry-After": "5"},
        )

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error", path=request.url.path)
        return error_response(
            request, 500, "internal_error", "An internal error occurred; it was logged."
        )

    for unavailable in (
        psycopg.OperationalError,  # also psycopg_pool.PoolTimeout
        psycopg.InterfaceError,
        EventStoreOperationalError,
        EventStoreInterfaceError,
    ):
        app.add_exception_handler(unavailable, on_database_unavailable)
    app.add_exception_handler(DomainError, on_domain_error)
    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(BodyTooLargeError, on_body_too_large)
    app.add_exception_handler(Exception, on_unexpected)


# ------------------------------------------------------------- middleware


class RequestContextMiddleware:
    """Request id (honouring a sane incoming ``X-Request-ID``), log context, latency metric."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or ()).get(b"x-request-id", b"").decode("latin-1")
        request_id = (
            incoming if 0 < len(incoming) <= 64 and incoming.isprintable() else uuid.uuid4().hex
        )
        scope.setdefault("state", {})["request_id"] = request_id
        user_agent = dict(scope.get("headers") or ()).get(b"user-agent", b"").decode("latin-1")
        client = scope.get("client")
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                present = {name.lower() for name, _ in headers}
                extra: dict[str, str] = scope["state"].get("response_headers") or {}
                for name, value in extra.items():
                    if name.lower().encode() not in present:
                        headers.append((name.lower().encode(), value.encode()))
                for cookie in scope["state"].get("set_cookies") or ():
                    headers.append((b"set-cookie", cookie.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        try:
            with caused_by(
                request_id=request_id,
                client_address=client[0] if client else None,
                user_agent=user_agent,
            ):
                await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            elapsed = time.perf_counter() - started
            REQUEST_LATENCY.labels(scope["method"], path, str(status)).observe(elapsed)
            log.info(
                "http_request",
                method=scope["method"],
                route=path,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
            )


class Utf8RequestMiddleware:
    """Refuses query strings and paths that are not valid UTF-8 (instead of mangling them)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                unquote_to_bytes(scope.get("query_string", b"").decode("latin-1")).decode("utf-8")
                raw_path = scope.get("raw_path")
                if raw_path is not None:
                    unquote_to_bytes(raw_path.decode("latin-1")).decode("utf-8")
            except UnicodeDecodeError:
                body = ErrorBody(
                    code="invalid_utf8",
                    message="The request's path or query string is not valid UTF-8.",
                    request_id=scope.get("state", {}).get("request_id"),
                ).model_dump_json()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 400,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send({"type": "http.response.body", "body": body.encode()})
                return
        await self.app(scope, receive, send)


class BodySizeLimitMiddleware:
    """Refuses request bodies over a limit without reading them into memory."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in {"POST", "PUT", "PATCH"}:
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, send)
            return
        received = 0
        too_large = False
        refused = False

        async def counting_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    raise BodyTooLargeError
            return message

        async def guarded_send(message: Message) -> None:
            # Whatever the app makes of the aborted body (form parsers turn it
            # into a 400), the client is told the truth: the body was too large.
            nonlocal refused
            if not too_large:
                await send(message)
            elif not refused:
                refused = True
                await self._refuse(scope, send)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except BodyTooLargeError:
            if not refused:
                await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        request_id = scope.get("state", {}).get("request_id")
        body = ErrorBody(
            code="file_too_large",
            message=f"The request body exceeds the limit of {self.max_bytes} bytes.",
            request_id=request_id,
        ).model_dump_json()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body.encode()})


# ---------------------------------------------------------- authentication


class Authenticator(Protocol):
    def authenticate_cached(self, credential: str) -> Principal | None: ...

    def authenticate(self, credential: str) -> Principal: ...

    def authenticate_session(self, cookie: str) -> SessionCheck: ...


SESSION_COOKIE = "kf_session"
CSRF_COOKIE = "kf_csrf"
CSRF_HEADER = "x-csrf-token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def session_cookies(token: str, csrf: str, *, max_age_s: int, secure: bool) -> list[str]:
    """``Set-Cookie`` values for a session: the token (HttpOnly) and its CSRF secret, which
    the web app reads and sends back as the ``X-CSRF-Token`` header."""
    tail = f"; Path=/; Max-Age={max(0, max_age_s)}; SameSite=Lax" + ("; Secure" if secure else "")
    return [f"{SESSION_COOKIE}={token}{tail}; HttpOnly", f"{CSRF_COOKIE}={csrf}{tail}"]


def cleared_session_cookies(*, secure: bool) -> list[str]:
    return session_cookies("", "", max_age_s=0, secure=secure)


def set_cookies(request: Request, cookies: Sequence[str]) -> None:
    """Cookies the response will set, whatever it turns out to be (errors too)."""
    request.state.set_cookies = [*getattr(request.state, "set_cookies", []), *cookies]


def _secure_cookies(request: Request) -> bool:
    settings = getattr(request.app.state, "settings", None)
    return getattr(settings, "mode", "development") == "production"


class RateLimits(Protocol):
    """Which buckets a principal's request draws from (None: not limited)."""

    def buckets(self, principal: Principal) -> Sequence[Bucket] | None: ...


def client_address(request: Request) -> str:
    """The peer's address (for audit); behind a proxy, run uvicorn with --proxy-headers."""
    return request.client.host if request.client else "unknown"


def _claimed_identity(credential: str) -> str:
    """Who a refused credential claims to be, for the audit log: never the secret."""
    parsed = KeyToken.parse(credential)
    if parsed is not None:
        return f"key:{parsed.key_id}"
    if credential.count(".") == 2:
        return "jwt"
    return "unrecognised"


async def record_refusal(
    request: Request, *, tenant_id: str, claimed: str, reason: str, status: int
) -> None:
    """Record a refused request in the activity context (throttled per client there).

    The refusal is what the client gets whether or not this works; a record that
    cannot be written is logged as such.
    """
    recorder: Callable[..., object] | None = getattr(request.app.state, "refusal_recorder", None)
    if recorder is None:
        return
    route = getattr(request.scope.get("route"), "path", None) or request.url.path
    try:
        await run_in_threadpool(
            recorder,
            tenant_id=tenant_id,
            claimed=claimed,
            reason=reason,
            status=status,
            route=route[:200],
            client=client_address(request),
        )
    except Exception:
        log.exception("refusal_not_recorded", reason=reason, client=client_address(request))


async def _refuse_authentication(
    request: Request, reason: str, message: str, claimed: str
) -> ApiError:
    AUTH_FAILURES.labels(reason).inc()
    log.warning(
        "auth_failed",
        reason=reason,
        claimed=claimed,
        client=client_address(request),
        method=request.method,
        path=request.url.path,
    )
    await record_refusal(request, tenant_id=NO_TENANT, claimed=claimed, reason=reason, status=401)
    return ApiError(401, "unauthenticated", message, {"WWW-Authenticate": "Bearer"})


def refuse_while_database_unreachable(request: Request) -> None:
    """503 at once while this process knows PostgreSQL is gone (its listener lost it),
    rather than letting the request wait out the event store's retries."""
    reachable: Callable[[], bool] | None = getattr(request.app.state, "database_reachable", None)
    if reachable is not None and not reachable():
        DEPENDENCY_UP.labels("postgres").set(0)
        raise ApiError(
            503,
            "database_unavailable",
            "The database is not answering; nothing was changed. Try again shortly.",
            {"Retry-After": "5"},
        )


async def authenticated(request: Request) -> Principal:
    """The request's principal, after authentication and the rate limit.

    Async so that what is bound to the log context lands in the request's own
    context; the credential check itself runs in the thread pool.
    """
    refuse_while_database_unreachable(request)
    authenticator: Authenticator = request.app.state.authenticator
    header = request.headers.get("authorization", "")
    if not header and request.cookies.get(SESSION_COOKIE):
        return await _session_principal(request, authenticator, request.cookies[SESSION_COOKIE])
    scheme, _, credential = header.partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        raise await _refuse_authentication(
            request,
            "missing",
            "Send an API key or token as 'Authorization: Bearer <credential>'.",
            "none",
        )
    try:
        principal = authenticator.authenticate_cached(credential)
        if principal is None:  # needs the database: off the event loop
            principal = await run_in_threadpool(authenticator.authenticate, credential)
    except AuthenticationFailed as failure:
        raise await _refuse_authentication(
            request, failure.reason, failure.message, _claimed_identity(credential)
        ) from None
    structlog.contextvars.bind_contextvars(tenant_id=principal.tenant_id, actor=principal.actor)
    await _take_rate_limit(request, principal)
    return principal


async def _session_principal(
    request: Request, authenticator: Authenticator, cookie: str
) -> Principal:
    """A person signed in to the web app: the session's events decide, and a request that
    changes anything must carry the session's CSRF secret in ``X-CSRF-Token``."""
    try:
        check = await run_in_threadpool(authenticator.authenticate_session, cookie)
    except AuthenticationFailed as failure:
        set_cookies(request, cleared_session_cookies(secure=_secure_cookies(request)))
        raise await _refuse_authentication(
            request, failure.reason, failure.message, "session"
        ) from None
    principal = check.principal
    structlog.contextvars.bind_contextvars(tenant_id=principal.tenant_id, actor=principal.actor)
    if request.method not in _SAFE_METHODS and not hmac.compare_digest(
        request.headers.get(CSRF_HEADER, "").encode(), check.claims.csrf.encode()
    ):
        AUTH_FAILURES.labels("csrf").inc()
        log.warning("csrf_failed", client=client_address(request), path=request.url.path)
        await record_refusal(
            request,
            tenant_id=principal.tenant_id,
            claimed=principal.actor,
            reason="csrf",
            status=403,
        )
        raise ApiError(
            403,
            "csrf_failed",
            "This request changes something, so it needs the X-CSRF-Token header with the"
            " value of the kf_csrf cookie.",
        )
    if check.renewed is not None:
        remaining = check.session_expires_at or check.renewed.expires_at
        set_cookies(
            request,
            session_cookies(
                check.renewed.token,
                check.claims.csrf,
                max_age_s=int((remaining - datetime.now(UTC)).total_seconds()),
                secure=_secure_cookies(request),
            ),
        )
    await _take_rate_limit(request, principal)
    return principal


async def _take_rate_limit(request: Request, principal: Principal) -> None:
    limiter: RateLimiter | None = request.app.state.rate_limiter
    limits: RateLimits = request.app.state.rate_limits
    buckets = limits.buckets(principal) if limiter is not None else None
    if limiter is None or not buckets:
        return
    if limiter.blocking:
        decision = await run_in_threadpool(limiter.acquire, buckets)
    else:
        decision = limiter.acquire(buckets)
    headers = decision.headers()
    request.state.response_headers = headers
    if not decision.allowed:
        RATE_LIMITED.labels(decision.bucket.partition(":")[0]).inc()
        log.info("rate_limited", bucket=decision.bucket, retry_after_s=decision.retry_after_s)
        raise ApiError(
            429,
            "rate_limited",
            f"Too many requests; retry in {decision.retry_after_s}s.",
            headers,
        )


def require(*roles: Role) -> Callable[[Request, Principal], Awaitable[Principal]]:
    """A principal whose role allows any of ``roles``."""
    needed = " or ".join(r.value for r in roles)

    async def check(
        request: Request, principal: Annotated[Principal, Depends(authenticated)]
    ) -> Principal:
        if not any(principal.role.allows(role) for role in roles):
            AUTH_FAILURES.labels("forbidden").inc()
            log.warning(
                "authorisation_failed",
                needed=needed,
                role=principal.role.value,
                client=client_address(request),
                method=request.method,
                path=request.url.path,
            )
            await record_refusal(
                request,
                tenant_id=principal.tenant_id,
                claimed=principal.actor,
                reason="forbidden",
                status=403,
            )
            raise ApiError(
                403,
                "forbidden",
                f"This needs the {needed} role; the credential has {principal.role.value}.",
            )
        return principal

    return check


Authenticated = Annotated[Principal, Depends(authenticated)]  # any role
Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Editor = Annotated[Principal, Depends(require(Role.EDITOR))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
Auditor = Annotated[Principal, Depends(require(Role.AUDITOR))]
# Usage: analysts (and admins) read the tenant's; viewers and editors their own.
UsageReader = Annotated[Principal, Depends(require(Role.VIEWER, Role.ANALYST))]

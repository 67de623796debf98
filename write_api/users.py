"""People over HTTP (admin only): invite, change role, disable and enable, and a new
one-time set-password link. The lists are the keys read model's (``GET /v1/users``)."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

import structlog
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from commands.access import AccessApp
from commands.base import CommandResult
from domain.access import EMAIL_MAX, Role
from infra.notify import send_invitation
from infra.web import ERROR_RESPONSES, Admin, ErrorBody, client_address
from write_api.deps import Access

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/v1/users", tags=["users"])


class Invite(BaseModel):
    email: str = Field(min_length=3, max_length=EMAIL_MAX)
    role: Role


class ChangeRole(BaseModel):
    role: Role


class LinkOut(BaseModel):
    id: UUID
    position: int = Field(description="Pass as min_position to GET /v1/users.")
    email: str
    role: Role
    link: str = Field(description="The one-time set-password link. Shown only now.")
    link_expires_at: datetime
    emailed: bool = Field(description="Whether the link was also sent by e-mail.")


class Changed(BaseModel):
    id: UUID
    position: int
    changed: bool = Field(description="False when nothing had to change.")

    @classmethod
    def of(cls, result: CommandResult) -> Changed:
        return cls(id=result.id, position=result.position, changed=result.changed)


_ERRORS = {**ERROR_RESPONSES, 404: {"model": ErrorBody}, 409: {"model": ErrorBody}}


def set_password_link(public_url: str, token: str) -> str:
    """The web app's set-password page with the token in the fragment (never sent to a
    server, so not in any access log)."""
    return f"{public_url.rstrip('/')}/ui/set-password#token={token}"


def _public_url(request: Request) -> str:
    configured: str = request.app.state.settings.api.public_url
    return configured or str(request.base_url)


def _mail(request: Request, email: str, link: str, expires_at: datetime, reset: bool) -> bool:
    auth = request.app.state.settings.auth
    if not auth.smtp_host:
        return False
    try:
        send_invitation(
            host=auth.smtp_host,
            port=auth.smtp_port,
            sender=auth.mail_sender,
            to=email,
            link=link,
            expires_at=expires_at.isoformat(timespec="minutes"),
            reset=reset,
        )
    except Exception as exc:  # the link is in the response: nobody is left without one
        log.warning("invitation_not_mailed", error=repr(exc))
        return False
    return True


async def _link_out(
    request: Request,
    access: AccessApp,
    tenant_id: str,
    result: CommandResult,
    token: str,
    expires_at: datetime,
) -> LinkOut:
    """The response for a new link: the person, the link, and whether it went by e-mail (a
    password reset's wording when they have a password already)."""
    user = await run_in_threadpool(access.get_user, tenant_id, result.id)
    link = set_password_link(_public_url(request), token)
    reset = user.password_hash is not None
    emailed = await run_in_threadpool(_mail, request, user.email, link, expires_at, reset)
    return LinkOut(
        id=result.id,
        position=result.position,
        email=user.email,
        role=user.role,
        link=link,
        link_expires_at=expires_at,
        emailed=emailed,
    )


@router.post("", status_code=201, response_model=LinkOut, responses=_ERRORS)
async def invite_user(principal: Admin, access: Access, body: Invite, request: Request) -> LinkOut:
    """Invite a person with a role: the response holds their one-time set-password link
    (also e-mailed when SMTP is configured). 409 ``user_exists`` for a known address."""
    link_ttl = timedelta(seconds=request.app.state.settings.auth.link_ttl_s)
    result, token, expires_at = await run_in_threadpool(
        access.invite_user,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        email=body.email,
        role=body.role,
        link_ttl=link_ttl,
        origin=client_address(request),
    )
    return await _link_out(request, access, principal.tenant_id, result, token, expires_at)


@router.post("/{user_id}/link", response_model=LinkOut, responses=_ERRORS)
async def new_link(principal: Admin, access: Access, user_id: UUID, request: Request) -> LinkOut:
    """A new one-time set-password link (the invitation again, or a password reset);
    earlier links stop working."""
    link_ttl = timedelta(seconds=request.app.state.settings.auth.link_ttl_s)
    result, token, expires_at = await run_in_threadpool(
        access.issue_user_link,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        user_id=user_id,
        link_ttl=link_ttl,
        origin=client_address(request),
    )
    return await _link_out(request, access, principal.tenant_id, result, token, expires_at)


@router.patch("/{user_id}", response_model=Changed, responses=_ERRORS)
def change_role(
    principal: Admin, access: Access, user_id: UUID, body: ChangeRole, request: Request
) -> Changed:
    """Change a person's role: their very next request has it. Not your own."""
    result = access.change_user_role(
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        user_id=user_id,
        role=body.role,
        origin=client_address(request),
    )
    return Changed.of(result)


@router.post("/{user_id}/disable", response_model=Changed, responses=_ERRORS)
def disable_user(principal: Admin, access: Access, user_id: UUID, request: Request) -> Changed:
    """Disable a person: their very next request is refused (401). Not your own account."""
    result = access.disable_user(
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        user_id=user_id,
        origin=client_address(request),
    )
    return Changed.of(result)


@router.post("/{user_id}/enable", response_model=Changed, responses=_ERRORS)
def enable_user(principal: Admin, access: Access, user_id: UUID, request: Request) -> Changed:
    """Enable a disabled person again (they sign in with their password as before)."""
    result = access.enable_user(
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        user_id=user_id,
        origin=client_address(request),
    )
    return Changed.of(result)

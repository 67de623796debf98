"""The effective settings, for an admin to read (``GET /v1/admin/settings``), secrets redacted.

A secret is a field declared ``repr=False`` (passwords, keys, signing secrets): its value
is replaced by whether it is set. A URL's password (``postgresql://user:pw@host``) is
replaced too. Everything else is shown as the running process resolved it from the
defaults, the configuration file and the environment.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from fastapi import APIRouter, Request
from pydantic import BaseModel

from infra.web import ERROR_RESPONSES, Admin

router = APIRouter(prefix="/v1/admin", tags=["operations"])

SET = "•••• (set)"
NOT_SET = "(not set)"


class SettingsOut(BaseModel):
    settings: dict[str, Any]


def _url_without_password(value: str) -> str:
    if "://" not in value or "@" not in value:
        return value
    parts = urlsplit(value)
    if parts.password is None:
        return value
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:{SET}@{host}" if parts.username else f"{SET}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def redacted(value: Any) -> Any:
    """``value`` (a settings model, or what it holds) as JSON-ready data, secrets redacted."""
    if isinstance(value, BaseModel):
        out: dict[str, Any] = {}
        for name, field in type(value).model_fields.items():
            item = getattr(value, name)
            key = field.alias or name
            if field.repr is False:
                out[key] = SET if item else NOT_SET
            else:
                out[key] = redacted(item)
        return out
    if isinstance(value, dict):
        return {str(k): redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redacted(v) for v in value]
    if isinstance(value, str):
        return _url_without_password(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return str(value)


@router.get("/settings", response_model=SettingsOut, responses=ERROR_RESPONSES)
def effective_settings(principal: Admin, request: Request) -> SettingsOut:
    """The settings this API process runs with, every secret redacted (whether it is set
    is shown, never its value)."""
    settings = request.app.state.settings
    data = redacted(settings)
    assert isinstance(data, dict)
    return SettingsOut(settings=data)

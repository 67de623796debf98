"""The access context: tenants and the API keys that act for them.

A ``Tenant`` is an organisation; its id is derived from its name so that two
concurrent creations of one name collide instead of making two tenants. An
``ApiKey`` belongs to exactly one tenant and has a role. Only a SHA-256 digest
of a key's secret is ever stored: the secret is shown once, at issue.

Key tokens look like ``kf_<32 hex key id>_<secret>``: the id lets the server
find the key's events without scanning, the secret proves possession.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from eventsourcing.domain import Aggregate

from domain.errors import DomainError, NotFoundError, ValidationError

TENANT_ID_NAMESPACE = uuid5(NAMESPACE_URL, "https://knowledge-foundry/tenants")
TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
KEY_NAME_MAX = 100
TOKEN_PREFIX = "kf_"  # noqa: S105 - a format marker, not a secret
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_TOKEN = re.compile(r"^kf_([0-9a-f]{32})_([A-Za-z0-9_-]{32,128})$")


class Role(StrEnum):
    """What a key (or a person) may do. ``viewer`` < ``editor`` < ``admin`` each include
    the one before; ``auditor`` reads the audit trail and nothing else, ``analyst`` the
    tenant's usage and cost and nothing else (admins can do both)."""

    VIEWER = "viewer"
    EDITOR = "editor"
    ADMIN = "admin"
    AUDITOR = "auditor"
    ANALYST = "analyst"

    def allows(self, needed: Role) -> bool:
        return needed in _GRANTS[self]


_GRANTS: dict[Role, frozenset[Role]] = {
    Role.VIEWER: frozenset({Role.VIEWER}),
    Role.EDITOR: frozenset({Role.VIEWER, Role.EDITOR}),
    Role.ADMIN: frozenset({Role.VIEWER, Role.EDITOR, Role.ADMIN, Role.AUDITOR, Role.ANALYST}),
    Role.AUDITOR: frozenset({Role.AUDITOR}),
    Role.ANALYST: frozenset({Role.ANALYST}),
}


def normalise_tenant_name(name: str) -> str:
    normalised = name.strip().lower()
    if not TENANT_NAME.match(normalised):
        raise InvalidTenantNameError(
            "A tenant name is 1-63 characters of a-z, 0-9, '.', '_' or '-', "
            "starting with a letter or digit."
        )
    return normalised


@dataclass(frozen=True)
class Principal:
    """Who is making a request: a tenant's key (directly or through a token we
    signed for it) or an external issuer's subject; never a claim in the body."""

    tenant_id: str
    role: Role
    key_id: UUID | None = None
    subject: str = ""  # external tokens: "<issuer>#<sub>"
    via: str = "key"  # key | token | external

    @property
    def actor(self) -> str:
        return f"key:{self.key_id}" if self.key_id is not None else f"jwt:{self.subject}"


class AuthenticationFailed(Exception):  # noqa: N818 - reads as what happened
    """A bearer credential was not accepted; ``reason`` is for logs and metrics."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class Tenant(Aggregate):
    class Event(Aggregate.Event):
        tenant_id: str
        actor: str

    class Created(Event, Aggregate.Created):
        name: str

    def __init__(self, tenant_id: str, name: str) -> None:
        self.tenant_id = tenant_id
        self.name = name

    @staticmethod
    def id_for(name: str) -> UUID:
        return uuid5(TENANT_ID_NAMESPACE, normalise_tenant_name(name))

    @classmethod
    def create(cls, *, name: str, actor: str) -> Tenant:
        normalised = normalise_tenant_name(name)
        tenant_id = cls.id_for(normalised)
        return cls._create(
            cls.Created, id=tenant_id, tenant_id=str(tenant_id), actor=actor, name=normalised
        )


@dataclass(frozen=True)
class KeyToken:
    """A parsed bearer token: which key it names and the secret it presents."""

    key_id: UUID
    secret: str

    @classmethod
    def parse(cls, token: str) -> KeyToken | None:
        match = _TOKEN.match(token)
        if match is None:
            return None
        return cls(key_id=UUID(hex=match.group(1)), secret=match.group(2))

    def render(self) -> str:
        return f"{TOKEN_PREFIX}{self.key_id.hex}_{self.secret}"


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return False
    return True


def hash_secret(secret: str) -> str:
    # Secrets are 256 random bits, so a fast hash is enough: there is nothing
    # to brute-force that a slow hash would protect.
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key_token() -> KeyToken:
    return KeyToken(key_id=uuid4(), secret=secrets.token_urlsafe(32))


class ApiKey(Aggregate):
    class Event(Aggregate.Event):
        tenant_id: str
        actor: str

    class Issued(Event, Aggregate.Created):
        name: str
        role: str
        secret_sha256: str
        expires_at: datetime | None
        # Where the command came from (client address, or cli:<host>); for audit.
        origin: str = ""

    class Revoked(Event):
        origin: str = ""

        def apply(self, aggregate: Any) -> None:
            key: ApiKey = aggregate
            key.revoked_at = self.timestamp

    def __init__(
        self,
        tenant_id: str,
        name: str,
        role: str,
        secret_sha256: str,
        expires_at: datetime | None,
    ) -> None:
        self.tenant_id = tenant_id
        self.name = name
        self.role = Role(role)
        self.secret_sha256 = secret_sha256
        self.expires_at = expires_at
        self.revoked_at: datetime | None = None

    @classmethod
    def issue(
        cls,
        *,
        token: KeyToken,
        tenant_id: str,
        actor: str,
        name: str,
        role: Role,
        expires_at: datetime | None,
        now: datetime,
        origin: str = "",
    ) -> ApiKey:
        name = unicodedata.normalize("NFC", name).strip()
        if not name or len(name) > KEY_NAME_MAX:
            raise InvalidKeyError(f"A key name is 1-{KEY_NAME_MAX} characters.")
        if _CONTROL.search(name) or not _encodable(name):
            raise InvalidKeyError("A key name cannot contain control characters.")
        if expires_at is not None:
            if expires_at.tzinfo is None:
                raise InvalidKeyError("expires_at must include a time zone.")
            if expires_at <= now:
                raise InvalidKeyError("expires_at must be in the future.")
        return cls._create(
            cls.Issued,
            id=token.key_id,
            tenant_id=tenant_id,
            actor=actor,
            name=name,
            role=role.value,
            secret_sha256=hash_secret(token.secret),
            expires_at=expires_at,
            origin=origin,
        )

    def revoke(self, *, actor: str, origin: str = "") -> bool:
        if self.revoked_at is not None:
            return False
        self.trigger_event(self.Revoked, tenant_id=self.tenant_id, actor=actor, origin=origin)
        return True

    def check_usable(self, now: datetime) -> None:
        """Raise ``AuthenticationFailed`` unless the key may be used at ``now``."""
        if self.revoked_at is not None:
            raise AuthenticationFailed("key_revoked", "The key has been revoked.")
        if self.expires_at is not None and now >= self.expires_at:
            raise AuthenticationFailed("key_expired", "The key has expired.")

    def verify(self, secret: str, now: datetime) -> None:
        """Raise ``AuthenticationFailed`` unless ``secret`` is this key's and it is usable."""
        if not hmac.compare_digest(hash_secret(secret), self.secret_sha256):
            raise AuthenticationFailed("wrong_secret", "The key is unknown, expired or revoked.")
        self.check_usable(now)

    def principal(self, via: str = "key") -> Principal:
        return Principal(tenant_id=self.tenant_id, role=self.role, key_id=self.id, via=via)


class TenantNotFoundError(NotFoundError):
    code = "tenant_not_found"


class TenantExistsError(DomainError):
    code = "tenant_exists"


class InvalidTenantNameError(ValidationError):
    code = "invalid_tenant_name"


class ApiKeyNotFoundError(NotFoundError):
    code = "api_key_not_found"


class InvalidKeyError(ValidationError):
    code = "invalid_api_key_request"

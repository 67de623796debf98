"""The access context: tenants, the API keys that act for them, and people.

A ``Tenant`` is an organisation; its id is derived from its name so that two
concurrent creations of one name collide instead of making two tenants. An
``ApiKey`` belongs to exactly one tenant and has a role. Only a SHA-256 digest
of a key's secret is ever stored: the secret is shown once, at issue.

Key tokens look like ``kf_<32 hex key id>_<secret>``: the id lets the server
find the key's events without scanning, the secret proves possession.

A ``User`` is a person who signs in with an e-mail address and a password. Its
id is derived from the address, so an address names one account on this
installation and two concurrent invitations of one address collide. Only an
argon2id hash of the password is kept (made outside the domain); a one-time
set-password link (``kfl_<32 hex user id>_<secret>``) is kept as a digest and
is spent by the password it sets. A ``Session`` is one sign-in: started, then
ended by signing out or by the user being disabled.
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
    via: str = "key"  # key | token | external | session
    user_id: UUID | None = None  # a person signed in (via "session")
    session_id: UUID | None = None

    @property
    def actor(self) -> str:
        if self.key_id is not None:
            return f"key:{self.key_id}"
        if self.user_id is not None:
            return f"user:{self.user_id}"
        return f"jwt:{self.subject}"


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


USER_ID_NAMESPACE = uuid5(NAMESPACE_URL, "https://knowledge-foundry/users")
LINK_PREFIX = "kfl_"
EMAIL_MAX = 254
PASSWORD_MIN = 10
PASSWORD_MAX = 1024
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s.][^@\s]{0,251}$")
_LINK = re.compile(r"^kfl_([0-9a-f]{32})_([A-Za-z0-9_-]{32,128})$")
# Passwords people reach for first; refused whatever their length.
_COMMON_PASSWORDS = frozenset(
    {
        "password123", "password1234", "1234567890", "12345678910", "qwertyuiop",
        "qwerty12345", "iloveyou123", "administrator", "changeme123", "letmein123",
        "welcome123", "passw0rd123", "0123456789", "1q2w3e4r5t", "abcdefghij",
        "knowledgefoundry",
    }
)  # fmt: skip


def normalise_email(email: str) -> str:
    """The address as accounts are keyed: trimmed, NFC, lower case; refused unless plausible."""
    normalised = unicodedata.normalize("NFC", email).strip().lower()
    if (
        len(normalised) > EMAIL_MAX
        or not _EMAIL.match(normalised)
        or _CONTROL.search(normalised)
        or not _encodable(normalised)
    ):
        raise InvalidEmailError("An e-mail address looks like name@example.org.")
    return normalised


def password_weakness(password: str, email: str) -> str | None:
    """Why ``password`` is refused for the account ``email``, or None (NIST SP 800-63B)."""
    if len(password) < PASSWORD_MIN:
        return f"A password is at least {PASSWORD_MIN} characters."
    if len(password) > PASSWORD_MAX:
        return f"A password is at most {PASSWORD_MAX} characters."
    if not _encodable(password):
        return "A password cannot contain unpaired surrogate characters."
    lowered = password.lower()
    local = email.partition("@")[0]
    if lowered in _COMMON_PASSWORDS or len(set(lowered)) < 4:
        return "That password is too easy to guess; choose a longer phrase."
    if len(local) >= 4 and local in lowered:
        return "A password cannot contain your e-mail address."
    return None


@dataclass(frozen=True)
class LinkToken:
    """A one-time set-password link's token: which user it is for and its secret."""

    user_id: UUID
    secret: str

    @classmethod
    def parse(cls, token: str) -> LinkToken | None:
        match = _LINK.match(token.strip())
        if match is None:
            return None
        return cls(user_id=UUID(hex=match.group(1)), secret=match.group(2))

    @classmethod
    def new(cls, user_id: UUID) -> LinkToken:
        return cls(user_id=user_id, secret=secrets.token_urlsafe(32))

    def render(self) -> str:
        return f"{LINK_PREFIX}{self.user_id.hex}_{self.secret}"


class UserStatus(StrEnum):
    INVITED = "invited"  # no password yet
    ACTIVE = "active"
    DISABLED = "disabled"


class User(Aggregate):
    class Event(Aggregate.Event):
        tenant_id: str
        actor: str

    class Invited(Event, Aggregate.Created):
        email: str
        role: str
        link_sha256: str
        link_expires_at: datetime
        origin: str = ""

    class LinkIssued(Event):
        link_sha256: str
        link_expires_at: datetime
        origin: str = ""

        def apply(self, aggregate: Any) -> None:
            user: User = aggregate
            user.link_sha256 = self.link_sha256
            user.link_expires_at = self.link_expires_at

    class PasswordSet(Event):
        password_hash: str  # argon2id, PHC string format
        origin: str = ""

        def apply(self, aggregate: Any) -> None:
            user: User = aggregate
            user.password_hash = self.password_hash
            user.link_sha256 = None  # a link sets one password
            user.link_expires_at = None

    class RoleChanged(Event):
        role: str
        previous: str
        origin: str = ""

        def apply(self, aggregate: Any) -> None:
            user: User = aggregate
            user.role = Role(self.role)

    class Disabled(Event):
        origin: str = ""

        def apply(self, aggregate: Any) -> None:
            user: User = aggregate
            user.disabled = True

    class Enabled(Event):
        origin: str = ""

        def apply(self, aggregate: Any) -> None:
            user: User = aggregate
            user.disabled = False

    def __init__(
        self,
        tenant_id: str,
        email: str,
        role: str,
        link_sha256: str,
        link_expires_at: datetime,
    ) -> None:
        self.tenant_id = tenant_id
        self.email = email
        self.role = Role(role)
        self.link_sha256: str | None = link_sha256
        self.link_expires_at: datetime | None = link_expires_at
        self.password_hash: str | None = None
        self.disabled = False

    @staticmethod
    def id_for(email: str) -> UUID:
        return uuid5(USER_ID_NAMESPACE, normalise_email(email))

    @property
    def status(self) -> UserStatus:
        if self.disabled:
            return UserStatus.DISABLED
        return UserStatus.ACTIVE if self.password_hash else UserStatus.INVITED

    @classmethod
    def invite(
        cls,
        *,
        email: str,
        tenant_id: str,
        actor: str,
        role: Role,
        link: LinkToken,
        link_expires_at: datetime,
        origin: str = "",
    ) -> User:
        normalised = normalise_email(email)
        if link.user_id != cls.id_for(normalised):
            raise ValueError("the link was made for another user")
        return cls._create(
            cls.Invited,
            id=link.user_id,
            tenant_id=tenant_id,
            actor=actor,
            email=normalised,
            role=role.value,
            link_sha256=hash_secret(link.secret),
            link_expires_at=link_expires_at,
            origin=origin,
        )

    def issue_link(
        self, *, link: LinkToken, expires_at: datetime, actor: str, origin: str = ""
    ) -> None:
        """A new set-password link (a reset for an active user); earlier links stop working."""
        if self.disabled:
            raise UserDisabledError("The user is disabled; enable them first.")
        self.trigger_event(
            self.LinkIssued,
            tenant_id=self.tenant_id,
            actor=actor,
            link_sha256=hash_secret(link.secret),
            link_expires_at=expires_at,
            origin=origin,
        )

    def check_link(self, link: LinkToken, now: datetime) -> None:
        """Raise ``InvalidLinkError`` unless ``link`` is this user's live, unspent link."""
        if (
            self.disabled
            or self.link_sha256 is None
            or self.link_expires_at is None
            or not hmac.compare_digest(hash_secret(link.secret), self.link_sha256)
        ):
            raise InvalidLinkError(
                "This link is not valid: it was used already, replaced by a newer one,"
                " or the account is disabled. Ask an administrator for a new link."
            )
        if now >= self.link_expires_at:
            raise InvalidLinkError("This link has expired. Ask an administrator for a new one.")

    def set_password(self, *, password_hash: str, actor: str, origin: str = "") -> None:
        self.trigger_event(
            self.PasswordSet,
            tenant_id=self.tenant_id,
            actor=actor,
            password_hash=password_hash,
            origin=origin,
        )

    def change_role(self, *, role: Role, actor: str, origin: str = "") -> bool:
        if role == self.role:
            return False
        self.trigger_event(
            self.RoleChanged,
            tenant_id=self.tenant_id,
            actor=actor,
            role=role.value,
            previous=self.role.value,
            origin=origin,
        )
        return True

    def disable(self, *, actor: str, origin: str = "") -> bool:
        if self.disabled:
            return False
        self.trigger_event(self.Disabled, tenant_id=self.tenant_id, actor=actor, origin=origin)
        return True

    def enable(self, *, actor: str, origin: str = "") -> bool:
        if not self.disabled:
            return False
        self.trigger_event(self.Enabled, tenant_id=self.tenant_id, actor=actor, origin=origin)
        return True


class Session(Aggregate):
    """One sign-in of a user: what a session cookie's token names."""

    class Event(Aggregate.Event):
        tenant_id: str
        actor: str

    class Started(Event, Aggregate.Created):
        user_id: UUID
        expires_at: datetime  # the latest it can be renewed to
        client: str = ""
        user_agent: str = ""

    class Ended(Event):
        reason: str  # signed_out

        def apply(self, aggregate: Any) -> None:
            session: Session = aggregate
            session.ended_at = self.timestamp

    def __init__(self, tenant_id: str, user_id: UUID, expires_at: datetime) -> None:
        self.tenant_id = tenant_id
        self.user_id = user_id
        self.expires_at = expires_at
        self.ended_at: datetime | None = None

    @classmethod
    def start(
        cls,
        *,
        user: User,
        expires_at: datetime,
        client: str = "",
        user_agent: str = "",
    ) -> Session:
        return cls._create(
            cls.Started,
            id=uuid4(),
            tenant_id=user.tenant_id,
            actor=f"user:{user.id}",
            user_id=user.id,
            expires_at=expires_at,
            client=client[:200],
            user_agent=user_agent[:300],
        )

    def end(self, *, actor: str, reason: str = "signed_out") -> bool:
        if self.ended_at is not None:
            return False
        self.trigger_event(self.Ended, tenant_id=self.tenant_id, actor=actor, reason=reason)
        return True

    def check_live(self, now: datetime) -> None:
        if self.ended_at is not None:
            raise AuthenticationFailed("session_ended", "You have signed out; sign in again.")
        if now >= self.expires_at:
            raise AuthenticationFailed("session_expired", "Your session expired; sign in again.")


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


class InvalidEmailError(ValidationError):
    code = "invalid_email"


class WeakPasswordError(ValidationError):
    code = "weak_password"


class InvalidLinkError(ValidationError):
    code = "invalid_link"


class UserNotFoundError(NotFoundError):
    code = "user_not_found"


class UserExistsError(DomainError):
    code = "user_exists"


class UserDisabledError(DomainError):
    code = "user_disabled"


class OwnAccountError(DomainError):
    code = "own_account"

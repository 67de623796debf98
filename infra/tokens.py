"""Signed, short-lived bearer tokens (JWT): ours, and those of configured external issuers.

``POST /v1/auth/token`` exchanges an API key for one of our tokens. Every
token is verified with its issuer's algorithm pinned (a token cannot choose
its own algorithm, and ``none`` is never accepted), and must carry ``exp``,
``iat``, ``nbf``, ``jti``, ``iss``, ``aud`` and ``sub``; ``iss`` and ``aud``
must match the issuer's configuration.

Signing keys come from the environment or files only. Development mode
without one keeps a random secret in ``<data_dir>/jwt-secret`` (0600) so that
tokens survive restarts; production mode refuses to start with no secret, a
short one, or a well-known placeholder.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import jwt

from domain.access import AuthenticationFailed, Principal, Role, Tenant
from domain.errors import DomainError
from infra.secret_files import create_once

MIN_SECRET_BYTES = 32
SECRET_FILE = "jwt-secret"  # noqa: S105 - a file name
# Values people paste from examples; refused in production whatever their length.
_PLACEHOLDERS = {
    "secret",
    "changeme",
    "change-me",
    "changeit",
    "password",
    "jwt-secret",
    "development",
    "your-256-bit-secret",
    "please-change-this-secret-in-production",
}
_REQUIRED_CLAIMS = ["exp", "iat", "nbf", "jti", "iss", "aud", "sub"]


class ExternalIssuerConfig(Protocol):
    """An identity provider whose tokens are accepted (``auth.external_issuers`` entries)."""

    @property
    def issuer(self) -> str: ...
    @property
    def audience(self) -> str: ...
    @property
    def algorithm(self) -> str: ...
    @property
    def public_key_file(self) -> Path: ...
    @property
    def tenant_claim(self) -> str: ...
    @property
    def role_claim(self) -> str: ...


class TokenConfig(Protocol):
    """How our own tokens are signed and checked (the ``auth`` settings)."""

    @property
    def jwt_algorithm(self) -> str: ...
    @property
    def jwt_secret(self) -> str: ...
    @property
    def jwt_secret_file(self) -> str: ...
    @property
    def jwt_private_key_file(self) -> str: ...
    @property
    def jwt_public_key_file(self) -> str: ...
    @property
    def issuer(self) -> str: ...
    @property
    def audience(self) -> str: ...
    @property
    def token_ttl_s(self) -> int: ...
    @property
    def leeway_s(self) -> int: ...
    @property
    def external_issuers(self) -> Sequence[ExternalIssuerConfig]: ...


class InsecureConfigurationError(RuntimeError):
    """Settings that must not reach production (the product refuses to start)."""


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_at: datetime
    jti: str


@dataclass(frozen=True)
class TokenClaims:
    """What a verified token says about its bearer."""

    issuer: str
    subject: str
    tenant_id: str
    role: Role
    key_id: uuid.UUID | None  # set for our tokens: the key they were exchanged for
    jti: str
    expires_at: datetime
    external: bool


@dataclass(frozen=True)
class SessionClaims:
    """What a verified session cookie's token says: which sign-in, and its CSRF secret."""

    tenant_id: str
    user_id: uuid.UUID
    session_id: uuid.UUID
    csrf: str
    expires_at: datetime
    issued_at: datetime


@dataclass(frozen=True)
class SessionCheck:
    """A session cookie checked: who it is, and a fresh token when the one presented is
    half spent."""

    principal: Principal
    claims: SessionClaims
    renewed: IssuedToken | None
    session_expires_at: datetime | None


@dataclass(frozen=True)
class _Issuer:
    issuer: str
    audience: str
    algorithm: str
    verification_key: Any
    external: ExternalIssuerConfig | None = None


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InsecureConfigurationError(f"cannot read {what} {path}: {exc}") from exc


def _weak_secret_reason(secret: str) -> str | None:
    if len(secret.encode()) < MIN_SECRET_BYTES:
        return f"shorter than {MIN_SECRET_BYTES} bytes"
    if secret.strip().lower() in _PLACEHOLDERS or len(set(secret)) < 8:
        return "a placeholder or low-entropy value"
    return None


def _development_secret(data_dir: Path) -> str:
    path = data_dir.resolve() / SECRET_FILE
    return create_once(path, secrets.token_urlsafe(48).encode() + b"\n").decode().strip()


class TokenService:
    def __init__(
        self,
        *,
        algorithm: str,
        signing_key: Any,
        verification_key: Any,
        issuer: str,
        audience: str,
        ttl_s: int,
        leeway_s: int,
        external: Sequence[ExternalIssuerConfig] = (),
    ) -> None:
        self._algorithm = algorithm
        self._signing_key = signing_key
        self._ttl = timedelta(seconds=ttl_s)
        self._leeway = leeway_s
        self._issuers = {issuer: _Issuer(issuer, audience, algorithm, verification_key)}
        self.issuer = issuer
        self.audience = audience
        for ext in external:
            if ext.issuer in self._issuers:
                raise InsecureConfigurationError(
                    f"external issuer {ext.issuer!r} has the same name as this service's issuer"
                )
            key = _read(str(ext.public_key_file), f"public key of issuer {ext.issuer!r}")
            self._issuers[ext.issuer] = _Issuer(ext.issuer, ext.audience, ext.algorithm, key, ext)

    @classmethod
    def from_settings(cls, auth: TokenConfig, *, data_dir: Path, production: bool) -> TokenService:
        if auth.jwt_algorithm == "RS256":
            if not (auth.jwt_private_key_file and auth.jwt_public_key_file):
                raise InsecureConfigurationError(
                    "auth.jwt_algorithm RS256 needs jwt_private_key_file and jwt_public_key_file"
                )
            signing: Any = _read(auth.jwt_private_key_file, "JWT private key")
            verifying: Any = _read(auth.jwt_public_key_file, "JWT public key")
        else:
            secret = auth.jwt_secret
            if not secret and auth.jwt_secret_file:
                secret = _read(auth.jwt_secret_file, "JWT secret file").decode().strip()
            if not secret:
                if production:
                    raise InsecureConfigurationError(
                        "production mode needs a JWT secret: set KF_JWT_SECRET or"
                        " auth.jwt_secret_file (at least 32 random bytes)"
                    )
                secret = _development_secret(data_dir)
            weakness = _weak_secret_reason(secret)
            if weakness and production:
                raise InsecureConfigurationError(
                    f"refusing to start in production mode: the JWT secret is {weakness}"
                )
            signing = verifying = secret.encode()
        return cls(
            algorithm=auth.jwt_algorithm,
            signing_key=signing,
            verification_key=verifying,
            issuer=auth.issuer,
            audience=auth.audience,
            ttl_s=auth.token_ttl_s,
            leeway_s=auth.leeway_s,
            external=auth.external_issuers,
        )

    # ----------------------------------------------------------------- issuing

    def issue(
        self, *, tenant_id: str, role: Role, key_id: uuid.UUID, not_after: datetime | None
    ) -> IssuedToken:
        """A token for a key; it never outlives the key's own expiry."""
        now = datetime.now(UTC)
        expires_at = now + self._ttl
        if not_after is not None:
            expires_at = min(expires_at, not_after)
        jti = uuid.uuid4().hex
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": f"key:{key_id}",
            "iat": now,
            "nbf": now,
            "exp": expires_at,
            "jti": jti,
            "kf_tenant": tenant_id,
            "kf_role": role.value,
            "kf_key": str(key_id),
        }
        token = jwt.encode(claims, self._signing_key, algorithm=self._algorithm)
        return IssuedToken(token=token, expires_at=expires_at, jti=jti)

    @property
    def session_audience(self) -> str:
        # Its own audience: a session's token is refused as a bearer credential, and a
        # bearer token as a session (a cookie is sent by the browser on its own; a bearer
        # header is not, which is why only sessions need the CSRF check).
        return f"{self.audience}#session"

    def issue_session(
        self,
        *,
        tenant_id: str,
        user_id: uuid.UUID,
        session_id: uuid.UUID,
        csrf: str,
        ttl_s: int,
        not_after: datetime,
    ) -> IssuedToken:
        """A session cookie's token: short-lived, renewed while in use, never past ``not_after``."""
        now = datetime.now(UTC)
        expires_at = min(now + timedelta(seconds=ttl_s), not_after)
        jti = uuid.uuid4().hex
        claims = {
            "iss": self.issuer,
            "aud": self.session_audience,
            "sub": f"user:{user_id}",
            "iat": now,
            "nbf": now,
            "exp": expires_at,
            "jti": jti,
            "kf_tenant": tenant_id,
            "kf_session": str(session_id),
            "kf_csrf": csrf,
        }
        token = jwt.encode(claims, self._signing_key, algorithm=self._algorithm)
        return IssuedToken(token=token, expires_at=expires_at, jti=jti)

    def verify_session(self, token: str) -> SessionClaims:
        """The claims of a session token we issued; raises ``AuthenticationFailed``."""
        own = self._issuers[self.issuer]
        try:
            claims = jwt.decode(
                token,
                own.verification_key,
                algorithms=[own.algorithm],
                audience=self.session_audience,
                issuer=self.issuer,
                leeway=self._leeway,
                options={"require": _REQUIRED_CLAIMS},
            )
            return SessionClaims(
                tenant_id=str(uuid.UUID(str(claims["kf_tenant"]))),
                user_id=uuid.UUID(str(claims["sub"]).removeprefix("user:")),
                session_id=uuid.UUID(str(claims["kf_session"])),
                csrf=str(claims["kf_csrf"]),
                expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
                issued_at=datetime.fromtimestamp(int(claims["iat"]), UTC),
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationFailed(
                "session_expired", "Your session expired; sign in again."
            ) from None
        except (jwt.InvalidTokenError, KeyError, ValueError, TypeError):
            raise AuthenticationFailed(
                "invalid_session", "The session cookie is not valid; sign in again."
            ) from None

    # --------------------------------------------------------------- verifying

    def verify(self, token: str) -> TokenClaims:
        """The verified claims of ``token``; raises ``AuthenticationFailed`` otherwise."""
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            raise AuthenticationFailed("malformed_token", "The token is not a JWT.") from None
        issuer = self._issuers.get(str(unverified.get("iss", "")))
        if issuer is None:
            raise AuthenticationFailed("unknown_issuer", "The token's issuer is not trusted.")
        try:
            claims = jwt.decode(
                token,
                issuer.verification_key,
                algorithms=[issuer.algorithm],
                audience=issuer.audience,
                issuer=issuer.issuer,
                leeway=self._leeway,
                options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationFailed("token_expired", "The token has expired.") from None
        except jwt.InvalidAudienceError:
            raise AuthenticationFailed(
                "wrong_audience", "The token is not meant for this API."
            ) from None
        except jwt.ImmatureSignatureError:
            raise AuthenticationFailed(
                "token_not_yet_valid", "The token is not valid yet."
            ) from None
        except jwt.InvalidAlgorithmError:
            raise AuthenticationFailed(
                "algorithm_not_allowed", "The token's algorithm is not accepted."
            ) from None
        except jwt.InvalidSignatureError:
            raise AuthenticationFailed(
                "bad_signature", "The token's signature is invalid."
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthenticationFailed(
                "missing_claim", f"The token lacks the {exc.claim!r} claim."
            ) from None
        except jwt.InvalidTokenError:
            raise AuthenticationFailed("invalid_token", "The token is invalid.") from None
        return self._claims(issuer, claims)

    def _claims(self, issuer: _Issuer, claims: dict[str, Any]) -> TokenClaims:
        expires_at = datetime.fromtimestamp(int(claims["exp"]), UTC)
        try:
            if issuer.external is None:
                return TokenClaims(
                    issuer=issuer.issuer,
                    subject=str(claims["sub"]),
                    tenant_id=str(uuid.UUID(str(claims["kf_tenant"]))),
                    role=Role(claims["kf_role"]),
                    key_id=uuid.UUID(str(claims["kf_key"])),
                    jti=str(claims["jti"]),
                    expires_at=expires_at,
                    external=False,
                )
            ext = issuer.external
            return TokenClaims(
                issuer=issuer.issuer,
                subject=str(claims["sub"]),
                tenant_id=str(Tenant.id_for(str(claims[ext.tenant_claim]))),
                role=Role(claims[ext.role_claim]),
                key_id=None,
                jti=str(claims["jti"]),
                expires_at=expires_at,
                external=True,
            )
        except (KeyError, ValueError, TypeError, DomainError) as exc:
            raise AuthenticationFailed(
                "invalid_claims", f"The token's tenant or role claim is missing or invalid ({exc})."
            ) from None

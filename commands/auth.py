"""Who is calling: API keys and signed tokens as ``Authorization: Bearer``, and people
signed in to the web app by a session cookie.

An API key (``kf_<id>_<secret>``) is checked against its event-sourced
``ApiKey``. One of our tokens is checked for signature and claims and then
against the key it was exchanged for, so revoking the key ends its tokens too,
on the very next request. An external issuer's token names a tenant and a role
in its claims; the tenant must exist here. A session cookie's token is checked
for signature and expiry and then against its ``Session`` and ``User`` events:
signing out or disabling the user ends it on the very next request, and the
role is the user's role now.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from commands.access import AccessApp
from domain.access import TOKEN_PREFIX, AuthenticationFailed, Principal, Session, User
from infra.tokens import IssuedToken, SessionCheck, TokenService


@dataclass(frozen=True)
class SignedIn:
    """A session's cookie values: the token (HttpOnly) and the CSRF secret (readable)."""

    user: User
    session_id: UUID
    token: IssuedToken
    csrf: str
    session_expires_at: datetime


class Authenticator:
    def __init__(
        self,
        access: AccessApp,
        tokens: TokenService,
        *,
        session_idle_s: int = 1800,
        session_max_s: int = 43_200,
    ) -> None:
        self._access = access
        self.tokens = tokens
        self.session_idle_s = session_idle_s
        self.session_max_s = session_max_s

    def authenticate_cached(self, credential: str) -> Principal | None:
        """The principal when it can be decided without I/O (a cached API key), else None.

        Lets the API skip a thread-pool hop on the common path; raises
        ``AuthenticationFailed`` like ``authenticate`` when the answer is no.
        """
        if credential.startswith(TOKEN_PREFIX):
            return self._access.authenticate_cached(credential)
        return None

    def authenticate(self, credential: str) -> Principal:
        """The principal behind a bearer credential; raises ``AuthenticationFailed``."""
        if credential.startswith(TOKEN_PREFIX):
            return self._access.authenticate(credential)
        if credential.count(".") != 2:
            raise AuthenticationFailed(
                "malformed_credential", "The bearer credential is neither an API key nor a JWT."
            )
        claims = self.tokens.verify(credential)
        if claims.key_id is not None:
            principal = self._access.key_principal(claims.key_id, via="token")
            if principal.tenant_id != claims.tenant_id:
                raise AuthenticationFailed("invalid_claims", "The token's tenant is not its key's.")
            return principal
        if not self._access.tenant_exists(UUID(claims.tenant_id)):
            raise AuthenticationFailed("unknown_tenant", "The token names an unknown tenant.")
        return Principal(
            tenant_id=claims.tenant_id,
            role=claims.role,
            subject=f"{claims.issuer}#{claims.subject}",
            via="external",
        )

    def exchange(self, principal: Principal) -> IssuedToken:
        """A short-lived token for the key ``principal`` authenticated with (not a token)."""
        if principal.via != "key" or principal.key_id is None:
            raise AuthenticationFailed(
                "api_key_required", "Only an API key can be exchanged for a token."
            )
        key = self._access.get_api_key(principal.tenant_id, principal.key_id)
        return self.tokens.issue(
            tenant_id=principal.tenant_id,
            role=principal.role,
            key_id=principal.key_id,
            not_after=key.expires_at,
        )

    # ---------------------------------------------------------------- sessions

    def sign_in(self, email: str, password: str, *, client: str, user_agent: str) -> SignedIn:
        """Check the address and password and start a session; raises ``AuthenticationFailed``."""
        user, session = self._access.sign_in(
            email=email,
            password=password,
            lifetime=timedelta(seconds=self.session_max_s),
            client=client,
            user_agent=user_agent,
        )
        return self._signed_in(user, session)

    def signed_in_after_password(self, user: User, *, client: str, user_agent: str) -> SignedIn:
        """The session that setting a password from a link starts."""
        session = self._access.start_session(
            user,
            lifetime=timedelta(seconds=self.session_max_s),
            client=client,
            user_agent=user_agent,
        )
        return self._signed_in(user, session)

    def _signed_in(self, user: User, session: Session) -> SignedIn:
        csrf = secrets.token_urlsafe(24)
        token = self.tokens.issue_session(
            tenant_id=user.tenant_id,
            user_id=user.id,
            session_id=session.id,
            csrf=csrf,
            ttl_s=self.session_idle_s,
            not_after=session.expires_at,
        )
        return SignedIn(user, session.id, token, csrf, session.expires_at)

    def authenticate_session(self, cookie: str) -> SessionCheck:
        """The principal behind a session cookie (renewing a half-spent token)."""
        claims = self.tokens.verify_session(cookie)
        principal = self._access.session_principal(
            tenant_id=claims.tenant_id, user_id=claims.user_id, session_id=claims.session_id
        )
        renewed: IssuedToken | None = None
        session = self._access.session_cached(claims.session_id)
        session_expires_at = session.expires_at if session is not None else None
        now = datetime.now(UTC)
        if (claims.expires_at - now).total_seconds() < self.session_idle_s / 2:
            not_after = session_expires_at or claims.expires_at
            if not_after > claims.expires_at:
                renewed = self.tokens.issue_session(
                    tenant_id=claims.tenant_id,
                    user_id=claims.user_id,
                    session_id=claims.session_id,
                    csrf=claims.csrf,
                    ttl_s=self.session_idle_s,
                    not_after=not_after,
                )
        return SessionCheck(principal, claims, renewed, session_expires_at)

    def sign_out(self, principal: Principal) -> bool:
        if principal.session_id is None:
            return False
        return self._access.sign_out(session_id=principal.session_id, actor=principal.actor)

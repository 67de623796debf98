"""Who is calling: API keys and signed tokens, both as ``Authorization: Bearer``.

An API key (``kf_<id>_<secret>``) is checked against its event-sourced
``ApiKey``. One of our tokens is checked for signature and claims and then
against the key it was exchanged for, so revoking the key ends its tokens too,
on the very next request. An external issuer's token names a tenant and a role
in its claims; the tenant must exist here.
"""

from __future__ import annotations

from uuid import UUID

from commands.access import AccessApp
from domain.access import TOKEN_PREFIX, AuthenticationFailed, Principal
from infra.tokens import IssuedToken, TokenService


class Authenticator:
    def __init__(self, access: AccessApp, tokens: TokenService) -> None:
        self._access = access
        self.tokens = tokens

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

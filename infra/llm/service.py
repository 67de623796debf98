"""What answering uses of the model providers: the router, and who may use what.

Prices are not here: each tenant's price book (the usage context) charges answers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from infra.llm.router import Router


@dataclass(frozen=True)
class Llm:
    router: Router
    default_model: str
    _allowed: Mapping[str, list[str]]
    _default_allowed: list[str]

    def allowed_providers(self, tenant_name: str) -> list[str] | None:
        """Providers a tenant's passages may go to (None: every configured one)."""
        allowed = self._allowed.get(tenant_name, self._default_allowed)
        return list(allowed) if allowed else None

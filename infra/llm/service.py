"""What answering uses of the model providers: the router, the price table, who may use what."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from infra.llm.pricing import PriceTable
from infra.llm.router import Router


@dataclass(frozen=True)
class Llm:
    router: Router
    prices: PriceTable
    default_model: str
    _allowed: Mapping[str, list[str]]
    _default_allowed: list[str]

    def allowed_providers(self, tenant_name: str) -> list[str] | None:
        """Providers a tenant's passages may go to (None: every configured one)."""
        allowed = self._allowed.get(tenant_name, self._default_allowed)
        return list(allowed) if allowed else None

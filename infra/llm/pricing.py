"""Cost from a price table: per model, per million input and per million output tokens.

A model the table does not know is not priced at zero: its cost is None and
the caller records it as unpriced, so usage reports can flag it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from infra.llm.base import Usage

_MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class Price:
    input_per_million: Decimal
    output_per_million: Decimal


class PriceTable:
    """Exact model names first, then glob patterns (``gpt-4o-mini*``) in table order."""

    def __init__(self, prices: Mapping[str, Price]) -> None:
        self._prices = dict(prices)

    def price(self, model: str) -> Price | None:
        if model in self._prices:
            return self._prices[model]
        for pattern, price in self._prices.items():
            if fnmatch.fnmatchcase(model, pattern):
                return price
        return None

    def cost_usd(self, model: str, usage: Usage) -> Decimal | None:
        price = self.price(model)
        if price is None:
            return None
        cost = (
            Decimal(usage.input_tokens) * price.input_per_million
            + Decimal(usage.output_tokens) * price.output_per_million
        ) / _MILLION
        return cost.quantize(Decimal("0.00000001"))

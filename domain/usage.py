"""The usage context: each tenant's price book, and re-pricing runs (later: budgets).

A ``PriceBook`` is one aggregate per tenant. It opens with the prices the
operator configured (``llm.prices``) when the tenant first needs it; after that
every change is a ``PriceSet`` event with its actor and reason. Its *version*
is the aggregate's version: version 1 is the book as opened, each change adds
one, and the book at any version can be rebuilt from its events, so a re-pricing
run names exactly the prices it used.

A price is for a provider (or ``*``: any provider) and a model name or glob
pattern (``claude-3-5-haiku*``), and is in force from its ``effective_from``
until a later entry for the same provider and model takes over. Setting a
price for an ``effective_from`` that already has one replaces it (a correction).
A model nothing matches has no price: its answers are counted as unpriced,
never priced at 0.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4, uuid5

from eventsourcing.domain import Aggregate

from domain.errors import ValidationError

PRICE_BOOK_NAMESPACE = UUID("7d0f7e8e-3c1b-5b61-9d7e-2f3a4b5c6d70")
ANY_PROVIDER = "*"
CURRENCIES = ("USD",)
MAX_PRICE_PER_MILLION = Decimal(1_000_000)
_NAME = re.compile(r"^[A-Za-z0-9*?._:/@+-]{1,200}$")
_MILLION = Decimal(1_000_000)
# The configured prices a book opens with apply to all earlier answers too.
SINCE_EVER = datetime(1970, 1, 1, tzinfo=UTC)


class InvalidPriceError(ValidationError):
    code = "invalid_price"


@dataclass(frozen=True)
class TokenPrice:
    """Prices per million tokens, in ``currency``."""

    input_per_million: Decimal
    output_per_million: Decimal
    cached_input_per_million: Decimal | None = None  # None: cached input costs as input
    currency: str = "USD"

    def cost(self, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0) -> Decimal:
        """Exact cost of an answer's tokens (``cached_input_tokens`` are among the input)."""
        cached = min(max(cached_input_tokens, 0), input_tokens)
        cached_price = (
            self.input_per_million
            if self.cached_input_per_million is None
            else self.cached_input_per_million
        )
        return (
            Decimal(input_tokens - cached) * self.input_per_million
            + Decimal(cached) * cached_price
            + Decimal(output_tokens) * self.output_per_million
        ) / _MILLION

    def as_dict(self) -> dict[str, Any]:
        return {
            "input_per_million": str(self.input_per_million),
            "output_per_million": str(self.output_per_million),
            "cached_input_per_million": None
            if self.cached_input_per_million is None
            else str(self.cached_input_per_million),
            "currency": self.currency,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenPrice:
        cached = data.get("cached_input_per_million")
        return cls(
            Decimal(data["input_per_million"]),
            Decimal(data["output_per_million"]),
            None if cached is None else Decimal(cached),
            data.get("currency", "USD"),
        )


@dataclass(frozen=True)
class PriceEntry:
    provider: str
    model: str
    effective_from: datetime
    price: TokenPrice
    version: int  # the price book version that set it


def _checked_price(price: TokenPrice) -> TokenPrice:
    if price.currency not in CURRENCIES:
        raise InvalidPriceError(
            f"Currency {price.currency!r} is not supported; prices are in "
            + ", ".join(CURRENCIES)
            + "."
        )
    figures = [price.input_per_million, price.output_per_million]
    if price.cached_input_per_million is not None:
        figures.append(price.cached_input_per_million)
    for figure in figures:
        if not figure.is_finite() or figure < 0 or figure > MAX_PRICE_PER_MILLION:
            raise InvalidPriceError(
                f"A price per million tokens is a number from 0 to {MAX_PRICE_PER_MILLION}."
            )
        if figure.as_tuple().exponent < -12:  # type: ignore[operator]
            raise InvalidPriceError("A price has at most 12 decimal places.")
    return price


def _checked_name(kind: str, value: str) -> str:
    if not _NAME.match(value):
        raise InvalidPriceError(
            f"A {kind} is 1-200 characters of letters, digits and * ? . _ : / @ + -."
        )
    return value


def _matches(pattern: str, name: str) -> bool:
    return pattern == name or fnmatch.fnmatchcase(name, pattern)


class PriceBook(Aggregate):
    class Event(Aggregate.Event):
        tenant_id: str
        actor: str

    class Opened(Event, Aggregate.Created):
        # The operator's configured prices when the tenant first needed its book.
        prices: list[dict[str, Any]]

    class PriceSet(Event):
        provider: str
        model: str
        effective_from: datetime
        price: dict[str, Any]
        reason: str

        def apply(self, aggregate: Any) -> None:
            book: PriceBook = aggregate
            book._put(
                PriceEntry(
                    self.provider,
                    self.model,
                    self.effective_from,
                    TokenPrice.from_dict(self.price),
                    self.originator_version,
                )
            )

    def __init__(self, tenant_id: str, prices: list[dict[str, Any]]) -> None:
        self.tenant_id = tenant_id
        self.entries: list[PriceEntry] = []
        for entry in prices:
            self._put(
                PriceEntry(
                    entry["provider"],
                    entry["model"],
                    datetime.fromisoformat(entry["effective_from"]),
                    TokenPrice.from_dict(entry["price"]),
                    1,
                )
            )

    def _put(self, entry: PriceEntry) -> None:
        self.entries = [
            e
            for e in self.entries
            if (e.provider, e.model, e.effective_from)
            != (entry.provider, entry.model, entry.effective_from)
        ]
        self.entries.append(entry)

    @staticmethod
    def id_for(tenant_id: str) -> UUID:
        return uuid5(PRICE_BOOK_NAMESPACE, tenant_id)

    @classmethod
    def open(
        cls, *, tenant_id: str, actor: str, configured: list[tuple[str, str, TokenPrice]]
    ) -> PriceBook:
        """The tenant's book, with ``configured`` (provider, model, price) in force since ever."""
        prices = [
            {
                "provider": _checked_name("provider", provider),
                "model": _checked_name("model", model),
                "effective_from": SINCE_EVER.isoformat(),
                "price": _checked_price(price).as_dict(),
            }
            for provider, model, price in configured
        ]
        return cls._create(
            cls.Opened, id=cls.id_for(tenant_id), tenant_id=tenant_id, actor=actor, prices=prices
        )

    def set_price(
        self,
        *,
        actor: str,
        provider: str,
        model: str,
        price: TokenPrice,
        effective_from: datetime,
        reason: str = "",
    ) -> None:
        if effective_from.tzinfo is None:
            raise InvalidPriceError("effective_from needs a time zone (e.g. Z for UTC).")
        if len(reason) > 500:
            raise InvalidPriceError("A reason is at most 500 characters.")
        self.trigger_event(
            self.PriceSet,
            tenant_id=self.tenant_id,
            actor=actor,
            provider=_checked_name("provider", provider),
            model=_checked_name("model", model),
            effective_from=effective_from,
            price=_checked_price(price).as_dict(),
            reason=reason,
        )

    # ------------------------------------------------------------------ reading

    def price(self, provider: str, model: str, at: datetime) -> PriceEntry | None:
        """The entry in force at ``at`` for this provider's model: the most specific match
        (this provider over any; the exact name over a pattern), then the latest
        ``effective_from`` not after ``at``, then the one set last."""
        candidates = [
            e
            for e in self.entries
            if e.provider in (provider, ANY_PROVIDER)
            and _matches(e.model, model)
            and e.effective_from <= at
        ]
        if not candidates:
            return None
        ranked = max(
            enumerate(candidates),
            key=lambda ie: (
                ie[1].provider != ANY_PROVIDER,
                ie[1].model == model,
                ie[1].effective_from,
                ie[0],
            ),
        )
        return ranked[1]


class Repricing(Aggregate):
    """A re-pricing run: every answer up to ``through`` (a conversations position) priced
    at the tenant's price book as it was at ``price_book_version``, beside what each was
    charged. One aggregate per run; the figures are the usage read model's."""

    class Event(Aggregate.Event):
        tenant_id: str
        actor: str

    class Requested(Event, Aggregate.Created):
        price_book_version: int
        through: int  # conversations position: the answers recorded up to here
        reason: str

    def __init__(self, tenant_id: str, price_book_version: int, through: int) -> None:
        self.tenant_id = tenant_id
        self.price_book_version = price_book_version
        self.through = through

    @classmethod
    def request(
        cls, *, tenant_id: str, actor: str, price_book_version: int, through: int, reason: str
    ) -> Repricing:
        if price_book_version < 1:
            raise InvalidPriceError("A price book version is 1 or more.")
        if len(reason) > 500:
            raise InvalidPriceError("A reason is at most 500 characters.")
        return cls._create(
            cls.Requested,
            id=uuid4(),
            tenant_id=tenant_id,
            actor=actor,
            price_book_version=price_book_version,
            through=max(through, 0),
            reason=reason,
        )

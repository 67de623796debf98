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
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from uuid import UUID, uuid4, uuid5

from eventsourcing.domain import Aggregate

from domain.errors import DomainError, ValidationError

PRICE_BOOK_NAMESPACE = UUID("7d0f7e8e-3c1b-5b61-9d7e-2f3a4b5c6d70")
ANY_PROVIDER = "*"
CURRENCIES = ("USD",)
MAX_PRICE_PER_MILLION = Decimal(1_000_000)
# What an answer is charged: its exact cost rounded to a hundred-millionth of a dollar
# (half up, as PostgreSQL's round() does, so re-pricing in SQL rounds the same way).
CHARGE_QUANTUM = Decimal("0.00000001")


def charged(cost: Decimal) -> Decimal:
    return cost.quantize(CHARGE_QUANTUM, rounding=ROUND_HALF_UP)


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


# ------------------------------------------------------------------ budgets

BUDGET_METRICS = ("tokens", "cost_usd")  # of answers: input + output tokens; cost as charged
BUDGET_PERIODS = ("day", "month")
# Quotas: what a tenant may keep stored (documents not deleted, and their bytes).
QUOTA_METRICS = ("documents", "bytes")
QUOTA_PERIOD = "total"
BUDGET_NAMESPACE = UUID("5f3e2d1c-0b9a-5876-9e5d-4c3b2a190817")
ALERT_THRESHOLDS = (80, 100)  # per cent of a limit


class InvalidBudgetError(ValidationError):
    code = "invalid_budget"


@dataclass(frozen=True)
class Limit:
    """A budget: answers' ``metric`` per ``period`` for the tenant (``scope`` "tenant") or one
    of its keys (``scope`` "key:<id>"). Hard: a question that could cross it is refused
    before any provider is asked; soft: it is answered and the crossing is reported."""

    scope: str
    metric: str
    period: str
    amount: Decimal
    hard: bool = True

    @property
    def name(self) -> str:
        return f"{self.scope}/{self.metric}/{self.period}"


def period_bounds(period: str, at: datetime) -> tuple[datetime, datetime]:
    """The UTC day or calendar month holding ``at``: its start and the next one's (a
    quota's ``total`` never resets: since ever, to never)."""
    if period == QUOTA_PERIOD:
        return SINCE_EVER, datetime.max.replace(tzinfo=UTC)
    at = at.astimezone(UTC)
    if period == "day":
        start = at.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    start = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = (start + timedelta(days=32)).replace(day=1)
    return start, following


def within_limit(limit: Decimal, used: Decimal, reserved: Decimal, estimate: Decimal) -> bool:
    """The decision, from its inputs alone: may a request that could cost ``estimate`` go on,
    with ``used`` spent and ``reserved`` held by requests in flight? Replaying a recorded
    refusal's inputs through this gives the same answer."""
    return used + reserved + estimate <= limit


def _checked_limit(limit: Limit) -> Limit:
    if limit.metric in QUOTA_METRICS:
        if limit.period != QUOTA_PERIOD or limit.scope != "tenant":
            raise InvalidBudgetError(
                f"A quota on {limit.metric} is the tenant's, with period {QUOTA_PERIOD!r}."
            )
    elif limit.metric not in BUDGET_METRICS:
        raise InvalidBudgetError(
            f"A budget is on {' or '.join(BUDGET_METRICS)}; a quota on"
            f" {' or '.join(QUOTA_METRICS)}."
        )
    elif limit.period not in BUDGET_PERIODS:
        raise InvalidBudgetError(f"A budget's period is {' or '.join(BUDGET_PERIODS)}.")
    if limit.scope != "tenant" and not re.fullmatch(r"key:[0-9a-f-]{36}", limit.scope):
        raise InvalidBudgetError('A budget is for the "tenant" or one "key:<key id>".')
    if not limit.amount.is_finite() or limit.amount < 0 or limit.amount > Decimal(10) ** 15:
        raise InvalidBudgetError("A budget is a number from 0 to 10^15.")
    if limit.metric != "cost_usd" and limit.amount != limit.amount.to_integral_value():
        raise InvalidBudgetError(f"A limit on {limit.metric} is a whole number.")
    return limit


class Budgets(Aggregate):
    """A tenant's budgets (one aggregate per tenant): set and removed by admins."""

    class Event(Aggregate.Event):
        tenant_id: str
        actor: str

    class Opened(Event, Aggregate.Created):
        pass

    class LimitSet(Event):
        scope: str
        metric: str
        period: str
        amount: str
        hard: bool
        reason: str

        def apply(self, aggregate: Any) -> None:
            budgets: Budgets = aggregate
            limit = Limit(self.scope, self.metric, self.period, Decimal(self.amount), self.hard)
            budgets.limits[limit.name] = limit

    class LimitRemoved(Event):
        scope: str
        metric: str
        period: str
        reason: str

        def apply(self, aggregate: Any) -> None:
            budgets: Budgets = aggregate
            budgets.limits.pop(f"{self.scope}/{self.metric}/{self.period}", None)

    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self.limits: dict[str, Limit] = {}

    @staticmethod
    def id_for(tenant_id: str) -> UUID:
        return uuid5(BUDGET_NAMESPACE, tenant_id)

    @classmethod
    def open(cls, *, tenant_id: str, actor: str) -> Budgets:
        return cls._create(cls.Opened, id=cls.id_for(tenant_id), tenant_id=tenant_id, actor=actor)

    def set_limit(self, *, actor: str, limit: Limit, reason: str = "") -> None:
        limit = _checked_limit(limit)
        if len(reason) > 500:
            raise InvalidBudgetError("A reason is at most 500 characters.")
        self.trigger_event(
            self.LimitSet, tenant_id=self.tenant_id, actor=actor, scope=limit.scope,
            metric=limit.metric, period=limit.period, amount=str(limit.amount),
            hard=limit.hard, reason=reason,
        )  # fmt: skip

    def remove_limit(self, *, actor: str, scope: str, metric: str, period: str,
                     reason: str = "") -> bool:  # fmt: skip
        if f"{scope}/{metric}/{period}" not in self.limits:
            return False
        self.trigger_event(
            self.LimitRemoved, tenant_id=self.tenant_id, actor=actor, scope=scope,
            metric=metric, period=period, reason=reason,
        )  # fmt: skip
        return True

    def applying_to(self, actor: str) -> list[Limit]:
        """The budgets a question by ``actor`` counts against: the tenant's, and its key's."""
        return [
            lim
            for lim in self.limits.values()
            if lim.scope in ("tenant", actor) and lim.metric in BUDGET_METRICS
        ]

    def quotas(self) -> list[Limit]:
        """The tenant's quotas on what it keeps stored."""
        return [lim for lim in self.limits.values() if lim.metric in QUOTA_METRICS]


class BudgetRefusal(Aggregate):
    """A question refused by a hard budget, with every input of the decision (one small
    aggregate per refusal: refusals under load never contend)."""

    class Event(Aggregate.Event):
        tenant_id: str
        actor: str

    class Recorded(Event, Aggregate.Created):
        budget: str  # scope/metric/period
        limit: str
        used: str
        reserved: str
        estimate: str
        period_start: datetime
        resets_at: datetime

    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id

    @classmethod
    def record(cls, *, tenant_id: str, actor: str, budget: str, limit: Decimal, used: Decimal,
               reserved: Decimal, estimate: Decimal, period_start: datetime,
               resets_at: datetime) -> BudgetRefusal:  # fmt: skip
        return cls._create(
            cls.Recorded, id=uuid4(), tenant_id=tenant_id, actor=actor, budget=budget,
            limit=str(limit), used=str(used), reserved=str(reserved), estimate=str(estimate),
            period_start=period_start, resets_at=resets_at,
        )  # fmt: skip


class BudgetAlert(Aggregate):
    """A budget crossed ``threshold`` per cent in a period: exactly one per budget, threshold
    and period, because its id is made of them (a second creation conflicts)."""

    class Event(Aggregate.Event):
        tenant_id: str
        actor: str

    class Raised(Event, Aggregate.Created):
        budget: str
        threshold: int
        period_start: datetime
        limit: str
        used: str

    class Delivered(Event):
        channel: str  # webhook:<url> or email:<recipients>
        attempts: int
        detail: str  # the receiver's answer (an HTTP status, the SMTP reply)

        def apply(self, aggregate: Any) -> None:
            alert: BudgetAlert = aggregate
            alert.done[self.channel] = "delivered"

    class DeliveryFailed(Event):
        channel: str
        attempts: int
        error: str

        def apply(self, aggregate: Any) -> None:
            alert: BudgetAlert = aggregate
            alert.done[self.channel] = "failed"

    def __init__(self, tenant_id: str, budget: str, threshold: int) -> None:
        self.tenant_id = tenant_id
        self.budget = budget
        self.threshold = threshold
        self.done: dict[str, str] = {}  # channel -> delivered | failed

    def record_delivery(self, *, channel: str, attempts: int, detail: str) -> None:
        self.trigger_event(self.Delivered, tenant_id=self.tenant_id, actor="system:notifier",
                           channel=channel, attempts=attempts, detail=detail[:500])  # fmt: skip

    def record_failure(self, *, channel: str, attempts: int, error: str) -> None:
        self.trigger_event(self.DeliveryFailed, tenant_id=self.tenant_id,
                           actor="system:notifier", channel=channel, attempts=attempts,
                           error=error[:500])  # fmt: skip

    @staticmethod
    def id_for(tenant_id: str, budget: str, threshold: int, period_start: datetime) -> UUID:
        name = f"{tenant_id}|{budget}|{threshold}|{period_start.isoformat()}"
        return uuid5(BUDGET_NAMESPACE, name)

    @classmethod
    def raise_alert(cls, *, tenant_id: str, budget: str, threshold: int, period_start: datetime,
                    limit: Decimal, used: Decimal) -> BudgetAlert:  # fmt: skip
        return cls._create(
            cls.Raised, id=cls.id_for(tenant_id, budget, threshold, period_start),
            tenant_id=tenant_id, actor="system:budgets", budget=budget, threshold=threshold,
            period_start=period_start, limit=str(limit), used=str(used),
        )  # fmt: skip


class BudgetExceededError(DomainError):
    """A hard budget would be crossed: which, its period, what is used, when it resets."""

    code = "budget_exceeded"

    def __init__(
        self, *, budget: str, limit: Decimal, used: Decimal, reserved: Decimal,
        estimate: Decimal, resets_at: datetime,
    ) -> None:  # fmt: skip
        scope, metric, period = budget.split("/")
        unit = "USD" if metric == "cost_usd" else "tokens"
        super().__init__(
            f"The {period}ly {metric.replace('_usd', '')} budget of {scope} is {limit} {unit};"
            f" {used} used and {reserved} held by questions in flight, and this question"
            f" could use up to {estimate}. It resets at {resets_at.isoformat()}."
        )
        self.details = {
            "budget": budget, "scope": scope, "metric": metric, "period": period,
            "limit": str(limit), "used": str(used), "reserved": str(reserved),
            "estimate": str(estimate), "resets_at": resets_at.isoformat(),
        }  # fmt: skip
        self.retry_after_s = max(1, int((resets_at - datetime.now(UTC)).total_seconds()))


class QuotaExceededError(DomainError):
    """Storing this document would cross a quota (409 for documents, 413 for bytes)."""

    code = "quota_exceeded"

    def __init__(self, *, metric: str, limit: Decimal, used: Decimal, adding: Decimal) -> None:
        unit = "documents" if metric == "documents" else "bytes"
        super().__init__(
            f"The tenant's quota is {limit} {unit} stored; {used} are stored (or being"
            f" stored) and this upload adds {adding}. Delete documents or ask for more."
        )
        self.details = {
            "budget": f"tenant/{metric}/{QUOTA_PERIOD}", "metric": metric, "limit": str(limit),
            "used": str(used), "adding": str(adding),
        }  # fmt: skip


class DocumentQuotaExceededError(QuotaExceededError):
    pass


class StorageQuotaExceededError(QuotaExceededError):
    pass

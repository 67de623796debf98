"""Budgets on the question path: reserve before the provider is asked, settle after.

``BudgetGuard.hold`` finds the budgets a question counts against (the tenant's and
its key's), reserves the question's largest possible use on each in one atomic
step of the ledger, and refuses with ``BudgetExceededError`` (429) when a hard one
would be crossed, recording a ``BudgetRefusal`` with every input of the decision
first. ``settle`` replaces the reservation by the answer's real use and raises an
alert (``BudgetAlert.Raised``, one per budget, threshold and period) when the use
crosses 80% or 100%; ``release`` gives it back when no answer came.

The largest possible use of a question: its prompt's UTF-8 bytes (a byte-level
tokenizer never makes more tokens than bytes) plus a few tokens per message for
the chat format, plus the output tokens it allows; its cost at the price in force
for the model asked for (an unpriced model costs nothing against a cost budget).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol
from uuid import uuid4

import structlog

from commands.base import ConcurrencyConflictError
from commands.usage import UsageApp
from domain.usage import (
    ALERT_THRESHOLDS,
    QUOTA_METRICS,
    SINCE_EVER,
    BudgetAlert,
    BudgetExceededError,
    BudgetRefusal,
    DocumentQuotaExceededError,
    Limit,
    StorageQuotaExceededError,
    period_bounds,
)
from infra.budget_ledger import BudgetLedger, Charge, amount, units
from infra.telemetry import BUDGET_DRIFT, BUDGET_REFUSALS, BUDGET_USED_RATIO, TENANT_LABEL

log = structlog.get_logger(__name__)

TOKENS_PER_MESSAGE = 8  # the chat format's own tokens, generously


class UsageFigures(Protocol):
    """The port onto the read models: a budget's use so far in a period, a quota's use."""

    def budget_use(
        self, tenant_id: str, scope: str, metric: str, start: datetime, end: datetime
    ) -> tuple[Decimal, int]:
        """The answers' tokens or cost as charged, and the conversations position it is at."""
        ...

    def quota_use(self, tenant_id: str, metric: str) -> tuple[Decimal, int]:
        """Documents stored (not deleted) or their bytes, and the documents position."""
        ...


@dataclass(frozen=True)
class Hold:
    id: str
    tenant_id: str
    actor: str
    limits: tuple[Limit, ...]
    charges: tuple[Charge, ...]
    periods: tuple[tuple[datetime, datetime], ...]


def _use(metric: str, tokens: int, cost: Decimal | None) -> Decimal:
    """What a question counts against a budget on ``metric`` (unpriced: no cost)."""
    return Decimal(tokens) if metric == "tokens" else (cost or Decimal(0))


def estimate_tokens(prompt_bytes: int, messages: int, max_output_tokens: int) -> int:
    return prompt_bytes + TOKENS_PER_MESSAGE * messages + max_output_tokens


class BudgetGuard:
    def __init__(
        self,
        usage: UsageApp,
        ledger: BudgetLedger,
        figures: UsageFigures,
        hold_ttl_s: float = 600.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._usage = usage
        self._ledger = ledger
        self._figures = figures
        self._hold_ttl_s = hold_ttl_s
        self._clock = clock

    @staticmethod
    def counter(tenant_id: str, limit: Limit, start: datetime) -> str:
        return f"{tenant_id}|{limit.name}|{start.isoformat()}"

    def hold(
        self, tenant_id: str, actor: str, tokens: int, cost: Callable[[], Decimal | None]
    ) -> Hold | None:
        """Reserve ``tokens`` and ``cost()`` (None: unpriced; asked only when a cost budget
        applies) on every budget ``actor`` counts against; None when there is none.
        Refuses (and records why) past a hard one."""
        limits = tuple(self._usage.budgets(tenant_id).applying_to(actor))
        if not limits:
            return None
        priced = cost() if any(lim.metric == "cost_usd" for lim in limits) else None
        now = self._clock()
        periods = tuple(period_bounds(lim.period, now) for lim in limits)
        charges = tuple(
            Charge(
                self.counter(tenant_id, lim, start),
                units(lim.metric, lim.amount),
                units(lim.metric, _use(lim.metric, tokens, priced)),
                lim.hard,
            )
            for lim, (start, _) in zip(limits, periods, strict=True)
        )
        seeds = {
            charge.counter: (lim, period)
            for charge, lim, period in zip(charges, limits, periods, strict=True)
        }

        def seed(counter: str) -> int:
            lim, (start, end) = seeds[counter]
            figure, _ = self._figures.budget_use(tenant_id, lim.scope, lim.metric, start, end)
            return units(lim.metric, figure)

        hold_id = uuid4().hex
        refused = self._ledger.reserve(hold_id, charges, seed, self._hold_ttl_s)
        if refused is None:
            return Hold(hold_id, tenant_id, actor, limits, charges, periods)
        index = charges.index(refused.charge)
        lim, (start, end) = limits[index], periods[index]
        inputs = {
            "limit": lim.amount,
            "used": amount(lim.metric, refused.used),
            "reserved": amount(lim.metric, refused.reserved),
            "estimate": amount(lim.metric, refused.charge.estimate),
        }
        BUDGET_REFUSALS.labels(lim.metric, lim.period).inc()
        self._usage.record(
            BudgetRefusal.record(
                tenant_id=tenant_id, actor=actor, budget=lim.name, period_start=start,
                resets_at=end, **inputs,
            )
        )  # fmt: skip
        self._alert(tenant_id, lim, start, 100, inputs["used"])
        raise BudgetExceededError(budget=lim.name, resets_at=end, **inputs)

    def settle(self, hold: Hold, tokens: int, cost: Decimal | None, position: int) -> None:
        spent = [units(lim.metric, _use(lim.metric, tokens, cost)) for lim in hold.limits]
        after = self._ledger.settle(hold.id, hold.charges, spent, position)
        for lim, (start, _), used, spend in zip(
            hold.limits, hold.periods, after, spent, strict=True
        ):
            limit = units(lim.metric, lim.amount)
            BUDGET_USED_RATIO.labels(
                TENANT_LABEL(hold.tenant_id),
                "tenant" if lim.scope == "tenant" else "key",
                lim.metric,
                lim.period,
            ).set(used / limit if limit else 1.0)
            for threshold in ALERT_THRESHOLDS:
                line = limit * threshold / 100
                if used - spend < line <= used:
                    self._alert(hold.tenant_id, lim, start, threshold, amount(lim.metric, used))

    def status(self, tenant_id: str) -> list[dict[str, object]]:
        """Each budget of the tenant with its use this period (the read model's figure)."""
        now = self._clock()
        found = []
        for lim in sorted(self._usage.budgets(tenant_id).limits.values(), key=lambda x: x.name):
            start, end = period_bounds(lim.period, now)
            used, _ = self._figures.budget_use(tenant_id, lim.scope, lim.metric, start, end)
            found.append(
                {
                    "scope": lim.scope, "metric": lim.metric, "period": lim.period,
                    "amount": lim.amount, "hard": lim.hard, "used": used,
                    "period_start": start, "resets_at": end,
                }
            )  # fmt: skip
        return found

    # ---------------------------------------------------------------- quotas

    def hold_upload(self, tenant_id: str, actor: str, size: int) -> Hold | None:
        """Hold one document and ``size`` bytes on the tenant's quotas (None: it has none);
        refuses (and records why) when a quota would be crossed."""
        quotas = tuple(self._usage.budgets(tenant_id).quotas())
        if not quotas:
            return None
        charges = tuple(
            Charge(
                self.counter(tenant_id, q, SINCE_EVER),
                units(q.metric, q.amount),
                1 if q.metric == "documents" else size,
                True,
            )
            for q in quotas
        )
        by_counter = {c.counter: q for c, q in zip(charges, quotas, strict=True)}

        def seed(counter: str) -> int:
            figure, _ = self._figures.quota_use(tenant_id, by_counter[counter].metric)
            return int(figure)

        hold_id = uuid4().hex
        refused = self._ledger.reserve(hold_id, charges, seed, self._hold_ttl_s)
        periods = tuple(period_bounds(q.period, SINCE_EVER) for q in quotas)
        if refused is None:
            return Hold(hold_id, tenant_id, actor, quotas, charges, periods)
        quota = by_counter[refused.charge.counter]
        used = Decimal(refused.used + refused.reserved)
        self._usage.record(
            BudgetRefusal.record(
                tenant_id=tenant_id, actor=actor, budget=quota.name, limit=quota.amount,
                used=Decimal(refused.used), reserved=Decimal(refused.reserved),
                estimate=Decimal(refused.charge.estimate), period_start=SINCE_EVER,
                resets_at=SINCE_EVER,
            )
        )  # fmt: skip
        error = (
            DocumentQuotaExceededError if quota.metric == "documents" else StorageQuotaExceededError
        )
        raise error(
            metric=quota.metric, limit=quota.amount, used=used,
            adding=Decimal(refused.charge.estimate),
        )  # fmt: skip

    def settle_upload(self, hold: Hold, position: int) -> None:
        """The document was stored: what it held is now used."""
        self._ledger.settle(hold.id, hold.charges, [c.estimate for c in hold.charges], position)

    def document_removed(self, tenant_id: str, size: int, position: int) -> None:
        """A deleted document frees its place and bytes on counters this process keeps."""
        kept = set(self._ledger.counters())
        quotas = [
            q
            for q in self._usage.budgets(tenant_id).quotas()
            if self.counter(tenant_id, q, SINCE_EVER) in kept
        ]
        if not quotas:
            return
        charges = [
            Charge(self.counter(tenant_id, q, SINCE_EVER), units(q.metric, q.amount), 0, True)
            for q in quotas
        ]
        freed = [-1 if q.metric == "documents" else -size for q in quotas]
        self._ledger.settle(uuid4().hex, charges, freed, position)

    def release(self, hold: Hold) -> None:
        self._ledger.release(hold.id, hold.charges)

    def close(self) -> None:
        self._ledger.close()

    def _alert(
        self, tenant_id: str, lim: Limit, start: datetime, threshold: int, used: Decimal
    ) -> None:
        alert = BudgetAlert.raise_alert(
            tenant_id=tenant_id, budget=lim.name, threshold=threshold, period_start=start,
            limit=lim.amount, used=used,
        )  # fmt: skip
        try:
            self._usage.record(alert)
        except ConcurrencyConflictError:
            return  # raised already in this period: exactly one
        log.warning("budget_alert", budget=lim.name, threshold=threshold, used=str(used))

    # ----------------------------------------------------------- reconciling

    def reconcile(self) -> dict[str, int]:
        """Every counter kept set to the read model's figure (plus what was settled after
        the position it is at); the drift of each, also exported as a metric."""
        drifts = {}
        for counter in self._ledger.counters():
            tenant_id, name, start_text = counter.split("|")
            scope, metric, period = name.split("/")
            if metric in QUOTA_METRICS:
                figure, through = self._figures.quota_use(tenant_id, metric)
            else:
                start, end = period_bounds(period, datetime.fromisoformat(start_text))
                figure, through = self._figures.budget_use(tenant_id, scope, metric, start, end)
            drift = self._ledger.reconcile(counter, units(metric, figure), through)
            BUDGET_DRIFT.labels(metric).set(float(amount(metric, abs(drift))))
            drifts[counter] = drift
        return drifts


class Reconciler:
    """Reconciles the guard's counters every ``every_s`` seconds in a daemon thread."""

    def __init__(self, guard: BudgetGuard, every_s: float) -> None:
        self._guard = guard
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="budget-reconcile", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            try:
                self._guard.reconcile()
            except Exception:
                log.exception("budget_reconcile_failed")

    def stop(self) -> None:
        self._stop.set()

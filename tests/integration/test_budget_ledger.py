"""Budget counters, in-process and in Redis: holds, refusals, lapses, settling, reconciling."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest

from domain.usage import within_limit
from infra.budget_ledger import (
    BudgetLedger,
    Charge,
    InProcessBudgetLedger,
    RedisBudgetLedger,
    amount,
    units,
)


@pytest.fixture(params=["in-process", "redis"])
def ledger(request: pytest.FixtureRequest) -> Iterator[BudgetLedger]:
    if request.param == "redis":
        made: BudgetLedger = RedisBudgetLedger(
            request.getfixturevalue("redis_url"), prefix=f"kftest:{uuid.uuid4().hex}:"
        )
    else:
        made = InProcessBudgetLedger()
    yield made
    made.close()


def _charge(limit: int, estimate: int, hard: bool = True, counter: str = "") -> Charge:
    return Charge(counter or uuid.uuid4().hex, limit, estimate, hard)


def test_units_are_tokens_or_nano_dollars_rounded_up() -> None:
    assert units("cost_usd", Decimal("0.0000525")) == 52_500
    assert units("cost_usd", Decimal("0.0000000001")) == 1  # a tenth of a nano-dollar: one
    assert amount("cost_usd", 52_500) == Decimal("0.0000525")
    assert units("tokens", Decimal(1200)) == 1200


def test_a_hold_counts_until_settled_and_a_hard_limit_refuses_past_it(
    ledger: BudgetLedger,
) -> None:
    first = _charge(limit=100, estimate=60)
    assert ledger.reserve("a", [first], lambda _: 10, ttl_s=60) is None
    again = Charge(first.counter, 100, 40, True)
    refused = ledger.reserve("b", [again], lambda _: 0, ttl_s=60)
    assert refused is not None and (refused.used, refused.reserved) == (10, 60)
    assert not within_limit(Decimal(100), Decimal(10), Decimal(60), Decimal(40))  # replayed
    assert ledger.settle("a", [first], [25], position=7) == [35]  # 10 seeded + 25 used
    assert ledger.reserve("b", [again], lambda _: 0, ttl_s=60) is None  # 35 + 40 <= 100
    ledger.release("b", [again])
    assert ledger.reserve("c", [Charge(first.counter, 100, 65, True)], lambda _: 0, 60) is None


def test_a_soft_limit_never_refuses_and_one_refusal_takes_nothing(ledger: BudgetLedger) -> None:
    soft = _charge(limit=10, estimate=50, hard=False)
    hard = _charge(limit=10, estimate=50)
    assert ledger.reserve("a", [soft], lambda _: 0, ttl_s=60) is None
    refused = ledger.reserve("b", [soft, hard], lambda _: 0, ttl_s=60)
    assert refused is not None and refused.charge == hard
    # The refused hold took nothing from the soft counter either.
    assert ledger.settle("a", [soft], [5], position=1) == [5]
    assert ledger.reserve("c", [Charge(hard.counter, 10, 10, True)], lambda _: 0, 60) is None


def test_a_hold_never_settled_lapses(ledger: BudgetLedger) -> None:
    charge = _charge(limit=100, estimate=80)
    assert ledger.reserve("dead", [charge], lambda _: 0, ttl_s=0.2) is None
    assert ledger.reserve("next", [charge], lambda _: 0, ttl_s=60) is not None
    time.sleep(0.3)
    assert ledger.reserve("next", [charge], lambda _: 0, ttl_s=60) is None


def test_reconciling_takes_the_read_models_figure_plus_what_was_settled_after_it(
    ledger: BudgetLedger,
) -> None:
    charge = _charge(limit=1000, estimate=10)
    for hold, position, used in [("a", 5, 7), ("b", 9, 3), ("c", 12, 4)]:
        assert ledger.reserve(hold, [charge], lambda _: 100, ttl_s=60) is None
        ledger.settle(hold, [charge], [used], position)
    # Counted so far: 100 + 7 + 3 + 4 = 114. The read model, up to position 9, says 111
    # (it saw an answer this ledger never did): 111 + 4 settled after 9 = 115.
    assert ledger.reconcile(charge.counter, figure=111, through=9) == 114 - 115
    assert ledger.reconcile(charge.counter, figure=111, through=9) == 0
    assert ledger.reconcile(charge.counter, figure=115, through=12) == 0
    assert charge.counter in ledger.counters()


def test_fifty_concurrent_holds_never_overspend_a_hard_limit(ledger: BudgetLedger) -> None:
    counter = uuid.uuid4().hex
    limit, estimate = 1000, 70
    spent: list[int] = []
    refused: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(50)

    def question(i: int) -> None:
        charge = Charge(counter, limit, estimate, True)
        start.wait()
        if ledger.reserve(f"h{i}", [charge], lambda _: 0, ttl_s=60) is not None:
            with lock:
                refused.append(i)
            return
        use = estimate - i % 7  # never more than held
        ledger.settle(f"h{i}", [charge], [use], position=i + 1)
        with lock:
            spent.append(use)

    threads = [threading.Thread(target=question, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(spent) <= limit and refused and spent
    assert len(spent) + len(refused) == 50

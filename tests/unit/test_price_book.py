"""The price book (exact cost, which price is in force when, what may be set) and budgets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.usage import (
    ANY_PROVIDER,
    SINCE_EVER,
    Budgets,
    InvalidPriceError,
    Limit,
    PriceBook,
    TokenPrice,
    period_bounds,
    within_limit,
)

T0 = datetime(2026, 11, 1, tzinfo=UTC)
MINI = TokenPrice(Decimal("0.15"), Decimal("0.60"), Decimal("0.075"))
CLAUDE = TokenPrice(Decimal("3"), Decimal("15"))


def _book() -> PriceBook:
    return PriceBook.open(
        tenant_id="t", actor="system:config",
        configured=[(ANY_PROVIDER, "gpt-4o-mini", MINI), (ANY_PROVIDER, "claude-*", CLAUDE)],
    )  # fmt: skip


def test_cost_is_exact_and_cached_input_has_its_own_price() -> None:
    assert MINI.cost(1_000_000, 1_000_000) == Decimal("0.75")
    assert MINI.cost(1234, 567) == Decimal("0.0005253")
    # 1000 input tokens of which 400 cached: 600 at 0.15, 400 at 0.075.
    assert MINI.cost(1000, 0, cached_input_tokens=400) == Decimal("0.00012")
    # Without a cached price, cached input costs as input; cached never exceeds input.
    assert CLAUDE.cost(2000, 100, cached_input_tokens=5000) == CLAUDE.cost(2000, 100)
    assert CLAUDE.cost(2000, 100) == Decimal("0.0075")


def test_the_configured_prices_apply_since_ever_and_patterns_match() -> None:
    book = _book()
    assert book.version == 1
    entry = book.price("openai", "gpt-4o-mini", SINCE_EVER)
    assert entry is not None and entry.price == MINI and entry.version == 1
    sonnet = book.price("anthropic", "claude-sonnet-4", T0)
    assert sonnet is not None and sonnet.price == CLAUDE
    assert book.price("local", "llama3", T0) is None  # unpriced, never 0


def test_a_price_is_in_force_from_its_effective_time_and_the_most_specific_wins() -> None:
    book = _book()
    later = TokenPrice(Decimal("0.20"), Decimal("0.80"))
    book.set_price(actor="key:a", provider=ANY_PROVIDER, model="gpt-4o-mini", price=later,
                   effective_from=T0, reason="new contract")  # fmt: skip
    assert book.version == 2
    before = book.price("openai", "gpt-4o-mini", T0 - timedelta(seconds=1))
    after = book.price("openai", "gpt-4o-mini", T0)
    assert before is not None and before.price == MINI
    assert after is not None and after.price == later and after.version == 2
    # This provider's own price beats any provider's; the exact name beats a pattern.
    azure = TokenPrice(Decimal("0.30"), Decimal("1.00"))
    book.set_price(actor="key:a", provider="azure", model="gpt-4o-mini", price=azure,
                   effective_from=SINCE_EVER)  # fmt: skip
    own = book.price("azure", "gpt-4o-mini", T0 + timedelta(days=1))
    assert own is not None and own.price == azure
    haiku = TokenPrice(Decimal("0.80"), Decimal("4"))
    book.set_price(actor="key:a", provider=ANY_PROVIDER, model="claude-3-5-haiku",
                   price=haiku, effective_from=SINCE_EVER)  # fmt: skip
    exact = book.price("anthropic", "claude-3-5-haiku", T0)
    assert exact is not None and exact.price == haiku


def test_setting_the_same_effective_time_again_corrects_the_price() -> None:
    book = _book()
    for figure in ("0.5", "0.4"):
        price = TokenPrice(Decimal(figure), Decimal(1))
        book.set_price(actor="key:a", provider="p", model="m", price=price, effective_from=T0)
    entry = book.price("p", "m", T0)
    assert entry is not None and entry.price.input_per_million == Decimal("0.4")
    assert len([e for e in book.entries if e.model == "m"]) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"price": TokenPrice(Decimal(-1), Decimal(1))}, "from 0 to"),
        ({"price": TokenPrice(Decimal("NaN"), Decimal(1))}, "from 0 to"),
        ({"price": TokenPrice(Decimal(1), Decimal(10**7))}, "from 0 to"),
        ({"price": TokenPrice(Decimal("0.0000000000001"), Decimal(1))}, "12 decimal places"),
        ({"price": TokenPrice(Decimal(1), Decimal(1), currency="EUR")}, "not supported"),
        ({"model": ""}, "1-200 characters"),
        ({"model": "a b"}, "1-200 characters"),
        ({"provider": "x" * 201}, "1-200 characters"),
        ({"effective_from": datetime(2026, 1, 1)}, "time zone"),  # no zone
        ({"reason": "r" * 501}, "500 characters"),
    ],
)
def test_bad_prices_are_refused_and_nothing_changes(
    change: dict[str, object], message: str
) -> None:
    book = _book()
    request: dict[str, object] = {
        "actor": "key:a", "provider": "p", "model": "m", "price": MINI, "effective_from": T0,
        "reason": "",
    }  # fmt: skip
    with pytest.raises(InvalidPriceError, match=message):
        book.set_price(**{**request, **change})  # type: ignore[arg-type]
    assert book.version == 1 and not book.pending_events[1:]


@given(
    tokens=st.tuples(st.integers(0, 10**9), st.integers(0, 10**9), st.integers(0, 10**9)),
    figures=st.tuples(*[st.decimals(0, 1000, places=6) for _ in range(3)]),
)
def test_cost_is_linear_in_tokens_and_never_negative(
    tokens: tuple[int, int, int], figures: tuple[Decimal, Decimal, Decimal]
) -> None:
    price = TokenPrice(*figures)
    inp, out, cached = tokens
    cost = price.cost(inp, out, cached)
    assert cost >= 0
    assert price.cost(2 * inp, 2 * out, 2 * cached) == 2 * cost


# ------------------------------------------------------------------ budgets


def test_periods_are_utc_days_and_calendar_months() -> None:
    at = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert period_bounds("day", at) == (
        datetime(2026, 12, 31, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    assert period_bounds("month", at) == (
        datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    feb = datetime(2028, 2, 29, 12, tzinfo=UTC)
    assert period_bounds("month", feb)[1] == datetime(2028, 3, 1, tzinfo=UTC)


def test_budgets_apply_to_the_tenant_and_to_their_own_key_only() -> None:
    budgets = Budgets.open(tenant_id="t", actor="system:config")
    key = "key:11111111-1111-1111-1111-111111111111"
    other = "key:22222222-2222-2222-2222-222222222222"
    budgets.set_limit(actor="key:a", limit=Limit("tenant", "cost_usd", "month", Decimal(100)))
    budgets.set_limit(actor="key:a", limit=Limit(key, "tokens", "day", Decimal(5000), False))
    assert {lim.scope for lim in budgets.applying_to(key)} == {"tenant", key}
    assert {lim.scope for lim in budgets.applying_to(other)} == {"tenant"}
    assert budgets.remove_limit(actor="key:a", scope=key, metric="tokens", period="day")
    assert not budgets.remove_limit(actor="key:a", scope=key, metric="tokens", period="day")
    assert [lim.scope for lim in budgets.applying_to(key)] == ["tenant"]


@given(
    limit=st.decimals(0, 10**6, places=3),
    used=st.decimals(0, 10**6, places=3),
    reserved=st.decimals(0, 10**6, places=3),
    estimate=st.decimals(0, 10**6, places=3),
)
def test_a_decision_depends_on_its_inputs_alone(
    limit: Decimal, used: Decimal, reserved: Decimal, estimate: Decimal
) -> None:
    decided = within_limit(limit, used, reserved, estimate)
    assert decided == within_limit(limit, used, reserved, estimate)  # replayed
    assert decided == (used + reserved + estimate <= limit)
    if decided:
        assert within_limit(limit, used, reserved, Decimal(0))  # less never refuses

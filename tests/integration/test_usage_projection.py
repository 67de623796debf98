"""The usage read model on PostgreSQL: totals are exact, any grouping adds up to them.

Random histories of questions, answers (priced, unpriced), failures, uploads
with their processing, and searches, spread over three months, are projected
into a copy of the usage read model; for a random window and grouping, every
additive figure of every group equals a recomputation from the events, and the
sums over the groups equal the total (the grouping by nothing), which equals a
recomputation too. A redelivered batch changes nothing.
"""

from __future__ import annotations

import copy
import itertools
import math
import random
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.root import Container
from domain.activity import Read
from domain.contexts import event_type
from domain.conversation import Conversation
from domain.document import Document
from domain.usage import ANY_PROVIDER, SINCE_EVER, PriceBook, Repricing, TokenPrice, charged
from infra.envelope import Envelope
from projections.usage.projection import RepricingAheadError
from projections.usage.view import DIMENSIONS, PERIODS, Usage, UsageView, Window
from tests.read_models import copy_of

EPOCH = datetime(2026, 9, 1, tzinfo=UTC)
BOOK = PriceBook.open(
    tenant_id="prices",
    actor="test",
    configured=[
        (ANY_PROVIDER, "gpt-4o", TokenPrice(Decimal("2.50"), Decimal("10.00"), Decimal("1.25"))),
        (ANY_PROVIDER, "claude-*", TokenPrice(Decimal("0.80"), Decimal("4.00"))),
    ],
)


def _price_of(provider: str, model: str) -> TokenPrice | None:
    entry = BOOK.price(provider, model, datetime.now(UTC))
    return None if entry is None else entry.price


MODELS = ("gpt-4o", "claude-3-5-haiku", "llama-local")  # the last has no price
ACTORS = ("key:11111111-1111-1111-1111-111111111111", "key:22222222-2222-2222-2222-222222222222",
          "jwt:https://idp.example#alice")  # fmt: skip
_positions = itertools.count(1)


@pytest.fixture(scope="module")
def usage(make_container: Callable[..., Container]) -> Iterator[UsageView]:
    container = make_container()
    view = copy_of(container, "usage", "__prop")
    assert isinstance(view, UsageView)
    yield view


@dataclass
class Fact:
    """What one event should count, as the test computes it (independently of SQL)."""

    at: datetime
    actor: str
    kind: str
    model: str | None = None
    provider: str | None = None
    document: str | None = None
    figures: dict[str, Any] = field(default_factory=dict)


def _envelope(context: str, event: type, tenant: str, actor: str, at: datetime,
              aggregate: uuid.UUID, data: dict[str, Any]) -> Envelope:  # fmt: skip
    kind = event_type(event)
    return Envelope(
        context=context,
        position=next(_positions),
        event_type=kind,
        topic=f"test:{kind}",
        aggregate_id=str(aggregate),
        aggregate_version=1,
        tenant_id=tenant,
        actor=actor,
        timestamp=at.isoformat(),
        data=data,
    )


costs = st.one_of(
    st.none(),
    st.decimals(min_value=0, max_value=5, places=8, allow_nan=False, allow_infinity=False),
)
answer = st.fixed_dictionaries(
    {
        "outcome": st.sampled_from(["answer", "failure"]),
        "model": st.sampled_from(MODELS),
        "mode": st.sampled_from(["hybrid", "vector", "keyword"]),
        "input_tokens": st.integers(0, 50_000),
        "cached_share": st.sampled_from([0, 0, 0.5, 1]),
        "output_tokens": st.integers(0, 4_000),
        "cost": costs,
        "latency_ms": st.floats(1, 60_000, allow_nan=False).map(lambda v: round(v, 1)),
    }
)
upload = st.fixed_dictionaries(
    {
        "bytes": st.integers(1, 10**8),
        "pages": st.one_of(st.none(), st.integers(0, 500)),
        "chunks": st.integers(0, 2_000),
        "tokens": st.integers(0, 500_000),
        "processed": st.integers(0, 3),  # how far it got: uploaded, parsed, chunked, embedded
    }
)
search = st.fixed_dictionaries({"mode": st.sampled_from(["hybrid", "vector", "keyword", "exact"])})
history = st.lists(
    st.tuples(
        st.sampled_from(["answer", "upload", "search"]),
        st.integers(0, 90 * 24 * 3600),  # seconds after EPOCH
        st.sampled_from(ACTORS),
        answer,
        upload,
        search,
    ),
    max_size=40,
)


def _events(tenant: str, plan: list[Any]) -> tuple[list[Envelope], list[Fact]]:
    envelopes: list[Envelope] = []
    facts: list[Fact] = []
    for what, offset, actor, asked, uploaded, searched in plan:
        at = EPOCH + timedelta(seconds=offset)
        if what == "answer":
            conversation = uuid.uuid4()
            envelopes.append(_envelope("conversations", Conversation.QuestionAsked, tenant, actor,
                             at, conversation, {"turn": 1, "model": asked["model"],
                                                "mode": asked["mode"]}))  # fmt: skip
            facts.append(Fact(at, actor, "question", model=asked["model"],
                              figures={"questions": 1}))  # fmt: skip
            done = at + timedelta(milliseconds=asked["latency_ms"])
            if asked["outcome"] == "failure":
                envelopes.append(_envelope("conversations", Conversation.AnswerFailed, tenant,
                                 "system:answerer", done, conversation, {"turn": 1}))  # fmt: skip
                facts.append(Fact(done, actor, "failure", model=asked["model"],
                                  figures={"failures": 1}))  # fmt: skip
                continue
            cost = asked["cost"]
            cached = int(asked["input_tokens"] * asked["cached_share"])
            provider = "p-" + asked["model"].split("-")[0]
            data = {
                "turn": 1, "model": asked["model"], "provider": provider,
                "usage": {"input_tokens": asked["input_tokens"],
                          "output_tokens": asked["output_tokens"],
                          "cached_input_tokens": cached},
                "cost_usd": None if cost is None else f"{cost:f}",
                "latency_ms": asked["latency_ms"],
            }  # fmt: skip
            envelopes.append(_envelope("conversations", Conversation.AnswerGenerated, tenant,
                                       "system:answerer", done, conversation, data))  # fmt: skip
            price = _price_of(provider, asked["model"])
            current = (
                None
                if price is None
                else price.cost(asked["input_tokens"], asked["output_tokens"], cached)
            )
            facts.append(
                Fact(done, actor, "answer", model=asked["model"], provider=provider, figures={
                    "answers": 1, "input_tokens": asked["input_tokens"],
                    "output_tokens": asked["output_tokens"],
                    "cost_charged_usd": cost or Decimal(0),
                    "unpriced_answers": int(cost is None),
                    "cost_current_usd": current or Decimal(0),
                    "unpriced_now": int(current is None),
                    "latency_ms": asked["latency_ms"],
                })
            )  # fmt: skip
        elif what == "upload":
            document = uuid.uuid4()
            steps = [
                (Document.Uploaded, actor, {"size_bytes": uploaded["bytes"]},
                 {"documents": 1, "bytes": uploaded["bytes"]}),
                (Document.Parsed, "system:worker", {"page_count": uploaded["pages"]},
                 {"pages": uploaded["pages"] or 0}),
                (Document.Chunked, "system:worker", {"chunk_count": uploaded["chunks"]},
                 {"chunks": uploaded["chunks"]}),
                (Document.Embedded, "system:worker", {"token_count": uploaded["tokens"]},
                 {"embedding_tokens": uploaded["tokens"]}),
            ]  # fmt: skip
            for step, (event, recorder, data, figures) in enumerate(steps):
                if step > uploaded["processed"]:
                    break
                when = at + timedelta(seconds=step)
                envelopes.append(_envelope("documents", event, tenant, recorder, when, document,
                                           data))  # fmt: skip
                facts.append(Fact(when, actor, "document", document=str(document),
                                  figures=figures))  # fmt: skip
        else:
            envelopes.append(_envelope("activity", Read.Recorded, tenant, actor, at, uuid.uuid4(),
                             {"kind": "search", "mode": searched["mode"]}))  # fmt: skip
            facts.append(Fact(at, actor, "search", figures={f"search_{searched['mode']}": 1}))
    return envelopes, facts


def _group_of(fact: Fact, names: tuple[str, ...]) -> tuple[str | None, ...]:
    day = fact.at.astimezone(UTC).date()
    values: dict[str, str | None] = {
        "day": day.isoformat(),
        "week": (day - timedelta(days=day.weekday())).isoformat(),
        "month": date(day.year, day.month, 1).isoformat(),
        "key": fact.actor if fact.actor.startswith("key:") else None,
        "user": fact.actor if fact.actor.startswith("jwt:") else None,
        "model": fact.model if fact.kind in ("question", "answer", "failure") else None,
        "provider": fact.provider,
        "document": fact.document,
    }
    return tuple(values[n] for n in names)


def _nearest_rank(latencies: list[float], q: float) -> Any:
    """The k-th smallest latency (k = ceil(q n)), to within the histogram's 2.5%."""
    ordered = sorted(latencies)
    return pytest.approx(ordered[max(1, math.ceil(q * len(ordered))) - 1], rel=0.0248, abs=0.006)


def _figures(usage: Usage) -> dict[str, Any]:
    figures = {name: getattr(usage, name) for name in Usage.ADDITIVE}
    figures.update({f"search_{m}": n for m, n in usage.searches.items()})
    return figures


def _expected(facts: list[Fact]) -> dict[str, Any]:
    totals: dict[str, Any] = defaultdict(int)
    for fact in facts:
        for name, value in fact.figures.items():
            if name != "latency_ms":
                totals[name] += value
    return {k: v for k, v in totals.items() if v}


def _nonzero(figures: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in figures.items() if v}


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    plan=history,
    start=st.integers(-5, 90 * 24),  # hours after EPOCH
    length=st.integers(1, 100 * 24),
    names=st.lists(st.sampled_from(DIMENSIONS), unique=True, max_size=3),
    period=st.sampled_from([None, *PERIODS]),
)
def test_every_grouping_adds_up_to_the_total_and_both_match_the_events(
    usage: UsageView, plan: list[Any], start: int, length: int, names: list[str], period: str | None
) -> None:
    tenant = str(uuid.uuid4())
    envelopes, facts = _events(tenant, plan)
    usage.apply_batch(envelopes)
    usage.apply_batch(envelopes)  # redelivered: nothing changes
    window = Window(EPOCH + timedelta(hours=start), EPOCH + timedelta(hours=start + length))
    inside = [f for f in facts if window.start <= f.at < window.end]
    grouping = tuple(([period] if period else []) + names)

    total = usage.total(tenant, window, _price_of)
    assert _nonzero(_figures(total)) == _expected(inside)
    latencies = [f.figures["latency_ms"] for f in inside if f.kind == "answer"]
    if latencies:
        assert total.latency_ms_p50 == _nearest_rank(latencies, 0.5)
        assert total.latency_ms_p95 == _nearest_rank(latencies, 0.95)
    else:
        assert total.latency_ms_p50 is None and total.latency_ms_p95 is None

    groups = list(usage.usage(tenant, window, grouping, _price_of))
    keys = [tuple(g.group[n] for n in grouping) for g in groups]
    assert len(keys) == len(set(keys))
    expected_groups: dict[tuple[str | None, ...], list[Fact]] = defaultdict(list)
    if not grouping:
        expected_groups[()] = []  # grouped by nothing: the total, even of nothing
    for fact in inside:
        expected_groups[_group_of(fact, grouping)].append(fact)
    assert {k: _nonzero(_figures(g)) for k, g in zip(keys, groups, strict=True)} == {
        k: _expected(v) for k, v in expected_groups.items()
    }
    summed: dict[str, Any] = defaultdict(int)
    for group in groups:
        for name, value in _figures(group).items():
            summed[name] += value
    assert _nonzero(summed) == _nonzero(_figures(total))


def test_another_tenant_sees_none_of_it(usage: UsageView) -> None:
    tenant = str(uuid.uuid4())
    envelopes, _ = _events(tenant, [("search", 10, ACTORS[0], {}, {}, {"mode": "hybrid"})])
    usage.apply_batch(envelopes)
    window = Window(EPOCH, EPOCH + timedelta(days=1))
    assert usage.total(tenant, window, _price_of).searches["hybrid"] == 1
    assert usage.total(str(uuid.uuid4()), window, _price_of).searches["hybrid"] == 0


def test_an_actor_window_counts_only_that_actors_use(usage: UsageView) -> None:
    tenant = str(uuid.uuid4())
    plan = [("search", 10 + i, ACTORS[i % 2], {}, {}, {"mode": "keyword"}) for i in range(5)]
    envelopes, _ = _events(tenant, plan)
    usage.apply_batch(envelopes)
    mine = Window(EPOCH, EPOCH + timedelta(days=1), actor=ACTORS[0])
    assert usage.total(tenant, mine, _price_of).searches["keyword"] == 3


def test_periods_are_utc_weeks_from_monday_and_calendar_months(usage: UsageView) -> None:
    tenant = str(uuid.uuid4())
    at = [  # a Sunday's last second, the Monday after, and the first of December
        datetime(2026, 11, 29, 23, 59, 59, tzinfo=UTC),
        datetime(2026, 11, 30, 0, 0, 0, tzinfo=UTC),
        datetime(2026, 12, 1, 0, 0, 0, tzinfo=UTC),
    ]
    plan = [
        ("search", int((t - EPOCH).total_seconds()), ACTORS[0], {}, {}, {"mode": "hybrid"})
        for t in at
    ]
    usage.apply_batch(_events(tenant, plan)[0])
    window = Window(EPOCH, EPOCH + timedelta(days=120))
    for period, expected in [
        ("day", ["2026-11-29", "2026-11-30", "2026-12-01"]),
        ("week", ["2026-11-23", "2026-11-30"]),
        ("month", ["2026-11-01", "2026-12-01"]),
    ]:
        groups = list(usage.usage(tenant, window, (period,), _price_of))
        assert [g.group[period] for g in groups] == expected, period


# ------------------------------------------------------------------ re-pricing

PROVIDERS = ("*", "p-gpt", "p-claude", "p-llama")
PATTERNS = ("gpt-4o", "gpt-*", "claude-*", "claude-3-5-haiku", "llama-?ocal", "*")
price_figures = st.decimals(min_value=0, max_value=100, places=4)
price_change = st.tuples(
    st.sampled_from(PROVIDERS),
    st.sampled_from(PATTERNS),
    st.one_of(st.just(-1), st.integers(0, 90)),  # days after EPOCH; -1: since ever
    price_figures,
    price_figures,
    st.one_of(st.none(), price_figures),
)


def _book_events(
    tenant: str, configured: list[Any], changes: list[Any]
) -> tuple[list[PriceBook], list[Envelope]]:
    """The book after each version (index 0: version 1), and its events as envelopes."""
    book = PriceBook.open(
        tenant_id=tenant,
        actor="system:config",
        configured=[(p, m, TokenPrice(i, o, c)) for p, m, _, i, o, c in configured],
    )
    versions: list[PriceBook] = []
    envelopes: list[Envelope] = []

    def collect() -> None:
        for event in book.collect_events():
            envelopes.append(
                Envelope.from_event(
                    "usage", next(_positions), f"x:{type(event).__qualname__}", event
                )
            )
        versions.append(copy.deepcopy(book))

    collect()
    for provider, model, days, inp, out, cached in changes:
        effective = SINCE_EVER if days < 0 else EPOCH + timedelta(days=days)
        book.set_price(actor="key:admin", provider=provider, model=model,
                       price=TokenPrice(inp, out, cached), effective_from=effective)  # fmt: skip
        collect()
    return versions, envelopes


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    plan=st.lists(
        st.tuples(
            st.just("answer"),
            st.integers(0, 90 * 24 * 3600),
            st.sampled_from(ACTORS),
            answer,
            upload,
            search,
        ),
        max_size=25,
    ),
    configured=st.lists(price_change, max_size=3),
    changes=st.lists(price_change, max_size=6),
    data=st.data(),
)
def test_a_repricing_run_prices_every_answer_as_the_domain_does_at_that_version(
    usage: UsageView, plan: list[Any], configured: list[Any], changes: list[Any],
    data: st.DataObject,
) -> None:  # fmt: skip
    tenant = str(uuid.uuid4())
    conversations, _ = _events(tenant, plan)
    versions, book_events = _book_events(tenant, configured, changes)
    version = data.draw(st.integers(1, len(versions)), label="version")
    through = max((e.position for e in conversations), default=0)
    run = Repricing.request(tenant_id=tenant, actor="key:analyst", price_book_version=version,
                            through=through, reason="test")  # fmt: skip
    (requested,) = run.collect_events()
    run_envelope = Envelope.from_event("usage", next(_positions), "x:Repricing.Requested",
                                       requested)  # fmt: skip
    usage.apply_batch([*conversations, *book_events, run_envelope])
    usage.apply_batch([run_envelope])  # redelivered: nothing changes

    book = versions[version - 1]
    expected: dict[int, Decimal | None] = {}
    for envelope in conversations:
        if envelope.event_type != "Conversation.AnswerGenerated":
            continue
        d = envelope.data
        entry = book.price(d["provider"], d["model"], envelope.occurred_at)
        tokens = d["usage"]
        expected[envelope.position] = (
            None
            if entry is None
            else charged(
                entry.price.cost(
                    tokens["input_tokens"], tokens["output_tokens"], tokens["cached_input_tokens"]
                )
            )
        )
    with usage.datastore.get_connection() as conn:
        got = {
            row["position"]: row["cost_usd"]
            for row in conn.execute(
                "SELECT position, cost_usd FROM usage_repriced__prop WHERE run_id = %s",
                (run.id,),
            )
        }
    assert got == expected
    summary = usage.repricing(tenant, run.id)
    assert summary is not None and summary.answers == len(expected)
    assert summary.unpriced == sum(1 for v in expected.values() if v is None)
    assert summary.cost_repriced_usd == sum((v for v in expected.values() if v), Decimal(0))
    assert usage.latest_repricing(tenant, version) == summary
    # Beside the usage figures: every answer of the window was covered by the run.
    window = Window(EPOCH, EPOCH + timedelta(days=120), repricing=run.id)
    total = usage.total(tenant, window, _price_of)
    assert total.cost_repriced_usd == summary.cost_repriced_usd
    assert total.not_repriced == 0 and total.unpriced_repriced == summary.unpriced


def test_a_run_that_arrives_before_its_answers_waits_for_a_catch_up(usage: UsageView) -> None:
    tenant = str(uuid.uuid4())
    asked = {**_ANSWER, "outcome": "answer"}
    conversations, _ = _events(
        tenant, [("answer", 60, ACTORS[0], asked, {}, {}), ("answer", 90, ACTORS[1], asked, {}, {})]
    )
    _versions, book_events = _book_events(tenant, [], [])
    run = Repricing.request(tenant_id=tenant, actor="key:analyst", price_book_version=1,
                            through=conversations[-1].position, reason="")  # fmt: skip
    (requested,) = run.collect_events()
    run_envelope = Envelope.from_event(
        "usage", next(_positions), "x:Repricing.Requested", requested
    )
    with pytest.raises(RepricingAheadError):  # the second answer is not applied yet
        usage.apply_batch([*conversations[:2], *book_events, run_envelope])
    assert usage.repricing(tenant, run.id) is None  # and nothing of the batch was written
    assert usage.total(tenant, Window(EPOCH, EPOCH + timedelta(days=1)), _price_of).answers == 0
    usage.apply_batch([*conversations, *book_events, run_envelope])
    summary = usage.repricing(tenant, run.id)
    assert summary is not None and summary.answers == 2


_ANSWER = {
    "model": "gpt-4o", "mode": "hybrid", "input_tokens": 1000, "output_tokens": 10,
    "cached_share": 0, "cost": Decimal("0.01"), "latency_ms": 100.0,
}  # fmt: skip


BASE = ("*", "gpt-*", -1, 1, 0, None)  # any provider's gpt models, since ever, $1


@pytest.mark.parametrize(
    ("changes", "answer_day", "expected_input_price"),
    [
        # The exact name beats a pattern in force later; a later exact price beats both.
        ([BASE, ("*", "gpt-4o", -1, 2, 0, None), ("*", "gpt-*", 10, 3, 0, None)], 20, 2),
        ([BASE, ("*", "gpt-4o", -1, 2, 0, None), ("*", "gpt-4o", 15, 4, 0, None)], 20, 4),
        ([BASE, ("*", "gpt-4o", -1, 2, 0, None), ("*", "gpt-4o", 25, 4, 0, None)], 20, 2),
        # This provider's pattern beats any provider's exact name.
        ([BASE, ("*", "gpt-4o", -1, 2, 0, None), ("p-gpt", "gpt-?o", -1, 5, 0, None)], 20, 5),
        # The same effective time set again: the correction wins.
        ([BASE, ("*", "gpt-4o", 5, 2, 0, None), ("*", "gpt-4o", 5, 7, 0, None)], 20, 7),
        # An exact price not in force yet: the pattern applies.
        ([BASE, ("*", "gpt-4o", 30, 2, 0, None)], 20, 1),
        # Prices only for another provider, or from later on: unpriced.
        ([("p-claude", "*", -1, 2, 0, None), ("*", "gpt-*", 30, 9, 0, None)], 20, None),
    ],
)
def test_which_price_a_run_applies(
    usage: UsageView, changes: list[Any], answer_day: int, expected_input_price: int | None
) -> None:
    tenant = str(uuid.uuid4())
    asked = {**_ANSWER, "outcome": "answer", "input_tokens": 1_000_000, "output_tokens": 0}
    conversations, _ = _events(tenant, [("answer", answer_day * 86400, ACTORS[0], asked, {}, {})])
    changes = [(p, m, d, Decimal(i), Decimal(o), c) for p, m, d, i, o, c in changes]
    versions, book_events = _book_events(tenant, [], changes)
    run = Repricing.request(tenant_id=tenant, actor="key:analyst",
                            price_book_version=len(versions),
                            through=conversations[-1].position, reason="")  # fmt: skip
    (requested,) = run.collect_events()
    envelope = Envelope.from_event("usage", next(_positions), "x:Repricing.Requested", requested)
    usage.apply_batch([*conversations, *book_events, envelope])
    summary = usage.repricing(tenant, run.id)
    assert summary is not None and summary.answers == 1
    entry = versions[-1].price("p-gpt", "gpt-4o", conversations[-1].occurred_at)
    if expected_input_price is None:
        assert summary.unpriced == 1 and entry is None
    else:
        assert summary.unpriced == 0
        assert summary.cost_repriced_usd == Decimal(expected_input_price)
        assert entry is not None and entry.price.input_per_million == expected_input_price


def test_latency_percentiles_are_nearest_rank_to_within_the_histograms_precision(
    usage: UsageView,
) -> None:
    tenant = str(uuid.uuid4())
    latencies = [7.0 * 1.13**i for i in range(100)]  # 7 ms to about 1.2 hours
    plan = [
        ("answer", 3600 * (i % 50), ACTORS[0], {**_ANSWER, "outcome": "answer",
                                                "latency_ms": latency}, {}, {})
        for i, latency in enumerate(latencies)
    ]  # fmt: skip
    usage.apply_batch(_events(tenant, plan)[0])
    for window in (  # all from the facts; from the daily rollup with facts at its ends
        Window(EPOCH, EPOCH + timedelta(hours=30)),
        Window(EPOCH - timedelta(hours=3), EPOCH + timedelta(days=3, hours=5)),
    ):
        answered = [  # an answer is recorded its latency after the question
            (EPOCH + timedelta(seconds=t, milliseconds=lat), lat)
            for (_, t, *_), lat in zip(plan, latencies, strict=True)
        ]
        inside = [lat for at, lat in answered if window.start <= at < window.end]
        total = usage.total(tenant, window, _price_of)
        assert total.answers == len(inside)
        assert total.latency_ms_p50 == _nearest_rank(inside, 0.5)
        assert total.latency_ms_p95 == _nearest_rank(inside, 0.95)


def test_the_daily_rollup_and_the_facts_at_a_windows_ends_add_up_exactly(
    usage: UsageView,
) -> None:
    """A seeded history of every kind over ten days, read through windows whose ends fall
    inside days: every figure of every group is what the events say."""
    rng = random.Random(20261202)
    tenant = str(uuid.uuid4())
    plan = []
    for _ in range(400):
        asked = {
            "outcome": rng.choice(["answer", "answer", "failure"]),
            "model": rng.choice(MODELS), "mode": rng.choice(["hybrid", "vector", "keyword"]),
            "input_tokens": rng.randint(0, 9000), "output_tokens": rng.randint(0, 900),
            "cached_share": rng.choice([0, 0.5]),
            "cost": rng.choice([None, Decimal(rng.randint(1, 10**6)) / 10**8]),
            "latency_ms": round(rng.uniform(5, 9000), 1),
        }  # fmt: skip
        uploaded = {"bytes": rng.randint(1, 10**6), "pages": rng.choice([None, 3]),
                    "chunks": rng.randint(0, 40), "tokens": rng.randint(0, 9999),
                    "processed": rng.randint(0, 3)}  # fmt: skip
        what = rng.choice(["answer", "answer", "upload", "search"])
        plan.append((what, rng.randint(0, 10 * 86400), rng.choice(ACTORS), asked, uploaded,
                     {"mode": rng.choice(["hybrid", "keyword", "exact"])}))  # fmt: skip
    envelopes, facts = _events(tenant, plan)
    for start in range(0, len(envelopes), 97):  # batches of every size: rollup rows merge
        usage.apply_batch(envelopes[start : start + 97])
    for hours in ((5, 200), (0, 240), (13, 14), (23, 73)):
        window = Window(EPOCH + timedelta(hours=hours[0]), EPOCH + timedelta(hours=hours[1]))
        inside = [f for f in facts if window.start <= f.at < window.end]
        for grouping in ((), ("day", "model"), ("key", "provider"), ("document",)):
            expected: dict[tuple[str | None, ...], list[Fact]] = defaultdict(list)
            if not grouping:
                expected[()] = []
            for fact in inside:
                expected[_group_of(fact, grouping)].append(fact)
            got = {
                tuple(g.group[n] for n in grouping): g
                for g in usage.usage(tenant, window, grouping, _price_of)
            }
            assert {k: _nonzero(_figures(g)) for k, g in got.items()} == {
                k: _expected(v) for k, v in expected.items()
            }, (hours, grouping)
            for key, group in got.items():
                latencies = [f.figures["latency_ms"] for f in expected[key] if f.kind == "answer"]
                if latencies:
                    assert group.latency_ms_p95 == _nearest_rank(latencies, 0.95)

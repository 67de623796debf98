"""What usage reporting and re-pricing cost over a million answers.

    .venv/bin/python bench/usage.py [--answers 1000000] [--days 180] [--queries 30]
        [--keep | --reuse DATABASE]

Against the PostgreSQL on 127.0.0.1 (a fresh database of its own, dropped after unless
``--keep``; ``--reuse`` a kept one skips steps 1 and 2, to measure queries again):

1. **Generating.** ``--answers`` answers (``--turns`` per conversation, a question and
   an answer each) spread evenly over ``--days`` days before now, by 20 keys, over 4
   models of 3 providers (one unpriced), appended straight through the conversations
   application in batches: events per second.
2. **Projecting.** The usage read model caught up from the event store (what a
   rebuild or a new projector does): events per second.
3. **Querying.** ``--queries`` times each: the last 30 days grouped by day and model
   (the issue's aim: p95 under 100 ms), the same by key, and the whole window's
   total; p50/p95/max in ms, straight on the view (no HTTP).
4. **Re-pricing.** A run over every answer at the price book's version 1, applied by
   the usage projector; answers per second, twice (the figures must match).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
MODELS = [("gpt-4o", "openai"), ("gpt-4o-mini", "openai"),
          ("claude-sonnet-4", "anthropic"), ("llama-local", "local")]  # fmt: skip


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def generate(container: Any, tenant_id: str, answers: int, turns: int, days: int) -> int:
    """Conversations of ``turns`` answered questions each, timestamps spread over ``days``."""
    from domain.conversation import Conversation

    app = container.conversations
    now = datetime.now(UTC)
    span = timedelta(days=days).total_seconds()
    keys = [f"key:{uuid.UUID(int=i + 1)}" for i in range(20)]
    written = 0
    batch: list[Conversation] = []
    conversations = (answers + turns - 1) // turns
    for c in range(conversations):
        started = now - timedelta(seconds=span * (1 - c / conversations))
        actor = keys[c % len(keys)]
        conversation = Conversation._create(
            Conversation.Started, id=uuid.uuid4(), tenant_id=tenant_id, actor=actor,
            title="bench", origin="conversations", timestamp=started,
        )  # fmt: skip
        for turn in range(1, min(turns, answers - c * turns) + 1):
            model, provider = MODELS[(c + turn) % len(MODELS)]
            at = started + timedelta(seconds=turn)
            conversation.trigger_event(
                Conversation.QuestionAsked, tenant_id=tenant_id, actor=actor, turn=turn,
                question="q", model=model, mode="hybrid", k=5, flags=[],
                prompt_sha256=None, history_turns=0, timestamp=at,
            )  # fmt: skip
            conversation.trigger_event(
                Conversation.AnswerGenerated, tenant_id=tenant_id, actor="system:answerer",
                turn=turn, answer="a", citations=[], retrieval={}, prompt_template="t",
                provider=provider, model=model, parameters={},
                usage={"input_tokens": 800 + turn, "output_tokens": 120 + c % 50,
                       "cached_input_tokens": 0},
                cost_usd="0.00123", latency_ms=400.0 + (c * 7 + turn * 13) % 900,
                attempts=[], price_book_version=1, price=None, timestamp=at,
            )  # fmt: skip
            written += 1
        batch.append(conversation)
        if len(batch) >= 50:
            app.save(*batch)
            batch = []
    if batch:
        app.save(*batch)
    return written


def timed(fn: Any, n: int) -> dict[str, float]:
    fn()  # warm
    times = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return {"p50": pct(times, 0.5), "p95": pct(times, 0.95), "max": round(max(times), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=1_000_000)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--keep", action="store_true", help="keep the database and its data dir")
    parser.add_argument("--reuse", metavar="DATABASE", help="a database --keep kept")
    args = parser.parse_args()

    name = args.reuse or f"kf_bench_usage_{uuid.uuid4().hex[:8]}"
    if not args.reuse:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    database_url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    # A kept database goes with its data directory (its master key wraps the data keys).
    data_dir = Path(tempfile.gettempdir()) / name
    data_dir.mkdir(exist_ok=True)
    os.environ.update({"KF_LOG_LEVEL": "warning", "KF_DATABASE_URL": database_url})
    try:
        run(args, database_url, data_dir)
    finally:
        if args.keep or args.reuse:
            print(json.dumps({"kept_database": name, "data_dir": str(data_dir)}), flush=True)
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
            with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def generate_and_project(
    args: argparse.Namespace, container: Any, view: Any, tenant_id: str, database_url: str
) -> int:
    """Steps 1 and 2: the answers generated into the store, then projected."""
    started = time.perf_counter()
    answers = generate(container, tenant_id, args.answers, args.turns, args.days)
    seconds = time.perf_counter() - started
    events = container.conversations.head_position()
    print(json.dumps({"generated_answers": answers, "events": events,
                      "seconds": round(seconds, 1),
                      "events_per_s": round(events / seconds)}), flush=True)  # fmt: skip
    started = time.perf_counter()
    view.catch_up_from(container.event_logs)
    seconds = time.perf_counter() - started
    print(json.dumps({"projected_events": events, "seconds": round(seconds, 1),
                      "events_per_s": round(events / seconds)}), flush=True)  # fmt: skip
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")  # what autovacuum would have done by then
    return answers


def run(args: argparse.Namespace, database_url: str, data_dir: Path) -> None:
    from config.root import Container, Endpoints
    from config.schema import migrate
    from config.settings import load_settings
    from domain.usage import ANY_PROVIDER, TokenPrice
    from projections.usage import UsageView, Window
    from projections.usage.routes import prices_now

    settings = load_settings(environ=dict(os.environ), data_dir=data_dir)
    migrate(database_url)
    container = Container(settings, Endpoints(database_url, ""))
    view = container.views["usage"]
    assert isinstance(view, UsageView)
    usage_app = container.usage
    try:
        if args.reuse:
            with psycopg.connect(database_url) as conn:
                row = conn.execute(
                    "SELECT tenant_id, count(*), max(occurred_at) FROM usage_facts"
                    " WHERE kind = 'answer' GROUP BY tenant_id"
                ).fetchone()
            assert row is not None, f"{args.reuse} holds no answers"
            tenant_id, answers, newest = row[0], int(row[1]), row[2]
        else:
            tenant_id = str(uuid.uuid4())
            answers = generate_and_project(args, container, view, tenant_id, database_url)
            # Prices: version 1 is the configured book; version 2 changes one model.
            usage_app.price_book(tenant_id)
            usage_app.set_price(
                tenant_id=tenant_id, actor="bench", provider=ANY_PROVIDER, model="gpt-4o",
                price=TokenPrice(Decimal(2), Decimal(8)),
                effective_from=datetime.now(UTC) - timedelta(days=30),
            )  # fmt: skip
            view.catch_up_from(container.event_logs)
            newest = datetime.now(UTC)
        price_of = prices_now(usage_app, tenant_id)
        now = newest  # a kept database's windows end where its answers do
        month = Window(now - timedelta(days=30), now)
        everything = Window(now - timedelta(days=args.days + 1), now)
        in_month = sum(g.answers for g in view.usage(tenant_id, month, ("day",), price_of))
        for label, window, grouping in [
            ("30 days by day and model", month, ("day", "model")),
            ("30 days by key", month, ("key",)),
            (f"{args.days} days total", everything, ()),
            (f"{args.days} days by month and provider", everything, ("month", "provider")),
        ]:
            figures = timed(
                lambda w=window, g=grouping: list(view.usage(tenant_id, w, g, price_of)),
                args.queries,
            )
            print(json.dumps({"query": label, "answers_in_window": in_month
                              if window is month else answers, **figures}), flush=True)  # fmt: skip

        totals = []
        for attempt in range(0 if args.reuse else 2):
            result = usage_app.reprice(
                tenant_id=tenant_id, actor="bench", price_book_version=1,
                through=container.conversations.head_position(), reason="bench",
            )  # fmt: skip
            started = time.perf_counter()
            view.catch_up_from(container.event_logs)
            seconds = time.perf_counter() - started
            summary = view.repricing(tenant_id, result.id)
            assert summary is not None
            totals.append((summary.answers, summary.unpriced, summary.cost_repriced_usd))
            print(json.dumps({"reprice": attempt + 1, "answers": summary.answers,
                              "unpriced": summary.unpriced,
                              "cost_repriced_usd": f"{summary.cost_repriced_usd:f}",
                              "cost_charged_usd": f"{summary.cost_charged_usd:f}",
                              "seconds": round(seconds, 1),
                              "answers_per_s": round(summary.answers / seconds)}),
                  flush=True)  # fmt: skip
        if totals:
            assert totals[0] == totals[1], "two runs at one version must give the same totals"
            print(json.dumps({"repriced_twice_identical": True}))
    finally:
        container.close()


if __name__ == "__main__":
    main()

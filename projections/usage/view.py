"""Reading usage: per group of a window, what was asked, answered, spent, ingested, searched.

Groups are any of a period (``day``, ``week`` or ``month``, in UTC; weeks start
on Monday) and the dimensions ``key``, ``user``, ``model``, ``provider`` and
``document``. Every figure but the latency percentiles is a sum over the rows of
the group, so summing a figure over the groups of any grouping gives the total
(the grouping by nothing). A row a dimension does not apply to (a search has no
model; an answer has no document; a key's request has no user) falls in that
dimension's ``None`` group rather than out of the sums.

Cost appears twice: as charged (the figure recorded on each answer when it was
generated; answers whose model had no price are counted in
``unpriced_answers``, never priced at 0) and as currently priced (the group's
tokens per provider and model at the prices in force now in the tenant's price
book; ``unpriced_now`` counts answers whose model has no price now).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from psycopg import Connection
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from domain.usage import TokenPrice
from projections.base import ProjectionView
from projections.usage.projection import FACTS, REPRICED, RUNS

PERIODS = ("day", "week", "month")
DIMENSIONS = ("key", "user", "model", "provider", "document")
SEARCH_MODES = ("hybrid", "vector", "keyword", "exact")

# Each grouping's SQL expression over usage_facts (constants: never user input).
_EXPRESSIONS = {
    "day": "(date_trunc('day', occurred_at AT TIME ZONE 'UTC'))::date",
    "week": "(date_trunc('week', occurred_at AT TIME ZONE 'UTC'))::date",
    "month": "(date_trunc('month', occurred_at AT TIME ZONE 'UTC'))::date",
    "key": "CASE WHEN actor LIKE 'key:%%' THEN actor END",
    "user": "CASE WHEN actor LIKE 'jwt:%%' THEN actor END",
    "model": "model",
    "provider": "provider",
    "document": "document_id::text",
}

PriceOf = Callable[[str, str], TokenPrice | None]  # (provider, model) -> the price now


class InvalidGroupingError(ValueError):
    pass


def grouping(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` checked: known, no repeats, at most one period."""
    known = (*PERIODS, *DIMENSIONS)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InvalidGroupingError(
            f"Unknown group_by {', '.join(unknown)}; use any of {', '.join(known)}."
        )
    if len(set(names)) != len(names):
        raise InvalidGroupingError("group_by names a grouping twice.")
    if len([n for n in names if n in PERIODS]) > 1:
        raise InvalidGroupingError("group_by takes at most one of day, week and month.")
    return tuple(names)


@dataclass
class Usage:
    """One group's figures (or the total's, with an empty ``group``)."""

    group: dict[str, str | None]
    questions: int = 0
    answers: int = 0
    failures: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_charged_usd: Decimal = Decimal(0)
    unpriced_answers: int = 0
    cost_current_usd: Decimal = Decimal(0)
    unpriced_now: int = 0
    # With a re-pricing run: the answers it covered at its price book version.
    cost_repriced_usd: Decimal | None = None
    unpriced_repriced: int | None = None
    not_repriced: int | None = None  # answers recorded after the run
    latency_ms_p50: float | None = None
    latency_ms_p95: float | None = None
    documents: int = 0
    bytes: int = 0
    pages: int = 0
    chunks: int = 0
    embedding_tokens: int = 0
    searches: dict[str, int] = field(default_factory=dict)

    ADDITIVE = (
        "questions", "answers", "failures", "input_tokens", "output_tokens",
        "cost_charged_usd", "unpriced_answers", "cost_current_usd", "unpriced_now",
        "documents", "bytes", "pages", "chunks", "embedding_tokens",
    )  # fmt: skip


@dataclass(frozen=True)
class Window:
    start: datetime  # inclusive
    end: datetime  # exclusive
    actor: str | None = None  # only this principal's use
    repricing: UUID | None = None  # beside what was charged, this run's figures


@dataclass(frozen=True)
class RepricingRun:
    run_id: UUID
    price_book_version: int
    through: int
    actor: str
    reason: str
    requested_at: datetime
    position: int
    answers: int  # answers the run covered
    unpriced: int  # of which had no price at that version
    cost_charged_usd: Decimal  # what those answers were charged
    cost_repriced_usd: Decimal  # what they cost at that version


def _group_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


class UsageView(ProjectionView):
    """Usage queries (rows written by ``UsageProjection``)."""

    def usage(
        self, tenant_id: str, window: Window, group_by: Sequence[str], price_of: PriceOf
    ) -> Iterator[Usage]:
        """The groups, in order of their values (``None`` first); constant memory."""
        names = grouping(group_by)
        with self.tenant_reads(tenant_id) as conn:
            yield from self._usage(conn, tenant_id, window, names, price_of)

    def budget_use(
        self, tenant_id: str, scope: str, metric: str, start: datetime, end: datetime
    ) -> tuple[Decimal, int]:
        """Answers' tokens (input + output) or cost as charged in [start, end), of the tenant
        or of one key (``scope``), and the conversations position the figure is at: both
        read in one statement, so the figure holds exactly the answers up to it."""
        figure = (
            "coalesce(sum(input_tokens + output_tokens), 0)"
            if metric == "tokens"
            # Each answer rounded up to a nano-dollar, as budget counters count it.
            else "coalesce(sum(ceil(cost_usd * 1000000000)), 0) / 1000000000"
        )
        by_actor = "" if scope == "tenant" else " AND actor = %(scope)s"
        query = SQL(
            "SELECT (SELECT notification_id FROM {tracking}"  # noqa: S608 - constants
            "  WHERE application_name = 'conversations') AS through,"
            f" (SELECT {figure} FROM {{facts}} WHERE tenant_id = %(tenant)s AND kind = 'answer'"
            f"  AND occurred_at >= %(start)s AND occurred_at < %(end)s{by_actor}) AS used"
        ).format(
            tracking=Identifier(self.tracking_table_name),
            facts=Identifier(self.projection.table(FACTS)),
        )
        params = {"tenant": tenant_id, "start": start, "end": end, "scope": scope}
        with self.datastore.get_connection() as conn:
            row = conn.execute(query, params).fetchone()
        assert row is not None
        return Decimal(row["used"]), int(row["through"] or 0)

    def repricing(self, tenant_id: str, run_id: UUID) -> RepricingRun | None:
        """A run and its totals (None: no such run, or not applied yet)."""
        return self._run(tenant_id, "run.run_id = %s", [run_id])

    def latest_repricing(self, tenant_id: str, price_book_version: int) -> RepricingRun | None:
        """The newest run at ``price_book_version`` (None: there is none yet)."""
        return self._run(tenant_id, "run.price_book_version = %s", [price_book_version])

    def _run(self, tenant_id: str, condition: str, params: list[Any]) -> RepricingRun | None:
        query = SQL(
            "SELECT run.run_id, run.price_book_version, run.through, run.actor, run.reason,"  # noqa: S608 - constants
            " run.requested_at, run.position,"
            " (SELECT count(*) FROM {repriced} r WHERE r.tenant_id = run.tenant_id"
            "   AND r.run_id = run.run_id) AS answers,"
            " (SELECT count(*) FROM {repriced} r WHERE r.tenant_id = run.tenant_id"
            "   AND r.run_id = run.run_id AND r.cost_usd IS NULL) AS unpriced,"
            " (SELECT coalesce(sum(f.cost_usd), 0) FROM {repriced} r JOIN {facts} f"
            "   ON f.tenant_id = r.tenant_id AND f.context = r.context"
            "   AND f.position = r.position"
            "   WHERE r.tenant_id = run.tenant_id AND r.run_id = run.run_id)"
            "   AS cost_charged_usd,"
            " (SELECT coalesce(sum(r.cost_usd), 0) FROM {repriced} r"
            "   WHERE r.tenant_id = run.tenant_id AND r.run_id = run.run_id)"
            "   AS cost_repriced_usd"
            f" FROM {{runs}} run WHERE run.tenant_id = %s AND {condition}"
            " ORDER BY run.position DESC LIMIT 1"
        ).format(
            runs=Identifier(self.projection.table(RUNS)),
            repriced=Identifier(self.projection.table(REPRICED)),
            facts=Identifier(self.projection.table(FACTS)),
        )
        with self.tenant_reads(tenant_id) as conn:
            row = conn.execute(query, [tenant_id, *params]).fetchone()
        if row is None:
            return None
        return RepricingRun(
            **{
                **row,
                "cost_charged_usd": Decimal(row["cost_charged_usd"]),
                "cost_repriced_usd": Decimal(row["cost_repriced_usd"]),
            }
        )

    def total(self, tenant_id: str, window: Window, price_of: PriceOf) -> Usage:
        return next(self.usage(tenant_id, window, (), price_of))

    def _usage(
        self,
        conn: Connection[DictRow],
        tenant_id: str,
        window: Window,
        names: tuple[str, ...],
        price_of: PriceOf,
    ) -> Iterator[Usage]:
        conditions = "f.tenant_id = %s AND occurred_at >= %s AND occurred_at < %s"
        params: list[Any] = [tenant_id, window.start, window.end]
        if window.actor is not None:
            conditions += " AND actor = %s"
            params.append(window.actor)
        repricing: list[str] = []
        join = ""
        if window.repricing is not None:
            join = (
                " LEFT JOIN {repriced} r ON r.tenant_id = f.tenant_id AND r.run_id = %s"
                " AND r.context = f.context AND r.position = f.position"
            )
            params.insert(0, window.repricing)
            repricing = [
                "coalesce(sum(r.cost_usd), 0) AS cost_repriced_usd",
                "count(*) FILTER (WHERE kind = 'answer' AND r.position IS NOT NULL"
                " AND r.cost_usd IS NULL) AS unpriced_repriced",
                "count(*) FILTER (WHERE kind = 'answer' AND r.position IS NULL) AS not_repriced",
            ]
        dims = [f"{_EXPRESSIONS[n]} AS g{i}" for i, n in enumerate(names)]
        keys = [f"g{i}" for i in range(len(names))]
        group = f" GROUP BY {', '.join(keys)}" if keys else ""
        order = f" ORDER BY {', '.join(k + ' NULLS FIRST' for k in keys)}" if keys else ""
        modes = [
            f"count(*) FILTER (WHERE kind = 'search' AND mode = '{m}') AS search_{m}"
            for m in SEARCH_MODES
        ]
        figures = (
            "SELECT "  # noqa: S608 - every piece is a constant of this module
            + ", ".join(
                [
                    *dims,
                    "count(*) FILTER (WHERE kind = 'question') AS questions",
                    "count(*) FILTER (WHERE kind = 'answer') AS answers",
                    "count(*) FILTER (WHERE kind = 'failure') AS failures",
                    "coalesce(sum(input_tokens), 0) AS input_tokens",
                    "coalesce(sum(output_tokens), 0) AS output_tokens",
                    "coalesce(sum(f.cost_usd), 0) AS cost_charged_usd",
                    "count(*) FILTER (WHERE kind = 'answer' AND f.cost_usd IS NULL)"
                    " AS unpriced_answers",
                    "percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms)"
                    " FILTER (WHERE kind = 'answer') AS latency_ms_p50",
                    "percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms)"
                    " FILTER (WHERE kind = 'answer') AS latency_ms_p95",
                    "coalesce(sum(documents), 0) AS documents",
                    "coalesce(sum(bytes), 0) AS bytes",
                    "coalesce(sum(pages), 0) AS pages",
                    "coalesce(sum(chunks), 0) AS chunks",
                    "coalesce(sum(embedding_tokens), 0) AS embedding_tokens",
                    *repricing,
                    *modes,
                    "count(*) FILTER (WHERE kind = 'search' AND (mode IS NULL OR mode NOT IN ("
                    + ", ".join(f"'{m}'" for m in SEARCH_MODES)
                    + "))) AS search_other",
                ]
            )
            + f" FROM {{facts}} f{join} WHERE {conditions}{group}{order}"
        )
        # Tokens per model of each group's answers, in the same order: today's prices.
        by_model = (
            "SELECT "  # noqa: S608 - every piece is a constant of this module
            + ", ".join([*dims, "model AS priced_model", "provider AS priced_provider"])
            + ", sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,"
            " sum(cached_input_tokens) AS cached_input_tokens, count(*) AS answers"
            + f" FROM {{facts}} f WHERE {conditions} AND kind = 'answer'"
            + f" GROUP BY {', '.join([*keys, 'model', 'provider'])}"
            + (f"{order}, model, provider" if keys else " ORDER BY model, provider")
        )
        facts = Identifier(self.projection.table(FACTS))
        repriced = Identifier(self.projection.table(REPRICED))
        model_params = params[1:] if window.repricing is not None else params
        with (
            conn.cursor(name="usage_figures") as figures_cursor,
            conn.cursor(name="usage_by_model") as models_cursor,
        ):
            figures_cursor.itersize = models_cursor.itersize = 2000
            figures_cursor.execute(SQL(figures).format(facts=facts, repriced=repriced), params)
            models_cursor.execute(SQL(by_model).format(facts=facts), model_params)
            priced = iter(models_cursor)
            pending = next(priced, None)
            for row in figures_cursor:
                usage = _figures(names, row)
                key = [row[k] for k in keys]
                while pending is not None and [pending[k] for k in keys] == key:
                    _price(usage, pending, price_of)
                    pending = next(priced, None)
                yield usage


def _figures(names: tuple[str, ...], row: DictRow) -> Usage:
    usage = Usage(group={n: _group_value(row[f"g{i}"]) for i, n in enumerate(names)})
    for name in Usage.ADDITIVE:
        if name in row:
            value = row[name]
            setattr(usage, name, Decimal(value) if name.startswith("cost") else int(value))
    for name in ("latency_ms_p50", "latency_ms_p95"):
        value = row[name]
        setattr(usage, name, None if value is None else round(float(value), 1))
    if "cost_repriced_usd" in row:
        usage.cost_repriced_usd = Decimal(row["cost_repriced_usd"])
        usage.unpriced_repriced = int(row["unpriced_repriced"])
        usage.not_repriced = int(row["not_repriced"])
    usage.searches = {m: int(row[f"search_{m}"]) for m in SEARCH_MODES}
    if row["search_other"]:
        usage.searches["other"] = int(row["search_other"])
    return usage


def _price(usage: Usage, tokens: DictRow, price_of: PriceOf) -> None:
    model, provider = tokens["priced_model"], tokens["priced_provider"]
    price = price_of(provider, model) if model is not None and provider is not None else None
    if price is None:
        usage.unpriced_now += int(tokens["answers"])
        return
    # Exact: no rounding, so groups add up to the total.
    usage.cost_current_usd += price.cost(
        int(tokens["input_tokens"]),
        int(tokens["output_tokens"]),
        int(tokens["cached_input_tokens"]),
    )

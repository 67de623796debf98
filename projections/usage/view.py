"""Reading usage: per group of a window, what was asked, answered, spent, ingested, searched.

Groups are any of a period (``day``, ``week`` or ``month``, in UTC; weeks start
on Monday) and the dimensions ``key``, ``user``, ``model``, ``provider`` and
``document``. Every figure but the latency percentiles is a sum over the rows of
the group, so summing a figure over the groups of any grouping gives the total
(the grouping by nothing). A row a dimension does not apply to (a search has no
model; an answer has no document; a key's request has no user: a user is a person
signed in, or an external issuer's subject) falls in that
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
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from psycopg import Connection
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composed, Identifier

from domain.usage import TokenPrice
from projections.base import ProjectionView
from projections.usage.latency import BUCKETS, RATIO, quantile
from projections.usage.projection import DAILY, FACTS, LATENCY, MODEL_LATENCY, REPRICED, RUNS

PERIODS = ("day", "week", "month")
DIMENSIONS = ("key", "user", "model", "provider", "document")
SEARCH_MODES = ("hybrid", "vector", "keyword", "exact")

# Each grouping's SQL expression over usage_facts (constants: never user input).
_EXPRESSIONS = {
    "day": "(date_trunc('day', f.occurred_at AT TIME ZONE 'UTC'))::date",
    "week": "(date_trunc('week', f.occurred_at AT TIME ZONE 'UTC'))::date",
    "month": "(date_trunc('month', f.occurred_at AT TIME ZONE 'UTC'))::date",
    "key": "CASE WHEN f.actor LIKE 'key:%%' THEN f.actor END",
    "user": "CASE WHEN f.actor LIKE 'user:%%' OR f.actor LIKE 'jwt:%%' THEN f.actor END",
    "model": "f.model",
    "provider": "f.provider",
    "document": "f.document_id::text",
}

# The same over the daily rollup, whose text dimensions use '' for none.
_DAILY = {
    "day": "f.day",
    "week": "(date_trunc('week', f.day))::date",
    "month": "(date_trunc('month', f.day))::date",
    "key": "CASE WHEN f.actor LIKE 'key:%%' THEN f.actor END",
    "user": "CASE WHEN f.actor LIKE 'user:%%' OR f.actor LIKE 'jwt:%%' THEN f.actor END",
    "model": "NULLIF(f.model, '')",
    "provider": "NULLIF(f.provider, '')",
    "document": "NULLIF(f.document_id, '')",
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
        """The groups, in order of their values (``None`` first). Memory grows with the
        number of groups (they are merged from the rollups and the facts), not of rows."""
        names = grouping(group_by)
        # One snapshot: a day of the rollup and the facts subtracted from it must agree,
        # and so must the figures, the latency histogram and the tokens of a group.
        with self.tenant_reads(tenant_id, snapshot=True) as conn:
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
        """Whole UTC days from the daily rollups, the rest from the facts, merged per group
        (``_plan``); everything from the facts when a re-pricing run's figures are asked
        for (they are per answer). The statements share one snapshot (see ``usage``)."""
        groups: dict[tuple[Any, ...], _Group] = {}
        for source, start, end, sign in _plan(window, datetime.now(UTC)):
            self._part(conn, source, tenant_id, window, start, end, sign, names, groups)
        # A group of the rollup whose every fact a subtracted part took back is not in
        # the window (its figures are all 0 now, its facts too). The total stays.
        groups = {key: group for key, group in groups.items() if group.facts or not names}
        if not names and not groups:
            groups[()] = _Group(Usage(group={}))
        for key in sorted(groups, key=_order):
            yield groups[key].finish(price_of)

    def _latency_sql(
        self,
        daily: bool,
        names: tuple[str, ...],
        dims: list[str],
        keys: list[str],
        conditions: str,
        answers: str,
        table: Identifier,
        by_actor: bool,
    ) -> Composed:
        """Answers per group and latency bucket (from a latency rollup, or the facts).

        A group or filter by key or user (``by_actor``) needs the rollup per actor;
        any other the much smaller one without the actor."""
        if daily:  # the latency rollup: answers only, and no document
            latency_dims = [
                f"{'NULL' if n == 'document' else _DAILY[n]} AS g{i}" for i, n in enumerate(names)
            ]
            latency = "f.bucket, sum(f.n) AS c"
            latency_where = conditions
            rollup = LATENCY if by_actor else MODEL_LATENCY
            latency_table = Identifier(self.projection.table(rollup))
        else:
            latency_dims = dims
            latency = (
                f"CASE WHEN f.latency_ms < 1 THEN 0 ELSE least({BUCKETS - 1},"
                f" 1 + floor(ln(f.latency_ms) / ln({RATIO}))::int) END AS bucket, count(*) AS c"
            )
            latency_where = answers
            latency_table = table
        latency_sql = SQL(
            f"SELECT {', '.join([*latency_dims, latency])} FROM {{table}} f"  # noqa: S608
            f" WHERE {latency_where} GROUP BY {', '.join([*keys, 'bucket'])}"
        ).format(table=latency_table)
        return latency_sql

    def _part(
        self,
        conn: Connection[DictRow],
        source: str,
        tenant_id: str,
        window: Window,
        start: datetime,
        end: datetime,
        sign: int,
        names: tuple[str, ...],
        groups: dict[tuple[Any, ...], _Group],
    ) -> None:
        """Add (``sign`` 1) or take back (-1) one part's rows, per group."""
        daily = source == "daily"
        expressions = _DAILY if daily else _EXPRESSIONS
        dims = [f"{expressions[n]} AS g{i}" for i, n in enumerate(names)]
        keys = [f"g{i}" for i in range(len(names))]
        if daily:
            conditions = "f.tenant_id = %s AND f.day >= %s AND f.day < %s"
            params: list[Any] = [tenant_id, start.date(), end.date()]
        else:
            conditions = "f.tenant_id = %s AND f.occurred_at >= %s AND f.occurred_at < %s"
            params = [tenant_id, start, end]
        if window.actor is not None:
            conditions += " AND f.actor = %s"
            params.append(window.actor)
        join, extra = "", []
        if window.repricing is not None:
            join = (
                " LEFT JOIN {repriced} r ON r.tenant_id = f.tenant_id AND r.run_id = %s"
                " AND r.context = f.context AND r.position = f.position"
            )
            params.insert(0, window.repricing)
            extra = [
                "coalesce(sum(r.cost_usd), 0) AS cost_repriced_usd",
                "count(*) FILTER (WHERE kind = 'answer' AND r.position IS NOT NULL"
                " AND r.cost_usd IS NULL) AS unpriced_repriced",
                "count(*) FILTER (WHERE kind = 'answer' AND r.position IS NULL) AS not_repriced",
            ]
        n = "f.n" if daily else "1"
        unpriced = "f.unpriced" if daily else "CASE WHEN f.cost_usd IS NULL THEN 1 ELSE 0 END"
        modes = [
            f"coalesce(sum({n}) FILTER (WHERE kind = 'search' AND mode = '{m}'), 0) AS search_{m}"
            for m in SEARCH_MODES
        ]
        known = ", ".join(f"'{m}'" for m in SEARCH_MODES)
        figures = [
            *dims,
            f"coalesce(sum({n}), 0) AS facts",
            f"coalesce(sum({n}) FILTER (WHERE kind = 'question'), 0) AS questions",
            f"coalesce(sum({n}) FILTER (WHERE kind = 'answer'), 0) AS answers",
            f"coalesce(sum({n}) FILTER (WHERE kind = 'failure'), 0) AS failures",
            "coalesce(sum(f.input_tokens), 0) AS input_tokens",
            "coalesce(sum(f.output_tokens), 0) AS output_tokens",
            "coalesce(sum(f.cost_usd), 0) AS cost_charged_usd",
            f"coalesce(sum({unpriced}) FILTER (WHERE kind = 'answer'), 0) AS unpriced_answers",
            "coalesce(sum(f.documents), 0) AS documents",
            "coalesce(sum(f.bytes), 0) AS bytes",
            "coalesce(sum(f.pages), 0) AS pages",
            "coalesce(sum(f.chunks), 0) AS chunks",
            "coalesce(sum(f.embedding_tokens), 0) AS embedding_tokens",
            *extra,
            *modes,
            f"coalesce(sum({n}) FILTER (WHERE kind = 'search' AND (mode IS NULL OR"
            f" mode NOT IN ({known}))), 0) AS search_other",
        ]
        if daily:  # '' is the rollup's "none"
            figures[-1] = figures[-1].replace("mode IS NULL", "mode = ''")
        group = f" GROUP BY {', '.join(keys)}" if keys else ""
        table = Identifier(self.projection.table(DAILY if daily else FACTS))
        sql = SQL(
            f"SELECT {', '.join(figures)} FROM {{table}} f{join}"  # noqa: S608 - constants
            f" WHERE {conditions}{group}"
        ).format(table=table, repriced=Identifier(self.projection.table(REPRICED)))
        answers = f"{conditions} AND kind = 'answer'"
        answer_params = params[1:] if window.repricing is not None else params
        by_actor = window.actor is not None or bool({"key", "user"} & set(names))
        latency_sql = self._latency_sql(
            daily, names, dims, keys, conditions, answers, table, by_actor
        )
        model = "NULLIF(f.model, '')" if daily else "f.model"
        provider = "NULLIF(f.provider, '')" if daily else "f.provider"
        cached = "f.cached_input_tokens"
        tokens_sql = SQL(
            "SELECT "  # noqa: S608 - every piece is a constant of this module
            + ", ".join([*dims, f"{model} AS priced_model", f"{provider} AS priced_provider"])
            + ", sum(f.input_tokens) AS input_tokens, sum(f.output_tokens) AS output_tokens,"
            f" sum({cached}) AS cached_input_tokens, sum({n}) AS answers"
            f" FROM {{table}} f WHERE {answers}"
            f" GROUP BY {', '.join([*keys, 'priced_model', 'priced_provider'])}"
        ).format(table=table)

        def group_of(row: DictRow) -> _Group:
            key = tuple(row[k] for k in keys)
            group = groups.get(key)
            if group is None:
                group = groups[key] = _Group(Usage(group=_group_of(names, row)))
            return group

        for row in conn.execute(sql, params):
            group_of(row).add(row, sign)
        for row in conn.execute(latency_sql, answer_params):
            group_of(row).hist[int(row["bucket"])] += sign * int(row["c"])
        for row in conn.execute(tokens_sql, answer_params):
            group_of(row).tokens.append(
                (
                    row["priced_provider"],
                    row["priced_model"],
                    sign * int(row["input_tokens"]),
                    sign * int(row["output_tokens"]),
                    sign * int(row["cached_input_tokens"]),
                    sign * int(row["answers"]),
                )
            )


class _Group:
    """One group's figures as the parts of a window come in."""

    def __init__(self, usage: Usage) -> None:
        self.usage = usage
        self.facts = 0  # rows of usage_facts in the group
        self.hist = [0] * BUCKETS
        self.tokens: list[tuple[str | None, str | None, int, int, int, int]] = []

    def add(self, row: DictRow, sign: int) -> None:
        usage = self.usage
        self.facts += sign * int(row["facts"])
        for name in Usage.ADDITIVE:
            if name in row:
                value = row[name]
                if name.startswith("cost"):
                    setattr(usage, name, getattr(usage, name) + sign * Decimal(value))
                else:
                    setattr(usage, name, getattr(usage, name) + sign * int(value))
        if "cost_repriced_usd" in row:  # from the facts alone: never taken back
            usage.cost_repriced_usd = (usage.cost_repriced_usd or Decimal(0)) + Decimal(
                row["cost_repriced_usd"]
            )
            usage.unpriced_repriced = (usage.unpriced_repriced or 0) + int(row["unpriced_repriced"])
            usage.not_repriced = (usage.not_repriced or 0) + int(row["not_repriced"])
        for mode in (*SEARCH_MODES, "other"):
            count = sign * int(row[f"search_{mode}"])
            if count or mode != "other":
                usage.searches[mode] = usage.searches.get(mode, 0) + count

    def finish(self, price_of: PriceOf) -> Usage:
        usage = self.usage
        for mode in SEARCH_MODES:
            usage.searches.setdefault(mode, 0)
        usage.latency_ms_p50 = quantile(self.hist, 0.5)
        usage.latency_ms_p95 = quantile(self.hist, 0.95)
        priced: dict[tuple[str | None, str | None], list[int]] = {}
        for provider, model, inp, out, cached, answers in self.tokens:
            figures = priced.setdefault((provider, model), [0, 0, 0, 0])
            for index, value in enumerate((inp, out, cached, answers)):
                figures[index] += value
        for (provider, model), (inp, out, cached, answers) in priced.items():
            price = price_of(provider, model) if provider and model else None
            if price is None:
                usage.unpriced_now += answers
            else:  # exact: no rounding, so groups add up to the total
                usage.cost_current_usd += price.cost(inp, out, cached)
        return usage


def _group_of(names: tuple[str, ...], row: DictRow) -> dict[str, str | None]:
    return {n: _group_value(row[f"g{i}"]) for i, n in enumerate(names)}


def _order(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """Groups in order of their values, None first (as SQL's NULLS FIRST)."""
    return tuple((value is not None, "" if value is None else str(value)) for value in key)


def _plan(window: Window, now: datetime) -> list[tuple[str, datetime, datetime, int]]:
    """The parts a window is read from: (source, start, end, sign), summing to the window.

    The daily rollups hold whole UTC days; the facts hold every moment. A window's end
    that falls inside a day is read either as the facts from the day's midnight up to
    it (added), or as the whole day from the rollup with the facts from it to the next
    midnight taken back (sign -1); its start likewise. Whichever reads fewer facts is
    taken, counting none after ``now`` (the usual window ends now, so today is read
    whole from the rollup). Signed parts add up to the window exactly, as every figure
    is a sum and the rollups are written with the facts, in one transaction.
    """
    start, end = window.start, window.end

    def facts(a: datetime, b: datetime) -> timedelta:  # the time whose facts are read
        return max(timedelta(0), min(b, now) - a)

    best = [("facts", start, end, 1)]
    if window.repricing is not None:  # per answer: only the facts have it
        return best
    cost = facts(start, end)
    for first in sorted({_midnight(start), _next_midnight(start)}):
        for last in sorted({_midnight(end), _next_midnight(end)}):
            if first >= last:
                continue
            parts = [("daily", first, last, 1)]
            if start < first:
                parts.append(("facts", start, first, 1))
            elif first < start:
                parts.append(("facts", first, start, -1))
            if last < end:
                parts.append(("facts", last, end, 1))
            elif end < last:
                parts.append(("facts", end, last, -1))
            spent = sum((facts(a, b) for _, a, b, _ in parts[1:]), timedelta(0))
            if spent < cost:
                best, cost = parts, spent
    return best


def _midnight(at: datetime) -> datetime:
    at = at.astimezone(UTC)
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


def _next_midnight(at: datetime) -> datetime:
    midnight = _midnight(at)
    return midnight if midnight == at.astimezone(UTC) else midnight + timedelta(days=1)

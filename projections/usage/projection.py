"""Usage: one row per event that is a unit of use, attributed to whoever caused it.

Questions, answers (tokens, cost as charged, provider latency) and failed
answers come from the conversations context; an answer is recorded by the
answerer, but it is the use of whoever asked, so the asker of each turn is kept
(``usage_turns``). Documents (bytes), their pages, chunks and embedding tokens
come from the documents context, attributed to the uploader (``usage_documents``)
although a worker records the processing. Searches come from the activity
context's recorded reads. Every row is keyed by its event's context and
position, so a redelivered event changes nothing, and sums over any grouping of
the rows add up to the totals.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC
from decimal import Decimal
from typing import Any

from psycopg.sql import SQL, Composed, Identifier, Placeholder

from domain.activity import Read, ReadKind
from domain.conversation import Conversation
from domain.document import Document
from domain.usage import PriceBook, Repricing
from infra.envelope import Envelope
from projections.base import Projection, handles
from projections.rows import Rows, postgres
from projections.usage.latency import bucket

FACTS = "usage_facts"
DAILY = "usage_daily"
LATENCY = "usage_daily_latency"
MODEL_LATENCY = "usage_daily_model_latency"  # the same without the actor
TURNS = "usage_turns"
DOCUMENTS = "usage_documents"
PRICES = "usage_price_entries"
RUNS = "usage_repricings"
REPRICED = "usage_repriced"


FACT_COLUMNS = (
    "tenant_id", "context", "position", "kind", "occurred_at", "actor", "model", "provider",
    "mode", "document_id", "input_tokens", "output_tokens", "cached_input_tokens", "cost_usd",
    "price_book_version", "latency_ms", "documents", "bytes", "pages", "chunks",
    "embedding_tokens",
)  # fmt: skip
FACT_DEFAULTS: dict[str, Any] = {
    "model": None, "provider": None, "mode": None, "document_id": None, "input_tokens": 0,
    "output_tokens": 0, "cached_input_tokens": 0, "cost_usd": None, "price_book_version": None,
    "latency_ms": None, "documents": 0, "bytes": 0, "pages": 0, "chunks": 0,
    "embedding_tokens": 0,
}  # fmt: skip


DAILY_SUMS = (
    "n", "input_tokens", "output_tokens", "cached_input_tokens", "cost_usd", "unpriced",
    "documents", "bytes", "pages", "chunks", "embedding_tokens",
)  # fmt: skip
DAILY_COLUMNS = (
    "tenant_id", "day", "kind", "actor", "model", "provider", "mode", "document_id",
    *DAILY_SUMS,
)  # fmt: skip


class RepricingAheadError(RuntimeError):
    """A re-pricing run arrived before the answers it covers: apply it after a catch-up."""


def like_pattern(model: str) -> str:
    """A model glob (``*``, ``?``) as a LIKE pattern with ``\\`` as its escape."""
    escaped = model.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


# Each answer up to a run's position, at the book as it was at the run's version: per
# (provider, model, effective_from) the entry set last up to that version; per answer
# the most specific entry in force at its time (this provider over any, the exact name
# over a pattern, the latest effective_from, the one set last), as domain.usage does.
# Multiplying by 0.000001 (not dividing by a million) keeps numeric exact; each answer
# is then rounded to 8 places as charges are (domain.usage.charged).
_REPRICE = """
WITH book AS (
    SELECT DISTINCT ON (provider, model, effective_from) *
    FROM {prices}
    WHERE tenant_id = %(tenant)s AND set_in_version <= %(version)s
    ORDER BY provider, model, effective_from, set_in_version DESC, ordinal DESC
)
INSERT INTO {repriced} (tenant_id, run_id, context, position, cost_usd)
SELECT f.tenant_id, %(run)s, f.context, f.position,
       round(
         (  (f.input_tokens - least(f.cached_input_tokens, f.input_tokens)) * p.input_per_million
          + least(f.cached_input_tokens, f.input_tokens)
            * coalesce(p.cached_input_per_million, p.input_per_million)
          + f.output_tokens * p.output_per_million) * 0.000001,
         8)
FROM {facts} f
LEFT JOIN LATERAL (
    SELECT * FROM book b
    WHERE (b.provider = f.provider OR b.provider = '*')
      AND f.model LIKE b.model_like ESCAPE '\\'
      AND b.effective_from <= f.occurred_at
    ORDER BY (b.provider <> '*') DESC, (b.model = f.model) DESC, b.effective_from DESC,
             b.set_in_version DESC, b.ordinal DESC
    LIMIT 1
) p ON true
WHERE f.tenant_id = %(tenant)s AND f.kind = 'answer' AND f.context = 'conversations'
  AND f.position <= %(through)s
"""


class UsageProjection(Projection):
    name = "usage"
    tables = {
        FACTS: ("tenant_id", "context", "position"),
        DAILY: ("tenant_id", "day", "kind", "actor", "model", "provider", "mode", "document_id"),
        LATENCY: ("tenant_id", "day", "actor", "model", "provider", "bucket"),
        MODEL_LATENCY: ("tenant_id", "day", "model", "provider", "bucket"),
        TURNS: ("tenant_id", "conversation_id", "turn"),
        DOCUMENTS: ("tenant_id", "document_id"),
        PRICES: ("tenant_id", "set_in_version", "ordinal"),
        RUNS: ("tenant_id", "run_id"),
        REPRICED: ("tenant_id", "run_id", "context", "position"),
    }

    def __init__(self, *, variant: str = "") -> None:
        super().__init__(variant=variant)
        self._conversations_applied = 0  # in the batch being applied, so far
        # Rows are written in batches (one statement per kind per batch, sent at its end):
        # what a later event of the same batch needs of them is kept here meanwhile.
        self._turns: dict[tuple[str, str, int], dict[str, Any]] = {}
        self._uploaders: dict[tuple[str, str], str] = {}
        self._insert_fact = SQL("INSERT INTO {} ({}) VALUES ({})").format(
            Identifier(self.table(FACTS)),
            SQL(", ").join(Identifier(c) for c in FACT_COLUMNS),
            SQL(", ").join(Placeholder() for _ in FACT_COLUMNS),
        )
        self._insert_turn = SQL(
            "INSERT INTO {} (tenant_id, conversation_id, turn, actor, model, mode)"
            " VALUES (%s, %s, %s, %s, %s, %s)"
        ).format(Identifier(self.table(TURNS)))
        columns = SQL(", ").join(Identifier(c) for c in DAILY_COLUMNS)
        added = SQL(", ").join(
            SQL("{c} = d.{c} + EXCLUDED.{c}").format(c=Identifier(c)) for c in DAILY_SUMS
        )
        self._upsert_daily = SQL(
            "INSERT INTO {} AS d ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}"
        ).format(
            Identifier(self.table(DAILY)),
            columns,
            SQL(", ").join(Placeholder() for _ in DAILY_COLUMNS),
            SQL(", ").join(Identifier(c) for c in self.tables[DAILY]),
            added,
        )
        self._upsert_latency = self._count_upsert(LATENCY)
        self._upsert_model_latency = self._count_upsert(MODEL_LATENCY)
        self._daily: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._latency: dict[tuple[Any, ...], int] = {}
        self._insert_document = SQL(
            "INSERT INTO {} (tenant_id, document_id, actor) VALUES (%s, %s, %s)"
        ).format(Identifier(self.table(DOCUMENTS)))

    def _count_upsert(self, table: str) -> Composed:
        """Add ``n`` to a latency rollup's row (its key, then n), made if missing."""
        key = SQL(", ").join(Identifier(c) for c in self.tables[table])
        return SQL(
            "INSERT INTO {} AS d ({}, n) VALUES ({})"
            " ON CONFLICT ({}) DO UPDATE SET n = d.n + EXCLUDED.n"
        ).format(
            Identifier(self.table(table)),
            key,
            SQL(", ").join(Placeholder() for _ in range(len(self.tables[table]) + 1)),
            key,
        )

    def before_batch(self, rows: Rows, envelopes: Sequence[Envelope]) -> None:
        self._turns.clear()
        self._uploaders.clear()
        self._daily.clear()
        self._latency.clear()
        if not any(e.event_type == "Repricing.Requested" for e in envelopes):
            return
        found = (
            postgres(rows)
            .cursor.execute(
                SQL("SELECT notification_id FROM {} WHERE application_name = %s").format(
                    Identifier(f"{self.view_name}_tracking")
                ),
                ("conversations",),
            )
            .fetchone()
        )
        self._conversations_applied = int(found["notification_id"] or 0) if found else 0

    def apply(self, rows: Rows, envelope: Envelope) -> None:
        super().apply(rows, envelope)
        if envelope.context == "conversations":
            self._conversations_applied = envelope.position

    def _fact(self, rows: Rows, envelope: Envelope, kind: str, actor: str, **values: Any) -> None:
        fact = {
            **FACT_DEFAULTS,
            "tenant_id": envelope.tenant_id,
            "context": envelope.context,
            "position": envelope.position,
            "kind": kind,
            "occurred_at": envelope.occurred_at,
            "actor": actor,
            **values,
        }
        postgres(rows).writes.add(self._insert_fact, tuple(fact[c] for c in FACT_COLUMNS))
        self._roll_up(fact)

    def _roll_up(self, fact: dict[str, Any]) -> None:
        """Add the fact to its day's row (written once per batch, in after_batch)."""
        key = (
            fact["tenant_id"], fact["occurred_at"].astimezone(UTC).date(), fact["kind"],
            fact["actor"], fact["model"] or "", fact["provider"] or "", fact["mode"] or "",
            "" if fact["document_id"] is None else str(fact["document_id"]),
        )  # fmt: skip
        day = self._daily.get(key)
        if day is None:
            day = self._daily[key] = {c: 0 for c in DAILY_SUMS} | {"cost_usd": Decimal(0)}
        day["n"] += 1
        for column in ("input_tokens", "output_tokens", "cached_input_tokens", "documents",
                       "bytes", "pages", "chunks", "embedding_tokens"):  # fmt: skip
            day[column] += fact[column]
        if fact["kind"] == "answer":
            if fact["cost_usd"] is None:
                day["unpriced"] += 1
            else:
                day["cost_usd"] += fact["cost_usd"]
            if fact["latency_ms"] is not None:
                at = (*key[:2], *key[3:6], bucket(fact["latency_ms"]))
                self._latency[at] = self._latency.get(at, 0) + 1

    def after_batch(self, rows: Rows) -> None:
        writes = postgres(rows).writes
        for key, day in self._daily.items():
            values = dict(zip(self.tables[DAILY], key, strict=True)) | day
            writes.add(self._upsert_daily, tuple(values[c] for c in DAILY_COLUMNS))
        by_model: dict[tuple[Any, ...], int] = {}
        for at, count in self._latency.items():
            writes.add(self._upsert_latency, (*at, count))
            without_actor = (*at[:2], *at[3:])
            by_model[without_actor] = by_model.get(without_actor, 0) + count
        for at, count in by_model.items():
            writes.add(self._upsert_model_latency, (*at, count))
        self._daily.clear()
        self._latency.clear()

    # ------------------------------------------------------------ conversations

    def _turn(self, rows: Rows, envelope: Envelope) -> dict[str, Any]:
        key = (envelope.tenant_id, envelope.aggregate_id, int(envelope.data["turn"]))
        if key in self._turns:
            return self._turns[key]
        found = rows.select(
            TURNS,
            {
                "tenant_id": envelope.tenant_id,
                "conversation_id": uuid.UUID(envelope.aggregate_id),
                "turn": envelope.data["turn"],
            },
        )
        # A turn asked before this read model existed is still replayed first on a
        # rebuild; without it (never: the question precedes its outcome) the
        # recorder of the outcome is the best attribution there is.
        return found[0] if found else {"actor": envelope.actor, "model": None, "mode": None}

    @handles(Conversation.QuestionAsked)
    def _asked(self, rows: Rows, envelope: Envelope) -> None:
        data = envelope.data
        turn = {"actor": envelope.actor, "model": data["model"], "mode": data["mode"]}
        self._turns[(envelope.tenant_id, envelope.aggregate_id, int(data["turn"]))] = turn
        postgres(rows).writes.add(
            self._insert_turn,
            (envelope.tenant_id, uuid.UUID(envelope.aggregate_id), data["turn"], *turn.values()),
        )
        self._fact(
            rows, envelope, "question", envelope.actor, model=data["model"], mode=data["mode"]
        )

    @handles(Conversation.AnswerGenerated)
    def _answered(self, rows: Rows, envelope: Envelope) -> None:
        data = envelope.data
        turn = self._turn(rows, envelope)
        usage = data.get("usage") or {}
        cost = data.get("cost_usd")
        self._fact(
            rows,
            envelope,
            "answer",
            turn["actor"],
            model=data["model"],
            provider=data["provider"],
            mode=turn["mode"],
            input_tokens=int(usage.get("input_tokens", 0)),
            output_tokens=int(usage.get("output_tokens", 0)),
            cached_input_tokens=int(usage.get("cached_input_tokens", 0)),
            cost_usd=None if cost is None else Decimal(cost),
            price_book_version=data.get("price_book_version"),
            latency_ms=float(data["latency_ms"]),
        )

    @handles(Conversation.AnswerFailed)
    def _failed(self, rows: Rows, envelope: Envelope) -> None:
        turn = self._turn(rows, envelope)
        self._fact(rows, envelope, "failure", turn["actor"], model=turn["model"], mode=turn["mode"])

    # ---------------------------------------------------------------- documents

    def _uploader(self, rows: Rows, envelope: Envelope) -> str:
        key = (envelope.tenant_id, envelope.aggregate_id)
        if key in self._uploaders:
            return self._uploaders[key]
        found = rows.select(
            DOCUMENTS,
            {"tenant_id": envelope.tenant_id, "document_id": uuid.UUID(envelope.aggregate_id)},
        )
        return str(found[0]["actor"]) if found else envelope.actor

    def _document_fact(self, rows: Rows, envelope: Envelope, kind: str, **values: Any) -> None:
        self._fact(
            rows,
            envelope,
            kind,
            self._uploader(rows, envelope),
            document_id=uuid.UUID(envelope.aggregate_id),
            **values,
        )

    @handles(Document.Uploaded)
    def _uploaded(self, rows: Rows, envelope: Envelope) -> None:
        self._uploaders[(envelope.tenant_id, envelope.aggregate_id)] = envelope.actor
        postgres(rows).writes.add(
            self._insert_document,
            (envelope.tenant_id, uuid.UUID(envelope.aggregate_id), envelope.actor),
        )
        self._document_fact(
            rows, envelope, "document", documents=1, bytes=int(envelope.data["size_bytes"])
        )

    @handles(Document.Parsed)
    def _parsed(self, rows: Rows, envelope: Envelope) -> None:
        self._document_fact(rows, envelope, "parsed", pages=envelope.data["page_count"] or 0)

    @handles(Document.Chunked)
    def _chunked(self, rows: Rows, envelope: Envelope) -> None:
        self._document_fact(rows, envelope, "chunked", chunks=envelope.data["chunk_count"])

    @handles(Document.Embedded)
    def _embedded(self, rows: Rows, envelope: Envelope) -> None:
        self._document_fact(
            rows, envelope, "embedded", embedding_tokens=envelope.data.get("token_count") or 0
        )

    # ----------------------------------------------------------------- searches

    @handles(Read.Recorded)
    def _read(self, rows: Rows, envelope: Envelope) -> None:
        data = envelope.data
        if data["kind"] == ReadKind.SEARCH.value:
            self._fact(rows, envelope, "search", envelope.actor, mode=data.get("mode"))

    # ------------------------------------------------------------------ prices

    def _prices(
        self, rows: Rows, envelope: Envelope, entries: list[dict[str, Any]], version: int
    ) -> None:
        rows.insert_many(
            PRICES,
            [
                {
                    "tenant_id": envelope.tenant_id,
                    "set_in_version": version,
                    "ordinal": ordinal,
                    "provider": entry["provider"],
                    "model": entry["model"],
                    "model_like": like_pattern(entry["model"]),
                    "effective_from": entry["effective_from"],
                    "input_per_million": Decimal(entry["price"]["input_per_million"]),
                    "output_per_million": Decimal(entry["price"]["output_per_million"]),
                    "cached_input_per_million": None
                    if entry["price"].get("cached_input_per_million") is None
                    else Decimal(entry["price"]["cached_input_per_million"]),
                    "currency": entry["price"].get("currency", "USD"),
                }
                for ordinal, entry in enumerate(entries)
            ],
        )

    @handles(PriceBook.Opened)
    def _opened(self, rows: Rows, envelope: Envelope) -> None:
        self._prices(rows, envelope, list(envelope.data["prices"]), envelope.aggregate_version)

    @handles(PriceBook.PriceSet)
    def _price_set(self, rows: Rows, envelope: Envelope) -> None:
        data = envelope.data
        self._prices(rows, envelope, [data], envelope.aggregate_version)

    @handles(Repricing.Requested)
    def _reprice(self, rows: Rows, envelope: Envelope) -> None:
        """Every answer up to the run's position, priced at the run's book version."""
        data = envelope.data
        through = int(data["through"])
        if self._conversations_applied < through:
            raise RepricingAheadError(
                f"re-pricing run {envelope.aggregate_id} covers conversations up to {through};"
                f" applied so far: {self._conversations_applied}"
            )
        run_id = uuid.UUID(envelope.aggregate_id)
        sql = postgres(rows)
        sql.writes.flush(sql.cursor)  # the answers this batch brought, before pricing them
        rows.insert(
            RUNS,
            {
                "tenant_id": envelope.tenant_id,
                "run_id": run_id,
                "price_book_version": data["price_book_version"],
                "through": through,
                "actor": envelope.actor,
                "reason": data["reason"],
                "requested_at": envelope.occurred_at,
                "position": envelope.position,
            },
        )
        sql.cursor.execute(
            SQL(_REPRICE).format(
                prices=Identifier(self.table(PRICES)),
                repriced=Identifier(self.table(REPRICED)),
                facts=Identifier(self.table(FACTS)),
            ),
            {
                "tenant": envelope.tenant_id,
                "version": data["price_book_version"],
                "run": run_id,
                "through": through,
            },
        )

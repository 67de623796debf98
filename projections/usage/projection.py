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
from decimal import Decimal
from typing import Any

from domain.activity import Read, ReadKind
from domain.conversation import Conversation
from domain.document import Document
from infra.envelope import Envelope
from projections.base import Projection, handles
from projections.rows import Rows

FACTS = "usage_facts"
TURNS = "usage_turns"
DOCUMENTS = "usage_documents"


class UsageProjection(Projection):
    name = "usage"
    tables = {
        FACTS: ("tenant_id", "context", "position"),
        TURNS: ("tenant_id", "conversation_id", "turn"),
        DOCUMENTS: ("tenant_id", "document_id"),
    }

    @staticmethod
    def _fact(envelope: Envelope, kind: str, actor: str, **values: Any) -> dict[str, Any]:
        return {
            "tenant_id": envelope.tenant_id,
            "context": envelope.context,
            "position": envelope.position,
            "kind": kind,
            "occurred_at": envelope.occurred_at,
            "actor": actor,
            **values,
        }

    # ------------------------------------------------------------ conversations

    def _turn(self, rows: Rows, envelope: Envelope) -> dict[str, Any]:
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
        rows.insert(
            TURNS,
            {
                "tenant_id": envelope.tenant_id,
                "conversation_id": uuid.UUID(envelope.aggregate_id),
                "turn": data["turn"],
                "actor": envelope.actor,
                "model": data["model"],
                "mode": data["mode"],
            },
        )
        rows.insert(
            FACTS,
            self._fact(
                envelope, "question", envelope.actor, model=data["model"], mode=data["mode"]
            ),
        )

    @handles(Conversation.AnswerGenerated)
    def _answered(self, rows: Rows, envelope: Envelope) -> None:
        data = envelope.data
        turn = self._turn(rows, envelope)
        usage = data.get("usage") or {}
        cost = data.get("cost_usd")
        rows.insert(
            FACTS,
            self._fact(
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
            ),
        )

    @handles(Conversation.AnswerFailed)
    def _failed(self, rows: Rows, envelope: Envelope) -> None:
        turn = self._turn(rows, envelope)
        rows.insert(
            FACTS,
            self._fact(envelope, "failure", turn["actor"], model=turn["model"], mode=turn["mode"]),
        )

    # ---------------------------------------------------------------- documents

    def _uploader(self, rows: Rows, envelope: Envelope) -> str:
        found = rows.select(
            DOCUMENTS,
            {"tenant_id": envelope.tenant_id, "document_id": uuid.UUID(envelope.aggregate_id)},
        )
        return str(found[0]["actor"]) if found else envelope.actor

    def _document_fact(self, rows: Rows, envelope: Envelope, kind: str, **values: Any) -> None:
        rows.insert(
            FACTS,
            self._fact(
                envelope,
                kind,
                self._uploader(rows, envelope),
                document_id=uuid.UUID(envelope.aggregate_id),
                **values,
            ),
        )

    @handles(Document.Uploaded)
    def _uploaded(self, rows: Rows, envelope: Envelope) -> None:
        rows.insert(
            DOCUMENTS,
            {
                "tenant_id": envelope.tenant_id,
                "document_id": uuid.UUID(envelope.aggregate_id),
                "actor": envelope.actor,
            },
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
            rows.insert(
                FACTS, self._fact(envelope, "search", envelope.actor, mode=data.get("mode"))
            )

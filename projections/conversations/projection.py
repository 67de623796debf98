"""What conversation events do to transcripts: a row per conversation and per turn.

Each handler checks the aggregate version it expects (and a turn's outcome
that its turn is pending), so an event applied out of order fails loudly
instead of corrupting a transcript. A citation keeps which chunk was cited
(document, chunk index, page, score), not its text.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any
from uuid import UUID

from psycopg.sql import SQL, Identifier

from domain.conversation import Conversation
from domain.document import Document
from infra.crypto import ERASED
from infra.envelope import Envelope
from projections.base import OutOfOrderError, Projection, confirm_erasure, handles
from projections.rows import PostgresRows, Rows

WITHHELD = "[withheld: it quoted an erased document]"

CONVERSATIONS = "conversations"
TURNS = "conversation_turns"


class ConversationsProjection(Projection):
    name = "conversations"
    opens_sealed = True
    tables = {
        CONVERSATIONS: ("tenant_id", "conversation_id"),
        TURNS: ("tenant_id", "conversation_id", "turn"),
    }

    @staticmethod
    def _key(envelope: Envelope) -> dict[str, Any]:
        return {"tenant_id": envelope.tenant_id, "conversation_id": UUID(envelope.aggregate_id)}

    def _touch(self, rows: Rows, envelope: Envelope, values: dict[str, Any]) -> None:
        """Advance the conversation row to this event's version (or refuse: out of order)."""
        self.advance(rows, CONVERSATIONS, self._key(envelope), envelope, values)

    def _end_turn(self, rows: Rows, envelope: Envelope, values: dict[str, Any]) -> None:
        turn = envelope.data["turn"]
        changed = rows.update(
            TURNS,
            {**self._key(envelope), "turn": turn, "status": "pending"},
            {**values, "answered_at": envelope.occurred_at, "position": envelope.position},
        )
        if changed != 1:
            raise OutOfOrderError(
                f"conversations: {envelope.event_type} for turn {turn} of "
                f"{envelope.aggregate_id}, which is not pending"
            )
        self._touch(rows, envelope, {})

    @handles(Conversation.Started)
    def _started(self, rows: Rows, envelope: Envelope) -> None:
        data = envelope.data
        rows.insert(
            CONVERSATIONS,
            {
                **self._key(envelope),
                "title": data["title"],
                "origin": data["origin"],
                "started_by": envelope.actor,
                "started_at": envelope.occurred_at,
                "updated_at": envelope.occurred_at,
                "turn_count": 0,
                "version": envelope.aggregate_version,
                "position": envelope.position,
            },
        )

    @handles(Conversation.QuestionAsked)
    def _asked(self, rows: Rows, envelope: Envelope) -> None:
        data = envelope.data
        rows.insert(
            TURNS,
            {
                **self._key(envelope),
                "turn": data["turn"],
                "question": data["question"],
                "asked_by": envelope.actor,
                "asked_at": envelope.occurred_at,
                "requested_model": data["model"],
                "mode": data["mode"],
                "k": data["k"],
                "flags": list(data["flags"]),
                "prompt_sha256": data["prompt_sha256"],
                "history_turns": data["history_turns"],
                "status": "pending",
                "citations": [],
                "attempts": [],
                "position": envelope.position,
            },
        )
        self._touch(rows, envelope, {"turn_count": data["turn"]})

    @handles(Conversation.AnswerGenerated)
    def _answered(self, rows: Rows, envelope: Envelope) -> None:
        data = envelope.data
        self._end_turn(
            rows,
            envelope,
            {
                "status": "answered",
                # Its key is gone: a document it quoted was erased (or it was recorded so).
                "answer": WITHHELD if data["answer"] in (ERASED, WITHHELD) else data["answer"],
                "citations": list(data["citations"]),
                "retrieval": dict(data["retrieval"]),
                "prompt_template": data["prompt_template"],
                "provider": data["provider"],
                "model": data["model"],
                "parameters": dict(data["parameters"]),
                "input_tokens": data["usage"].get("input_tokens"),
                "output_tokens": data["usage"].get("output_tokens"),
                "cost_usd": None if data["cost_usd"] is None else Decimal(data["cost_usd"]),
                "latency_ms": data["latency_ms"],
                "attempts": list(data["attempts"]),
            },
        )

    @handles(Conversation.AnswerFailed)
    def _failed(self, rows: Rows, envelope: Envelope) -> None:
        data = envelope.data
        self._end_turn(
            rows,
            envelope,
            {
                "status": "failed",
                "failure_code": data["code"],
                "failure_reason": data["reason"],
                "attempts": list(data["attempts"]),
            },
        )

    @handles(Document.Erased)
    def _document_erased(self, rows: Rows, envelope: Envelope) -> None:
        """Turns that were given the document's passages lose their answer and the file
        names they cite (their keys were destroyed with the erasure; a replay reads them
        so); questions, usage and cost stay. Citations keep which chunk, not its text."""
        quoted = [{"document_id": envelope.aggregate_id}]
        if isinstance(rows, PostgresRows):
            changed = rows.cursor.execute(
                SQL(
                    "UPDATE {} SET answer = CASE WHEN status = 'answered' THEN %s ELSE answer END,"
                    " citations = COALESCE((SELECT jsonb_agg(CASE WHEN c ? 'filename'"
                    "   THEN c || jsonb_build_object('filename', %s::text) ELSE c END)"
                    "   FROM jsonb_array_elements(citations) c), '[]'::jsonb),"
                    " retrieval = CASE WHEN retrieval ? 'passages' THEN jsonb_set(retrieval,"
                    "   ARRAY['passages'], COALESCE((SELECT jsonb_agg(CASE WHEN p ? 'filename'"
                    "   THEN p || jsonb_build_object('filename', %s::text) ELSE p END)"
                    "   FROM jsonb_array_elements(retrieval->'passages') p), '[]'::jsonb))"
                    "   ELSE retrieval END"
                    " WHERE tenant_id = %s AND (citations @> %s::jsonb"
                    "   OR retrieval->'passages' @> %s::jsonb)"
                    " AND answer IS DISTINCT FROM %s"  # its conversation is erased: stays so
                ).format(Identifier(self.table(TURNS))),
                (
                    WITHHELD,
                    ERASED,
                    ERASED,
                    envelope.tenant_id,
                    json.dumps(quoted),
                    json.dumps(quoted),
                    ERASED,
                ),
            ).rowcount
        else:
            changed = 0
            for turn in rows.select(TURNS, {"tenant_id": envelope.tenant_id}):
                if turn.get("answer") == ERASED:
                    continue  # its conversation is erased: it stays so
                retrieval = dict(turn.get("retrieval") or {})
                passages = retrieval.get("passages", [])
                if not any(
                    c.get("document_id") == envelope.aggregate_id
                    for c in [*turn["citations"], *passages]
                ):
                    continue
                if "passages" in retrieval:
                    retrieval["passages"] = [_unnamed(p) for p in passages]
                values: dict[str, Any] = {
                    "citations": [_unnamed(c) for c in turn["citations"]],
                    "retrieval": retrieval or turn.get("retrieval"),
                }
                if turn["status"] == "answered":
                    values["answer"] = WITHHELD
                key = {k: turn[k] for k in self.tables[TURNS]}
                changed += rows.update(TURNS, key, values)
        confirm_erasure(rows, self.name, envelope, {"turns_withheld": changed})

    @handles(Conversation.Erased)
    def _erased(self, rows: Rows, envelope: Envelope) -> None:
        """Title, questions, answers, the queries searched and cited file names read
        ``[erased]``; usage, cost, models and which chunks were cited stay."""
        key = self._key(envelope)
        [conversation] = rows.select(CONVERSATIONS, key)
        self._touch(
            rows,
            envelope,
            {"title": ERASED if conversation["title"] else "", "erased_at": envelope.occurred_at},
        )
        turns = rows.select(TURNS, key)
        for turn in turns:
            retrieval = turn.get("retrieval")
            if retrieval:
                retrieval = {**retrieval, "passages": [
                    _unnamed(p) for p in retrieval.get("passages", [])
                ]}  # fmt: skip
                if "query" in retrieval:
                    retrieval["query"] = ERASED
            rows.update(
                TURNS,
                {**key, "turn": turn["turn"]},
                {
                    "question": ERASED,
                    "answer": ERASED if turn.get("answer") is not None else None,
                    "citations": [_unnamed(c) for c in turn["citations"]],
                    "retrieval": retrieval,
                    "failure_reason": ERASED if turn.get("failure_reason") else None,
                },
            )
        confirm_erasure(rows, self.name, envelope, {"turns_erased": len(turns)})


def _unnamed(cited: dict[str, Any]) -> dict[str, Any]:
    return {**cited, "filename": ERASED} if "filename" in cited else cited

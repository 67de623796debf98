"""What conversation events do to transcripts: a row per conversation and per turn.

Each handler checks the aggregate version it expects (and a turn's outcome
that its turn is pending), so an event applied out of order fails loudly
instead of corrupting a transcript. A citation keeps which chunk was cited
(document, chunk index, page, score), not its text.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import UUID

from domain.conversation import Conversation
from infra.envelope import Envelope
from projections.base import OutOfOrderError, Projection, handles
from projections.rows import Rows

CONVERSATIONS = "conversations"
TURNS = "conversation_turns"


class ConversationsProjection(Projection):
    name = "conversations"
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
                "answer": data["answer"],
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

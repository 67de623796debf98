"""Who was shown which document: every recorded read, and every answer, per document.

Follows ``Read.Recorded`` of reads that show content (searches, documents,
transcripts, prompts, files; not audit reads about a document) and the
conversations context: an answer's passages, everything given to the model,
are attributed to whoever asked the question, through the route it came by
(``answer``, or ``chat_completion`` for the OpenAI-protocol route).
One row per (read, document). Every row comes from one context's events in
that context's order, so the read model is the same however the contexts are
interleaved.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from domain.activity import Read, ReadKind, Retention
from domain.conversation import Conversation
from infra.envelope import Envelope
from projections.base import Projection, handles
from projections.rows import Rows

READS = "document_reads"
TURNS = "reader_turns"
CONVERSATIONS = "reader_conversations"
READ_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://knowledge-foundry/document-reads")


class ReadersProjection(Projection):
    name = "readers"
    tables = {
        READS: ("tenant_id", "read_id", "document_id"),
        TURNS: ("tenant_id", "conversation_id", "turn"),
        CONVERSATIONS: ("tenant_id", "conversation_id"),
    }

    def _shown(
        self, rows: Rows, envelope: Envelope, actor: str, route: str, documents: list[str]
    ) -> None:
        read_id = uuid.uuid5(READ_NAMESPACE, envelope.message_id)
        for document_id in dict.fromkeys(documents):  # the batch's rows go together
            rows.insert_batched(
                READS,
                {
                    "tenant_id": envelope.tenant_id,
                    "read_id": read_id,
                    "document_id": uuid.UUID(document_id),
                    "actor": actor,
                    "route": route,
                    "occurred_at": envelope.occurred_at,
                    "context": envelope.context,
                    "position": envelope.position,
                },
            )

    @handles(Retention.Applied)
    def _retention(self, rows: Rows, envelope: Envelope) -> None:
        """Reads older than the tenant's retention leave who-saw (answers do not: they are
        the conversations' record, not access records)."""
        rows.delete_before(
            READS,
            {"tenant_id": envelope.tenant_id, "context": "activity"},
            "occurred_at",
            datetime.fromisoformat(envelope.data["cutoff"]),
        )

    @handles(Read.Recorded)
    def _read(self, rows: Rows, envelope: Envelope) -> None:
        data = envelope.data
        if ReadKind(data["kind"]).shows_content:  # not audit reads about a document
            self._shown(rows, envelope, envelope.actor, data["kind"], list(data["documents"]))

    @staticmethod
    def _conversation(envelope: Envelope) -> dict[str, Any]:
        return {
            "tenant_id": envelope.tenant_id,
            "conversation_id": uuid.UUID(envelope.aggregate_id),
        }

    @handles(Conversation.Started)
    def _started(self, rows: Rows, envelope: Envelope) -> None:
        rows.insert(
            CONVERSATIONS, {**self._conversation(envelope), "origin": envelope.data["origin"]}
        )

    @handles(Conversation.QuestionAsked)
    def _asked(self, rows: Rows, envelope: Envelope) -> None:
        rows.insert(
            TURNS,
            {
                **self._conversation(envelope),
                "turn": envelope.data["turn"],
                "actor": envelope.actor,
            },
        )

    @handles(Conversation.AnswerGenerated)
    def _answered(self, rows: Rows, envelope: Envelope) -> None:
        data = envelope.data
        key = self._conversation(envelope)
        asked = rows.select(TURNS, {**key, "turn": data["turn"]})
        started = rows.select(CONVERSATIONS, key)
        origin = started[0]["origin"] if started else "conversations"
        given = [p["document_id"] for p in data["retrieval"].get("passages", [])]
        cited = [c["document_id"] for c in data["citations"]]
        self._shown(
            rows,
            envelope,
            asked[0]["actor"] if asked else envelope.actor,
            "chat_completion" if origin == "chat_completions" else "answer",
            [*given, *cited],
        )

"""The ``Conversation`` aggregate: questions, and answers that say how they were produced.

An ``AnswerGenerated`` event is the record a compliance reviewer replays: the
cited chunks (with the document version and score each had), the retrieval
mode, k and fusion settings, the read-model positions that were searched, the
prompt template version, the provider, model and parameters, token usage,
cost (or that the model was unpriced) and latency. A question whose answer
could not be produced ends in ``AnswerFailed`` with a reason, so every
question has exactly one recorded outcome.
"""

from __future__ import annotations

import unicodedata
from typing import Any
from uuid import uuid4

from eventsourcing.domain import Aggregate

from domain.errors import DomainError, NotFoundError, ValidationError

MAX_TITLE_CHARS = 200


class Conversation(Aggregate):
    # ------------------------------------------------------------------ events

    class Event(Aggregate.Event):
        tenant_id: str
        actor: str

    class Started(Event, Aggregate.Created):
        title: str

    class QuestionAsked(Event):
        turn: int
        question: str
        model: str
        mode: str
        k: int
        flags: list[str]  # injection rules that matched (policy "flag")

        def apply(self, aggregate: Any) -> None:
            conversation: Conversation = aggregate
            conversation.turns.append({"question": self.question, "answer": None})
            conversation.pending_turn = self.turn

    class AnswerGenerated(Event):
        turn: int
        answer: str
        citations: list[dict[str, Any]]
        retrieval: dict[str, Any]
        prompt_template: str
        provider: str
        model: str
        parameters: dict[str, Any]
        usage: dict[str, int]
        cost_usd: str | None  # None: the model is not in the price table
        latency_ms: float
        attempts: list[str]

        def apply(self, aggregate: Any) -> None:
            conversation: Conversation = aggregate
            conversation.turns[self.turn - 1]["answer"] = self.answer
            conversation.pending_turn = None

    class AnswerFailed(Event):
        turn: int
        code: str
        reason: str
        attempts: list[str]

        def apply(self, aggregate: Any) -> None:
            conversation: Conversation = aggregate
            conversation.pending_turn = None

    # ------------------------------------------------------------------- state

    def __init__(self, tenant_id: str, title: str) -> None:
        self.tenant_id = tenant_id
        self.title = title
        self.turns: list[dict[str, str | None]] = []
        self.pending_turn: int | None = None

    # --------------------------------------------------------------- decisions

    @classmethod
    def start(cls, *, tenant_id: str, actor: str, title: str = "") -> Conversation:
        title = unicodedata.normalize("NFC", title).strip()
        if len(title) > MAX_TITLE_CHARS or any(unicodedata.category(c) == "Cc" for c in title):
            raise InvalidConversationError(
                f"A title is at most {MAX_TITLE_CHARS} characters, without control characters."
            )
        return cls._create(cls.Started, id=uuid4(), tenant_id=tenant_id, actor=actor, title=title)

    def ask(
        self, *, actor: str, question: str, model: str, mode: str, k: int, flags: list[str]
    ) -> int:
        """Record a question; returns its turn number (from 1)."""
        if self.pending_turn is not None:
            raise QuestionPendingError(
                f"Turn {self.pending_turn} of this conversation is still being answered."
            )
        turn = len(self.turns) + 1
        self.trigger_event(
            self.QuestionAsked,
            tenant_id=self.tenant_id,
            actor=actor,
            turn=turn,
            question=question,
            model=model,
            mode=mode,
            k=k,
            flags=flags,
        )
        return turn

    def record_answer(self, *, actor: str, turn: int, **record: Any) -> bool:
        if self.pending_turn != turn:
            return False  # answered (or failed) already: a retry appends nothing
        self.trigger_event(
            self.AnswerGenerated, tenant_id=self.tenant_id, actor=actor, turn=turn, **record
        )
        return True

    def record_failure(
        self, *, actor: str, turn: int, code: str, reason: str, attempts: list[str]
    ) -> bool:
        if self.pending_turn != turn:
            return False
        self.trigger_event(
            self.AnswerFailed,
            tenant_id=self.tenant_id,
            actor=actor,
            turn=turn,
            code=code,
            reason=reason,
            attempts=attempts,
        )
        return True

    def history(self) -> list[tuple[str, str]]:
        """(question, answer) of the turns answered so far, oldest first."""
        return [
            (str(t["question"]), str(t["answer"])) for t in self.turns if t["answer"] is not None
        ]


class ConversationNotFoundError(NotFoundError):
    code = "conversation_not_found"


class InvalidConversationError(ValidationError):
    code = "invalid_conversation"


class QuestionPendingError(DomainError):
    code = "question_pending"

"""The ``Conversation`` aggregate: questions, and answers that say how they were produced.

An ``AnswerGenerated`` event is the record a compliance reviewer replays: the
cited chunks (with the document version and score each had), the retrieval
mode, k and fusion settings, the read-model positions that were searched, the
prompt template version, the provider, model and parameters, token usage,
cost (or that the model was unpriced) and latency. A question whose answer
could not be produced ends in ``AnswerFailed`` with a reason, so every
question has exactly one recorded outcome.

A conversation is started through the conversations API or, one per request,
through the OpenAI-compatible chat endpoint (``origin``), whose client sends
the earlier turns itself. Either way ``QuestionAsked`` carries the digest of
the exact messages the model was given (a blob: the claim check), so what the
model saw can be read back byte for byte.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.domain import Aggregate

from domain.access import Principal, Role
from domain.errors import DomainError, GoneError, NotFoundError, ValidationError

MAX_TITLE_CHARS = 200
ORIGINS = ("conversations", "chat_completions")


class Conversation(Aggregate):
    # ------------------------------------------------------------------ events

    class Event(Aggregate.Event):
        tenant_id: str
        actor: str

    class Started(Event, Aggregate.Created):
        title: str
        origin: str  # v2: conversations | chat_completions

        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["origin"] = "conversations"

    class QuestionAsked(Event):
        turn: int
        question: str
        model: str
        mode: str
        k: int
        flags: list[str]  # injection rules that matched (policy "flag")
        # v2: the messages sent to the model (JSON, in the blob store), and how
        # many earlier turns they include. None/0 for questions asked before v2.
        prompt_sha256: str | None
        history_turns: int

        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["prompt_sha256"] = None
            state["history_turns"] = 0

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
        usage: dict[str, int]  # input_tokens, output_tokens; v2: cached_input_tokens
        cost_usd: str | None  # None: no price in force for the model
        latency_ms: float
        attempts: list[str]
        # v2: the tenant's price book version the answer was charged from, and the price
        # used (provider, model pattern, effective_from, per-million prices); None
        # before v2, and the price None when the model had none.
        price_book_version: int | None
        price: dict[str, Any] | None

        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["price_book_version"] = None
            state["price"] = None

        def apply(self, aggregate: Any) -> None:
            conversation: Conversation = aggregate
            conversation.turns[self.turn - 1]["answer"] = self.answer
            conversation.pending_turn = None

    class Erased(Event):
        """The conversation's key and its turns' keys were destroyed with this event: its
        title, questions, answers and recorded prompts can no longer be read; usage and
        cost stay. Irreversible."""

        cause: str  # request | retention
        turns: int

        def apply(self, aggregate: Any) -> None:
            conversation: Conversation = aggregate
            conversation.erased = True
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

    def __init__(self, tenant_id: str, actor: str, title: str, origin: str) -> None:
        self.tenant_id = tenant_id
        self.started_by = actor
        self.title = title
        self.origin = origin
        self.turns: list[dict[str, str | None]] = []
        self.pending_turn: int | None = None
        self.erased = False

    # --------------------------------------------------------------- decisions

    @classmethod
    def start(
        cls,
        *,
        tenant_id: str,
        actor: str,
        title: str = "",
        origin: str = "conversations",
        conversation_id: UUID | None = None,
        seal: Callable[[str], str] = str,
    ) -> Conversation:
        """``seal``: how the title is kept in the event (sealed with the conversation's key)."""
        title = unicodedata.normalize("NFC", title).strip()
        if len(title) > MAX_TITLE_CHARS or any(unicodedata.category(c) == "Cc" for c in title):
            raise InvalidConversationError(
                f"A title is at most {MAX_TITLE_CHARS} characters, without control characters."
            )
        if origin not in ORIGINS:
            raise InvalidConversationError(f"Unknown conversation origin {origin!r}.")
        return cls._create(
            cls.Started,
            id=conversation_id or uuid4(),
            tenant_id=tenant_id,
            actor=actor,
            title=seal(title) if title else title,
            origin=origin,
        )

    def visible_to(self, principal: Principal) -> bool:
        return visible_to(self.started_by, principal)

    def ask(
        self,
        *,
        actor: str,
        question: str,
        model: str,
        mode: str,
        k: int,
        flags: list[str],
        prompt_sha256: str | None = None,
        history_turns: int = 0,
    ) -> int:
        """Record a question; returns its turn number (from 1)."""
        if self.erased:
            raise ConversationErasedError("The conversation was erased.")
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
            prompt_sha256=prompt_sha256,
            history_turns=history_turns,
        )
        return turn

    def record_answer(self, *, actor: str, turn: int, **record: Any) -> bool:
        if self.pending_turn != turn:
            return False  # answered (or failed) already: a retry appends nothing
        record = {"price_book_version": None, "price": None, **record}  # unpriced unless said
        self.trigger_event(
            self.AnswerGenerated, tenant_id=self.tenant_id, actor=actor, turn=turn, **record
        )
        return True

    def erase(self, *, actor: str, cause: str = "request") -> bool:
        """Erase the conversation; False if it is erased already."""
        if self.erased:
            return False
        if cause not in ("request", "retention"):
            raise ValueError(f"unknown erasure cause {cause!r}")
        self.trigger_event(
            self.Erased, tenant_id=self.tenant_id, actor=actor, cause=cause, turns=len(self.turns)
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

    @property
    def next_turn(self) -> int:
        return len(self.turns) + 1

    def history(self) -> list[tuple[str, str]]:
        """(question, answer) of the turns answered so far, oldest first (as the events
        keep them: sealed; ``ConversationsApp.history`` opens them)."""
        return [
            (str(t["question"]), str(t["answer"])) for t in self.turns if t["answer"] is not None
        ]


def reviews_all(principal: Principal) -> bool:
    """Tenant admins review every conversation of their tenant."""
    return principal.role.allows(Role.ADMIN)


def visible_to(started_by: str, principal: Principal) -> bool:
    """Who may read or continue a conversation: whoever started it, or a tenant admin."""
    return principal.actor == started_by or reviews_all(principal)


class ConversationNotFoundError(NotFoundError):
    code = "conversation_not_found"


class InvalidConversationError(ValidationError):
    code = "invalid_conversation"


class QuestionPendingError(DomainError):
    code = "question_pending"


class ConversationErasedError(GoneError):
    code = "conversation_erased"

"""Command handlers of the conversations context (events table ``conversations_events``).

What a person may want erased is sealed here before it is recorded
(``infra.crypto``): a conversation's title and questions with the conversation's
key; a turn's answer, the file names it cites and the prompt it was given (a blob)
with the turn's own key, which *quotes* the documents its passages came from and
those the earlier turns it repeats quoted, so that erasing any of them destroys it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.utils import EnvType

from commands.base import CommandResult, ContextApplication
from domain.conversation import (
    Conversation,
    ConversationErasedError,
    ConversationNotFoundError,
)
from domain.errors import ConflictError
from infra.blobs import EVENTS_WITH_BLOBS, put_row, sealed_row
from infra.crypto import (
    ERASED,
    DataKey,
    KeyStore,
    SubjectErasedError,
    conversation_key,
    destroy_keys,
    document_key,
    turn_key,
)

WITHHELD = "[withheld: it quoted an erased document]"
"""What a turn's answer reads as once a document it quoted is erased."""


class QuotedContentErasedError(ConflictError):
    code = "content_erased"


class ConversationsApp(ContextApplication):
    context = "conversations"

    def __init__(self, env: EnvType | None = None, *, keys: KeyStore) -> None:
        super().__init__({**(env or {}), "APPLICATION_RECORDER_TOPIC": EVENTS_WITH_BLOBS})
        self.keys = keys

    def _start(
        self, tenant_id: str, actor: str, title: str, origin: str = "conversations"
    ) -> tuple[Conversation, DataKey]:
        """A new conversation (not yet recorded), its title sealed with its new key."""
        conversation_id = uuid4()
        key = self.keys.create(tenant_id, conversation_key(conversation_id))
        conversation = Conversation.start(
            tenant_id=tenant_id,
            actor=actor,
            title=title,
            origin=origin,
            conversation_id=conversation_id,
            seal=key.seal_text,
        )
        return conversation, key

    def start_conversation(self, *, tenant_id: str, actor: str, title: str = "") -> CommandResult:
        conversation, _ = self._start(tenant_id, actor, title)
        position = self.record(conversation)
        assert position is not None
        return CommandResult(conversation.id, position, changed=True)

    def start_and_ask(
        self,
        *,
        tenant_id: str,
        actor: str,
        title: str,
        origin: str,
        prompt: bytes,
        quotes: Sequence[str],
        **question: Any,
    ) -> tuple[Conversation, int, int]:
        """Start a conversation with its first question, both events in one append."""
        conversation, key = self._start(tenant_id, actor, title, origin)
        return self._ask(conversation, key, actor=actor, prompt=prompt, quotes=quotes, **question)

    def history(self, conversation: Conversation) -> list[tuple[str, str]]:
        """(question, answer) of the turns answered so far, opened; an answer whose key is
        gone (it quoted an erased document, or the conversation is erased) is withheld."""
        turns = conversation.history()
        opener = self.keys.opener().prefetch(turns)
        opened = [(opener.text(q), opener.text(a)) for q, a in turns]
        return [(q, WITHHELD if a == ERASED else a) for q, a in opened]

    def get_conversation(self, tenant_id: str, conversation_id: UUID) -> Conversation:
        conversation: object
        try:
            conversation = self.repository.get(conversation_id)
        except AggregateNotFoundError:
            raise ConversationNotFoundError(f"No conversation {conversation_id}.") from None
        if not isinstance(conversation, Conversation) or conversation.tenant_id != tenant_id:
            raise ConversationNotFoundError(f"No conversation {conversation_id}.")
        return conversation

    def ask(
        self,
        conversation: Conversation,
        *,
        actor: str,
        prompt: bytes,
        quotes: Sequence[str],
        **question: Any,
    ) -> tuple[Conversation, int, int]:
        """Record a question in a conversation loaded by ``get_conversation``.

        Returns the conversation, the turn and the position. A question recorded
        meanwhile by another request makes the save conflict (409): nothing is written.
        """
        if conversation.erased:
            raise ConversationErasedError("The conversation was erased.")
        key = self.keys.create(conversation.tenant_id, conversation_key(conversation.id))
        return self._ask(conversation, key, actor=actor, prompt=prompt, quotes=quotes, **question)

    def _ask(
        self,
        conversation: Conversation,
        key: DataKey,
        *,
        actor: str,
        prompt: bytes,
        quotes: Sequence[str],
        **question: Any,
    ) -> tuple[Conversation, int, int]:
        """``prompt``: the messages sent to the model, stored sealed with the new turn's key
        in the same transaction as the question; ``quotes``: the documents its passages
        come from. If one of them is erased meanwhile nothing is written (409)."""
        tenant_id = conversation.tenant_id
        turn_id = turn_key(conversation.id, conversation.next_turn)
        earlier = [turn_key(conversation.id, n) for n in range(1, conversation.next_turn)]
        quoted = {document_key(d) for d in quotes} | self.keys.quoted_by(earlier)
        new_key, wrapped = self.keys.new_key(turn_id)
        blob = sealed_row(tenant_id, prompt, new_key)
        turn = conversation.ask(
            actor=actor,
            question=key.seal_text(question.pop("question")),
            prompt_sha256=str(blob[2]),
            **question,
        )
        try:
            position = self.record(
                conversation,
                also=[
                    lambda c: self.keys.insert_key(c, tenant_id, new_key, wrapped, quotes=quoted),
                    lambda c: put_row(c, blob),
                ],
            )
        except SubjectErasedError as exc:
            raise QuotedContentErasedError(
                "A document this question would quote was erased meanwhile; ask again."
            ) from exc
        assert position is not None
        return conversation, turn, position

    def record_answer(
        self, *, tenant_id: str, conversation_id: UUID, turn: int, actor: str, **record: Any
    ) -> CommandResult:
        """Record a turn's answer, its text and the file names it cites sealed with the
        turn's key (and the question it searched with the conversation's). If the key is
        gone (a document it quoted was erased while it was being answered), the answer is
        recorded withheld: its text is not kept."""
        conversation = self.get_conversation(tenant_id, conversation_id)
        keys = self.keys.get_many(
            [turn_key(conversation_id, turn), conversation_key(conversation_id)]
        )
        sealed = keys.get(turn_key(conversation_id, turn))
        question_key = keys.get(conversation_key(conversation_id))

        def seal(text: str) -> str:
            return sealed.seal_text(text) if sealed is not None else ERASED

        def cited(c: dict[str, Any]) -> dict[str, Any]:
            return {**c, "filename": seal(str(c["filename"]))} if "filename" in c else c

        retrieval = dict(record["retrieval"])
        if "query" in retrieval:
            query = str(retrieval["query"])
            retrieval["query"] = question_key.seal_text(query) if question_key else ERASED
        retrieval["passages"] = [cited(p) for p in retrieval.get("passages", [])]
        record = {
            **record,
            "answer": seal(record["answer"]) if sealed is not None else WITHHELD,
            "citations": [cited(c) for c in record["citations"]],
            "retrieval": retrieval,
        }
        if not conversation.record_answer(actor=actor, turn=turn, **record):
            return CommandResult(conversation_id, self.position_of(conversation_id), False)
        position = self.record(conversation)
        assert position is not None
        return CommandResult(conversation_id, position, changed=True)

    def erase_conversation(
        self, *, tenant_id: str, actor: str, conversation_id: UUID, cause: str = "request"
    ) -> CommandResult:
        """Erase a conversation: ``Conversation.Erased`` appended and the conversation's key
        and its turns' keys destroyed (with the prompts sealed with them) in one transaction.
        Erasing an erased conversation changes nothing."""
        conversation = self.get_conversation(tenant_id, conversation_id)
        if not conversation.erase(actor=actor, cause=cause):
            return CommandResult(conversation_id, self.position_of(conversation_id), False)
        position = self.record(
            conversation,
            also=[lambda c: destroy_keys(c, tenant_id, conversation_key(conversation_id))],
        )
        assert position is not None
        return CommandResult(conversation_id, position, changed=True)

    def record_failure(
        self,
        *,
        tenant_id: str,
        conversation_id: UUID,
        turn: int,
        actor: str,
        code: str,
        reason: str,
        attempts: list[str],
    ) -> CommandResult:
        conversation = self.get_conversation(tenant_id, conversation_id)
        if not conversation.record_failure(
            actor=actor, turn=turn, code=code, reason=reason, attempts=attempts
        ):
            return CommandResult(conversation_id, self.position_of(conversation_id), False)
        position = self.record(conversation)
        assert position is not None
        return CommandResult(conversation_id, position, changed=True)

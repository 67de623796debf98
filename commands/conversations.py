"""Command handlers of the conversations context (events table ``conversations_events``)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from commands.base import CommandResult, ContextApplication
from domain.conversation import Conversation, ConversationNotFoundError


class ConversationsApp(ContextApplication):
    context = "conversations"

    def start_conversation(self, *, tenant_id: str, actor: str, title: str = "") -> CommandResult:
        conversation = Conversation.start(tenant_id=tenant_id, actor=actor, title=title)
        position = self.record(conversation)
        assert position is not None
        return CommandResult(conversation.id, position, changed=True)

    def start_and_ask(
        self, *, tenant_id: str, actor: str, title: str, origin: str, **question: Any
    ) -> tuple[Conversation, int, int]:
        """Start a conversation with its first question, both events in one append."""
        conversation = Conversation.start(
            tenant_id=tenant_id, actor=actor, title=title, origin=origin
        )
        turn = conversation.ask(actor=actor, **question)
        position = self.record(conversation)
        assert position is not None
        return conversation, turn, position

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
        self, conversation: Conversation, *, actor: str, **question: Any
    ) -> tuple[Conversation, int, int]:
        """Record a question in a conversation loaded by ``get_conversation``.

        Returns the conversation, the turn and the position. A question recorded
        meanwhile by another request makes the save conflict (409): nothing is written.
        """
        turn = conversation.ask(actor=actor, **question)
        position = self.record(conversation)
        assert position is not None
        return conversation, turn, position

    def record_answer(
        self, *, tenant_id: str, conversation_id: UUID, turn: int, actor: str, **record: Any
    ) -> CommandResult:
        conversation = self.get_conversation(tenant_id, conversation_id)
        if not conversation.record_answer(actor=actor, turn=turn, **record):
            return CommandResult(conversation_id, self.position_of(conversation_id), False)
        position = self.record(conversation)
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

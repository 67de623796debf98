"""Conversations read back: transcripts with their citations (``GET /v1/conversations``)."""

from projections.conversations.projection import ConversationsProjection
from projections.conversations.routes import router
from projections.conversations.view import (
    ConversationEntry,
    ConversationPage,
    ConversationsView,
    Prompt,
    Transcript,
    TurnEntry,
)
from projections.slice import ReadModel

READ_MODEL = ReadModel(
    projection=ConversationsProjection,
    view=ConversationsView,
    migrations=("0005_conversations.sql",),
    router=router,
)

__all__ = [
    "READ_MODEL",
    "ConversationEntry",
    "ConversationPage",
    "ConversationsProjection",
    "ConversationsView",
    "Prompt",
    "Transcript",
    "TurnEntry",
]

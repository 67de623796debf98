"""Dependencies of the write API's routers, taken from the app the composition root built."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from commands.access import AccessApp
from commands.conversations import ConversationsApp
from commands.documents import DocumentsApp


def _documents(request: Request) -> DocumentsApp:
    documents: DocumentsApp = request.app.state.documents
    return documents


def _access(request: Request) -> AccessApp:
    access: AccessApp = request.app.state.access
    return access


def _conversations(request: Request) -> ConversationsApp:
    conversations: ConversationsApp = request.app.state.conversations
    return conversations


Documents = Annotated[DocumentsApp, Depends(_documents)]
Conversations = Annotated[ConversationsApp, Depends(_conversations)]
Access = Annotated[AccessApp, Depends(_access)]

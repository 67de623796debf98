"""Dependencies of the write API's routers, taken from the app the composition root built."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from commands.access import AccessApp
from commands.answering import Answerer, AnswerFailedError
from commands.budgets import BudgetGuard
from commands.conversations import ConversationsApp
from commands.dead_letters import DeadLetters
from commands.documents import DocumentsApp
from commands.usage import UsageApp
from infra.web import ApiError


def _documents(request: Request) -> DocumentsApp:
    documents: DocumentsApp = request.app.state.documents
    return documents


def _access(request: Request) -> AccessApp:
    access: AccessApp = request.app.state.access
    return access


def _conversations(request: Request) -> ConversationsApp:
    conversations: ConversationsApp = request.app.state.conversations
    return conversations


def _answerer(request: Request) -> Answerer:
    answerer: Answerer = request.app.state.answerer
    return answerer


def _usage(request: Request) -> UsageApp:
    usage: UsageApp = request.app.state.usage_app
    return usage


def _dead_letters(request: Request) -> DeadLetters:
    letters: DeadLetters = request.app.state.dead_letters
    return letters


def _budget_guard(request: Request) -> BudgetGuard:
    guard: BudgetGuard = request.app.state.budget_guard
    return guard


def answer_failed(failure: AnswerFailedError) -> ApiError:
    """The HTTP error for an answer the provider could not give (retry hint included)."""
    headers = {"Retry-After": str(int(failure.retry_after_s or 1))}
    return ApiError(failure.status, failure.code, failure.message, headers)


Documents = Annotated[DocumentsApp, Depends(_documents)]
AnswererDep = Annotated[Answerer, Depends(_answerer)]
Conversations = Annotated[ConversationsApp, Depends(_conversations)]
Access = Annotated[AccessApp, Depends(_access)]
Usage = Annotated[UsageApp, Depends(_usage)]
Guard = Annotated[BudgetGuard, Depends(_budget_guard)]
Letters = Annotated[DeadLetters, Depends(_dead_letters)]

"""Conversations over HTTP: start one, ask questions (JSON, or streamed as server-sent events)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Header
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from commands.answering import Answer, AnswerFailedError, Question
from domain.conversation import MAX_TITLE_CHARS, ConversationNotFoundError
from infra.web import ERROR_RESPONSES, ErrorBody, Viewer
from write_api.deps import AnswererDep, Conversations, answer_failed

router = APIRouter(prefix="/v1/conversations", tags=["conversations"])


class StartConversation(BaseModel):
    title: str = Field("", max_length=MAX_TITLE_CHARS)


class Started(BaseModel):
    id: UUID
    position: int


class Ask(BaseModel):
    question: str = Field(min_length=1, description="What to ask of the tenant's documents.")
    model: str | None = Field(None, max_length=200, description="Default: llm.default_model.")
    mode: Literal["hybrid", "vector", "keyword"] = "hybrid"
    k: int | None = Field(None, ge=1, description="Passages to retrieve (default qa.default_k).")


class Citation(BaseModel):
    n: int
    document_id: str
    filename: str
    page: int | None
    chunk_index: int
    text: str


class Usage(BaseModel):
    input_tokens: int
    output_tokens: int


class AnswerOut(BaseModel):
    turn: int
    answer: str
    citations: list[Citation]
    provider: str
    model: str
    usage: Usage
    cost_usd: str | None = Field(description="None when the model is not in the price table.")
    latency_ms: float
    flags: list[str] = Field(description="Prompt-injection rules that matched (recorded).")
    position: int

    @classmethod
    def of(cls, answer: Answer) -> AnswerOut:
        return cls(
            turn=answer.turn,
            answer=answer.text,
            citations=[
                Citation(**{k: c[k] for k in Citation.model_fields}) for c in answer.citations
            ],
            provider=answer.provider,
            model=answer.model,
            usage=Usage(**answer.usage),
            cost_usd=answer.cost_usd,
            latency_ms=answer.latency_ms,
            flags=answer.flags,
            position=answer.position,
        )


@router.post("", status_code=201, response_model=Started, responses=ERROR_RESPONSES)
def start_conversation(
    principal: Viewer, conversations: Conversations, body: StartConversation | None = None
) -> Started:
    """Start a conversation; ask questions in it with POST .../questions."""
    result = conversations.start_conversation(
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        title=body.title if body else "",
    )
    return Started(id=result.id, position=result.position)


@router.post(
    "/{conversation_id}/erase",
    status_code=202,
    response_model=Started,
    responses={**ERROR_RESPONSES, 404: {"model": ErrorBody}},
)
def erase_conversation(
    principal: Viewer, conversations: Conversations, conversation_id: UUID
) -> Started:
    """Erase a conversation, irreversibly (whoever started it, or an admin): its title,
    questions, answers and recorded prompts can no longer be read (their keys are destroyed
    with ``Conversation.Erased``); its usage and cost stay, and the audit trail keeps that
    it happened. Repeating it changes nothing."""
    conversation = conversations.get_conversation(principal.tenant_id, conversation_id)
    if not conversation.visible_to(principal):
        raise ConversationNotFoundError(f"No conversation {conversation_id}.")
    result = conversations.erase_conversation(
        tenant_id=principal.tenant_id, actor=principal.actor, conversation_id=conversation_id
    )
    return Started(id=result.id, position=result.position)


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


@router.post(
    "/{conversation_id}/questions",
    response_model=AnswerOut,
    responses={
        **ERROR_RESPONSES,
        200: {
            "description": "The answer; with Accept: text/event-stream, a stream of `delta` "
            "events and a final `answer` event (or an `error` event)",
            "content": {"text/event-stream": {}},
        },
        404: {"model": ErrorBody},
        409: {"model": ErrorBody, "description": "A question of this conversation is pending"},
        502: {"model": ErrorBody, "description": "The model provider failed"},
        503: {"model": ErrorBody, "description": "The model provider is rate limited or down"},
    },
)
def ask_question(
    principal: Viewer,
    answerer: AnswererDep,
    conversation_id: UUID,
    body: Ask,
    accept: Annotated[str, Header()] = "application/json",
) -> Any:
    """Answer from the tenant's documents with numbered citations; every outcome is recorded."""
    prepared = answerer.prepare(
        principal,
        conversation_id,
        Question(body.question, model=body.model, mode=body.mode, k=body.k),
    )
    if "text/event-stream" not in accept:
        try:
            return AnswerOut.of(answerer.answer(principal, prepared))
        except AnswerFailedError as failure:
            raise answer_failed(failure) from None

    def events() -> Iterator[bytes]:
        answering = answerer.stream(principal, prepared)
        try:
            for item in answering:
                if isinstance(item, Answer):
                    yield _sse("answer", AnswerOut.of(item).model_dump())
                else:
                    yield _sse("delta", {"text": item})
        except AnswerFailedError as failure:
            yield _sse("error", {"code": failure.code, "message": failure.message})
        finally:
            answering.close()  # a client that left: the answer's outcome is recorded now

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
    )

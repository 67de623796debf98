"""The OpenAI Chat Completions protocol, answering from the caller's documents.

``POST /v1/chat/completions`` (streaming or not) and ``GET /v1/models``, so the
official ``openai`` client and OpenAI-compatible chat front ends work with a
base URL of ``<kf>/v1`` and a Knowledge Foundry key as the API key.

Each request is one recorded question: a conversation is started with it
(origin ``chat_completions``) and the client's earlier user and assistant
messages are the history, as the protocol has the client send them. System
and developer messages are not passed on: the platform's answering prompt
(passages are data, never instructions) governs. The answer's text ends with
its numbered sources; the citations also ride in the extra ``citations``
field, and what was recorded in ``kf`` (see docs/chat-completions.md).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any, Literal
from uuid import UUID

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from commands.answering import Answer, Answerer, AnswerFailedError, Prepared, Question
from domain.access import Principal
from infra.web import OPENAI_ERROR_RESPONSES, ApiError, OpenAIErrorBody, Viewer, openai_error
from write_api.deps import AnswererDep, answer_failed

router = APIRouter(prefix="/v1", tags=["openai-compatible"])

MAX_MESSAGES = 500
_FINISH_REASONS = {
    "stop": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "length": "length",
    "max_tokens": "length",
    "content_filter": "content_filter",
}


# ------------------------------------------------------------------ request


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str = Field(max_length=50)
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = Field(None, max_length=200)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class KfOptions(BaseModel):
    """Knowledge Foundry's own request options (``extra_body={"kf": {...}}``)."""

    mode: Literal["hybrid", "vector", "keyword"] = "hybrid"
    k: int | None = Field(None, ge=1, description="Passages to retrieve (default qa.default_k).")


class ChatCompletionRequest(BaseModel):
    # Unknown OpenAI parameters (user, seed, top_p, ...) are accepted and ignored.
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=200)
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    n: int | None = Field(None, ge=1)
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    kf: KfOptions = Field(default_factory=KfOptions)


# ----------------------------------------------------------------- response


class ChatCitation(BaseModel):
    n: int
    document_id: str
    filename: str
    page: int | None
    chunk_index: int
    text: str


class Recorded(BaseModel):
    """Where the question and its answer were recorded, and how it was produced."""

    conversation_id: UUID
    turn: int
    position: int
    provider: str
    cost_usd: str | None
    latency_ms: float
    flags: list[str]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str
    logprobs: None = None


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage
    citations: list[ChatCitation] = Field(description="The passages the answer cites, by [n].")
    kf: Recorded


class ModelOut(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "knowledge-foundry"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelOut]


# ------------------------------------------------------------------ mapping


def _text(message: ChatMessage) -> str:
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    texts = []
    for part in message.content:
        if part.type != "text" or part.text is None:
            raise ApiError(
                422,
                "unsupported_content",
                f"Only text content is supported, not {part.type!r} parts.",
            )
        texts.append(part.text)
    return "\n".join(texts)


def question_of(body: ChatCompletionRequest) -> Question:
    """The last user message as the question, earlier user/assistant turns as its history."""
    if body.n not in (None, 1):
        raise ApiError(422, "unsupported_parameter", "Only n=1 is supported.")
    if body.tools or body.functions:
        raise ApiError(422, "unsupported_parameter", "Tools and functions are not supported.")
    turns = [m for m in body.messages if m.role in ("user", "assistant")]
    if not turns or turns[-1].role != "user":
        raise ApiError(422, "no_question", "The last user or assistant message must be a user's.")
    history: list[tuple[str, str]] = []
    asked: list[str] = []
    for message in turns[:-1]:
        if message.role == "user":
            asked.append(_text(message))
        elif asked:
            history.append(("\n".join(asked), _text(message)))
            asked = []
        elif history:  # two assistant messages in a row: one answer
            history[-1] = (history[-1][0], history[-1][1] + "\n" + _text(message))
    question = "\n".join([*asked, _text(turns[-1])])
    return Question(
        question,
        model=body.model,
        mode=body.kf.mode,
        k=body.kf.k,
        history=history,
        temperature=0.0 if body.temperature is None else body.temperature,
        max_output_tokens=body.max_completion_tokens or body.max_tokens,
    )


def _sources(answer: Answer) -> str:
    if not answer.citations:
        return ""
    lines = [
        f"[{c['n']}] {c['filename']}" + (f", page {c['page']}" if c["page"] else "")
        for c in answer.citations
    ]
    return "\n\nSources:\n" + "\n".join(lines)


def _citations(answer: Answer) -> list[ChatCitation]:
    return [ChatCitation(**{k: c[k] for k in ChatCitation.model_fields}) for c in answer.citations]


def _recorded(answer: Answer) -> Recorded:
    return Recorded(
        conversation_id=answer.conversation_id,
        turn=answer.turn,
        position=answer.position,
        provider=answer.provider,
        cost_usd=answer.cost_usd,
        latency_ms=answer.latency_ms,
        flags=answer.flags,
    )


def _usage(answer: Answer) -> CompletionUsage:
    used_in, used_out = answer.usage["input_tokens"], answer.usage["output_tokens"]
    return CompletionUsage(
        prompt_tokens=used_in, completion_tokens=used_out, total_tokens=used_in + used_out
    )


def _completion(answer: Answer, created: int) -> ChatCompletion:
    return ChatCompletion(
        id=f"chatcmpl-{answer.conversation_id.hex}",
        created=created,
        model=answer.model,
        choices=[
            Choice(
                message=AssistantMessage(content=answer.text + _sources(answer)),
                finish_reason=_FINISH_REASONS.get(answer.finish_reason, "stop"),
            )
        ],
        usage=_usage(answer),
        citations=_citations(answer),
        kf=_recorded(answer),
    )


def _data(body: Any) -> bytes:
    """One server-sent event as OpenAI streams them: a ``data:`` line only."""
    return b"data: " + json.dumps(body, ensure_ascii=False).encode() + b"\n\n"


def _chunk(
    completion_id: str,
    created: int,
    model: str,
    delta: dict[str, Any] | None,
    finish_reason: str | None = None,
    **extra: Any,
) -> bytes:
    """A ``chat.completion.chunk``; ``delta`` None is the choice-less usage chunk."""
    choices = [] if delta is None else [
        {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
    ]  # fmt: skip
    body = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
        **extra,
    }
    return _data(body)


def _stream(
    answerer: Answerer, principal: Principal, prepared: Prepared, include_usage: bool, created: int
) -> Iterator[bytes]:
    completion_id = f"chatcmpl-{prepared.conversation_id.hex}"
    model = prepared.request.model
    # Nothing is sent before the answer's own stream has started: a client that
    # leaves at any point then closes it, and its outcome is recorded.
    events = answerer.stream(principal, prepared)
    try:
        for index, item in enumerate(events):
            if index == 0:
                yield _chunk(completion_id, created, model, {"role": "assistant", "content": ""})
            if isinstance(item, Answer):
                yield from _final_chunks(completion_id, created, item, include_usage)
            else:
                yield _chunk(completion_id, created, model, {"content": item})
    except AnswerFailedError as failure:
        error = openai_error(failure.status, failure.code, failure.message)
        yield _data(error)
        return
    finally:
        events.close()
    yield b"data: [DONE]\n\n"  # the protocol's terminator is not JSON


def _final_chunks(
    completion_id: str, created: int, answer: Answer, include_usage: bool
) -> Iterator[bytes]:
    """The sources, the finish with citations and the record, then the usage if asked for."""
    sources = _sources(answer)
    if sources:
        yield _chunk(completion_id, created, answer.model, {"content": sources})
    yield _chunk(
        completion_id,
        created,
        answer.model,
        {},
        finish_reason=_FINISH_REASONS.get(answer.finish_reason, "stop"),
        citations=[c.model_dump() for c in _citations(answer)],
        kf=_recorded(answer).model_dump(mode="json"),
    )
    if include_usage:
        yield _chunk(completion_id, created, answer.model, None, usage=_usage(answer).model_dump())


# ------------------------------------------------------------------- routes


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={
        **OPENAI_ERROR_RESPONSES,
        200: {
            "description": "The completion; with stream=true, chat.completion.chunk events"
            " ending with data: [DONE]",
            "content": {"text/event-stream": {}},
        },
        404: {"model": OpenAIErrorBody},
        502: {"model": OpenAIErrorBody, "description": "The model provider failed"},
        503: {"model": OpenAIErrorBody, "description": "The model provider is rate limited"},
    },
)
def create_chat_completion(
    principal: Viewer, answerer: AnswererDep, body: ChatCompletionRequest
) -> Any:
    """Answer the last user message from the caller's documents (OpenAI Chat Completions)."""
    prepared = answerer.prepare(principal, None, question_of(body))
    created = int(time.time())
    if not body.stream:
        try:
            return _completion(answerer.answer(principal, prepared), created)
        except AnswerFailedError as failure:
            raise answer_failed(failure) from None
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return StreamingResponse(
        _stream(answerer, principal, prepared, include_usage, created),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store"},
    )


@router.get("/models", response_model=ModelList, responses=OPENAI_ERROR_RESPONSES)
def list_models(principal: Viewer, answerer: AnswererDep) -> ModelList:
    """The model names this tenant may ask for (routes by glob pattern are not listed)."""
    return ModelList(data=[ModelOut(id=name) for name in answerer.available_models(principal)])

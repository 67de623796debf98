"""Conversation transcripts over HTTP, from the conversations read model.

A conversation is visible to whoever started it and to the tenant's admins
(who review what was asked and answered); to anyone else it does not exist.
Admins can also read back the exact messages a turn's model was given.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from domain.activity import ReadKind
from domain.conversation import ConversationNotFoundError, reviews_all, visible_to
from infra.web import ERROR_RESPONSES, Admin, ApiError, ErrorBody, Viewer
from projections.base import InvalidCursorError
from projections.conversations.view import ConversationEntry, ConversationsView, TurnEntry
from projections.http import MinPosition, Models, ReadLog, view_of

router = APIRouter(prefix="/v1/conversations", tags=["conversations"])


Transcripts = Annotated[ConversationsView, Depends(view_of("conversations", ConversationsView))]


class ConversationOut(BaseModel):
    id: UUID
    title: str
    origin: Literal["conversations", "chat_completions"]
    started_by: str
    started_at: datetime
    updated_at: datetime
    turn_count: int
    position: int

    @classmethod
    def of(cls, entry: ConversationEntry) -> ConversationOut:
        return cls(
            id=entry.conversation_id,
            title=entry.title,
            origin=entry.origin,
            started_by=entry.started_by,
            started_at=entry.started_at,
            updated_at=entry.updated_at,
            turn_count=entry.turn_count,
            position=entry.position,
        )


class ConversationList(BaseModel):
    items: list[ConversationOut]
    next_cursor: str | None


class TranscriptCitation(BaseModel):
    n: int
    chunk_id: str
    document_id: str
    filename: str
    page: int | None
    chunk_index: int
    score: float
    text: str | None = Field(description="The chunk's text; None once its document is deleted.")


class TurnUsage(BaseModel):
    input_tokens: int
    output_tokens: int


class TurnFailure(BaseModel):
    code: str
    reason: str


class TurnOut(BaseModel):
    turn: int
    question: str
    asked_by: str
    asked_at: datetime
    status: Literal["pending", "answered", "failed"]
    answer: str | None
    citations: list[TranscriptCitation]
    requested_model: str
    mode: str
    k: int
    flags: list[str]
    provider: str | None
    model: str | None
    usage: TurnUsage | None
    cost_usd: str | None
    latency_ms: float | None
    failure: TurnFailure | None
    answered_at: datetime | None
    prompt_template: str | None
    prompt_sha256: str | None = Field(
        description="Digest of the exact messages the model was given (kept in the blob store)."
    )
    history_turns: int = Field(description="Earlier turns included in the prompt.")
    position: int

    @classmethod
    def of(cls, entry: TurnEntry) -> TurnOut:
        usage = None
        if entry.input_tokens is not None and entry.output_tokens is not None:
            usage = TurnUsage(input_tokens=entry.input_tokens, output_tokens=entry.output_tokens)
        failure = None
        if entry.failure_code is not None:
            failure = TurnFailure(code=entry.failure_code, reason=entry.failure_reason or "")
        return cls(
            turn=entry.turn,
            question=entry.question,
            asked_by=entry.asked_by,
            asked_at=entry.asked_at,
            status=entry.status,
            answer=entry.answer,
            citations=[TranscriptCitation(**c) for c in entry.citations],
            requested_model=entry.requested_model,
            mode=entry.mode,
            k=entry.k,
            flags=entry.flags,
            provider=entry.provider,
            model=entry.model,
            usage=usage,
            cost_usd=None if entry.cost_usd is None else f"{entry.cost_usd:f}",
            latency_ms=entry.latency_ms,
            failure=failure,
            answered_at=entry.answered_at,
            prompt_template=entry.prompt_template,
            prompt_sha256=entry.prompt_sha256,
            history_turns=entry.history_turns,
            position=entry.position,
        )


class TranscriptOut(ConversationOut):
    turns: list[TurnOut]


class PromptMessage(BaseModel):
    role: str
    content: str


class PromptOut(BaseModel):
    conversation_id: UUID
    turn: int
    sha256: str = Field(description="SHA-256 of the messages as sent (the blob's digest).")
    messages: list[PromptMessage]


_READ_ERRORS = {
    **ERROR_RESPONSES,
    503: {"model": ErrorBody, "description": "The transcripts did not reach min_position in time"},
}


@router.get("", response_model=ConversationList, responses=_READ_ERRORS)
def list_conversations(
    principal: Viewer,
    transcripts: Transcripts,
    models: Models,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    min_position: MinPosition = None,
) -> ConversationList:
    """Conversations newest first: the caller's own, or all of the tenant's for an admin."""
    models.wait("conversations", "conversations", min_position)
    try:
        page = transcripts.page(
            principal.tenant_id,
            limit=limit,
            cursor=cursor,
            started_by=None if reviews_all(principal) else principal.actor,
        )
    except InvalidCursorError as exc:
        raise ApiError(422, "invalid_cursor", str(exc)) from exc
    return ConversationList(
        items=[ConversationOut.of(e) for e in page.entries], next_cursor=page.next_cursor
    )


@router.get(
    "/{conversation_id}",
    response_model=TranscriptOut,
    responses={**_READ_ERRORS, 404: {"model": ErrorBody}},
)
def get_conversation(
    principal: Viewer,
    transcripts: Transcripts,
    models: Models,
    reads: ReadLog,
    conversation_id: UUID,
    min_position: MinPosition = None,
) -> TranscriptOut:
    """The transcript: every question, its answer or failure, citations, model, usage and cost."""
    models.wait("conversations", "conversations", min_position)
    transcript = transcripts.get(principal.tenant_id, conversation_id)
    if transcript is None or not visible_to(transcript.conversation.started_by, principal):
        raise ConversationNotFoundError(f"No conversation {conversation_id}.")
    shown = [c for t in transcript.turns for c in t.citations if c.get("text") is not None]
    reads.record(
        principal,
        ReadKind.TRANSCRIPT,
        documents=[c["document_id"] for c in shown],
        chunks=[c["chunk_id"] for c in shown],
    )
    head = ConversationOut.of(transcript.conversation)
    return TranscriptOut(**head.model_dump(), turns=[TurnOut.of(t) for t in transcript.turns])


@router.get(
    "/{conversation_id}/turns/{turn}/prompt",
    response_model=PromptOut,
    responses={**_READ_ERRORS, 404: {"model": ErrorBody}},
)
def get_prompt(
    principal: Admin,
    transcripts: Transcripts,
    models: Models,
    reads: ReadLog,
    conversation_id: UUID,
    turn: Annotated[int, Path(ge=1, le=100_000)],
    min_position: MinPosition = None,
) -> PromptOut:
    """Exactly what the model was given for one turn (admins: review and replay)."""
    models.wait("conversations", "conversations", min_position)
    prompt = transcripts.prompt(principal.tenant_id, conversation_id, turn)
    if prompt is None:
        raise ConversationNotFoundError(
            f"No recorded prompt for turn {turn} of conversation {conversation_id}."
        )
    reads.record(
        principal,
        ReadKind.PROMPT,
        documents=[p["document_id"] for p in prompt.passages],
        chunks=[p["chunk_id"] for p in prompt.passages],
    )
    messages = json.loads(prompt.content)
    return PromptOut(
        conversation_id=conversation_id,
        turn=turn,
        sha256=prompt.sha256,
        messages=[PromptMessage(**m) for m in messages],
    )

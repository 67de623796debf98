"""Conversation transcripts over HTTP, from the conversations read model.

A conversation is visible to whoever started it and to the tenant's admins
(who review what was asked and answered); to anyone else it does not exist.
Admins can also read back the exact messages a turn's model was given.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field

from domain.activity import ReadKind
from domain.conversation import ConversationNotFoundError, reviews_all, visible_to
from infra.search_index import Filters, point_id
from infra.web import ERROR_RESPONSES, Admin, ApiError, ErrorBody, Viewer
from projections.base import InvalidCursorError
from projections.conversations.view import (
    ConversationEntry,
    ConversationsView,
    TurnEntry,
    quoted_passages,
)
from projections.http import MinPosition, Models, ReadLog, view_of
from projections.search.view import SearchService, SearchView

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
    erased_at: datetime | None = Field(
        None, description="When it was erased: its title and texts read `[erased]`."
    )

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
            erased_at=entry.erased_at,
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
    erased: bool = Field(
        False,
        description="The prompt quoted a document that was erased, or its conversation was "
        "erased: its messages can no longer be read (none are returned).",
    )


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
    include_erased: Annotated[
        bool, Query(description="List erased conversations too (their titles read `[erased]`).")
    ] = False,
) -> ConversationList:
    """Conversations newest first: the caller's own, or all of the tenant's for an admin;
    erased ones are left out unless asked for."""
    models.wait("conversations", "conversations", min_position)
    try:
        page = transcripts.page(
            principal.tenant_id,
            limit=limit,
            cursor=cursor,
            started_by=None if reviews_all(principal) else principal.actor,
            include_erased=include_erased,
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
    messages = json.loads(prompt.content) if prompt.content is not None else []
    return PromptOut(
        conversation_id=conversation_id,
        turn=turn,
        sha256=prompt.sha256,
        messages=[PromptMessage(**m) for m in messages],
        erased=prompt.content is None,
    )


class ProvenancePassage(BaseModel):
    n: int = Field(description="The passage's number in the prompt ([n] in the answer).")
    chunk_id: str | None = Field(description="None when the turn recorded no retrieval.")
    document_id: str | None
    filename: str | None
    page: int | None
    chunk_index: int | None
    score: float | None = Field(description="Its retrieval score then.")
    cited: bool = Field(description="Whether the answer cited it.")
    text: str | None = Field(
        description="The passage as the model was given it (from the recorded prompt); None"
        " once its document is deleted."
    )
    document_status: str | None = Field(
        description="The document's status now (None: not in the catalog)."
    )
    document_exists: bool = Field(description="Whether the document exists now (not deleted).")
    retrieved_now: bool | None = Field(
        description="Whether the same query, mode and k retrieve this chunk now (None: not"
        " asked: the turn recorded no retrieval)."
    )
    rank_now: int | None = Field(description="Its rank in that search now (1 = first).")


class RetrievalThen(BaseModel):
    query: str = Field(description="What was searched (a follow-up: with the question before).")
    query_recorded: bool = Field(
        description="False for turns answered before the query was recorded: the question"
        " stands in for it."
    )
    mode: str
    k: int
    settings: dict[str, Any] = Field(description="Fusion and leg settings used.")
    positions: dict[str, int] = Field(description="The search index's position, per context.")


class ProvenanceOut(BaseModel):
    conversation_id: UUID
    turn: int
    question: str
    status: Literal["pending", "answered", "failed"]
    prompt_sha256: str | None
    retrieval: RetrievalThen | None = Field(description="None until the turn was answered.")
    searched_now_at: dict[str, int] = Field(
        description="The search index's position for the search run now, per context."
    )
    passages: list[ProvenancePassage]


@router.get(
    "/{conversation_id}/turns/{turn}/provenance",
    response_model=ProvenanceOut,
    responses={**_READ_ERRORS, 404: {"model": ErrorBody}},
)
def get_provenance(
    request: Request,
    principal: Viewer,
    transcripts: Transcripts,
    index: Annotated[SearchView, Depends(view_of("search", SearchView))],
    models: Models,
    reads: ReadLog,
    conversation_id: UUID,
    turn: Annotated[int, Path(ge=1, le=100_000)],
    min_position: MinPosition = None,
) -> ProvenanceOut:
    """What one turn was answered from: the passages the model was given (from the recorded
    prompt), the retrieval settings and index position then, and for each passage whether its
    document still exists and whether the same query would retrieve it now."""
    models.wait("conversations", "conversations", min_position)
    found = transcripts.provenance(principal.tenant_id, conversation_id, turn)
    if found is None or not visible_to(found.started_by, principal):
        raise ConversationNotFoundError(f"No turn {turn} in conversation {conversation_id}.")
    entry = found.turn
    quoted = quoted_passages(found.prompt) if found.prompt is not None else {}
    cited = {int(c["n"]) for c in entry.citations}
    then: RetrievalThen | None = None
    recorded: list[dict[str, Any]] = [{"n": n} for n in sorted(quoted)]
    ranks: dict[str, int] = {}
    now_at: dict[str, int] = {}
    if found.retrieval is not None:
        retrieval = found.retrieval
        query = retrieval.get("query")
        then = RetrievalThen(
            query=query if query is not None else entry.question,
            query_recorded=query is not None,
            mode=retrieval.get("mode", entry.mode),
            k=int(retrieval.get("k", entry.k)),
            settings=dict(retrieval.get("settings", {})),
            positions={c: int(p) for c, p in retrieval.get("positions", {}).items()},
        )
        recorded = list(retrieval.get("passages", recorded))
        now_at = {"documents": index.max_tracking_id("documents") or 0}
        service: SearchService = request.app.state.search
        results = service.search(
            principal.tenant_id,
            then.query,
            then.mode,  # type: ignore[arg-type]
            then.k,
            Filters(),
        )
        ranks = {
            point_id(r.document_id, r.chunk_index): rank
            for rank, r in enumerate(results.results, start=1)
        }
    passages = []
    for p in recorded:
        document_id = p.get("document_id")
        status = None if document_id is None else found.document_status.get(str(document_id))
        exists = status is not None and status != "deleted"
        chunk_id = p.get("chunk_id")
        passages.append(
            ProvenancePassage(
                n=int(p["n"]),
                chunk_id=chunk_id,
                document_id=document_id,
                filename=p.get("filename"),
                page=p.get("page"),
                chunk_index=p.get("chunk_index"),
                score=p.get("score"),
                cited=int(p["n"]) in cited,
                text=quoted.get(int(p["n"])) if exists or document_id is None else None,
                document_status=status,
                document_exists=exists,
                retrieved_now=None if then is None else chunk_id in ranks,
                rank_now=ranks.get(chunk_id) if chunk_id is not None else None,
            )
        )
    shown = [p for p in passages if p.text is not None and p.document_id is not None]
    reads.record(
        principal,
        ReadKind.PROVENANCE,
        documents=[p.document_id for p in shown if p.document_id],
        chunks=[p.chunk_id for p in shown if p.chunk_id],
    )
    return ProvenanceOut(
        conversation_id=conversation_id,
        turn=turn,
        question=entry.question,
        status=entry.status,
        prompt_sha256=entry.prompt_sha256,
        retrieval=then,
        searched_now_at=now_at,
        passages=passages,
    )

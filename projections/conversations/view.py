"""Reading conversations back: the newest first, and transcripts with their citations.

A citation row names the chunk it cites, not its text: ``get`` reads the text
from the full-text read model at query time, within the same tenant-scoped
transaction, so a document deleted since the answer is still named in the
transcript, but its passages are not shown again.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from psycopg import Connection
from psycopg.rows import DictRow

from infra.crypto import Opener, turn_key
from projections.base import ProjectionView


@dataclass(frozen=True)
class ConversationEntry:
    conversation_id: UUID
    tenant_id: str
    title: str
    origin: str
    started_by: str
    started_at: datetime
    updated_at: datetime
    turn_count: int
    version: int
    position: int
    erased_at: datetime | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ConversationEntry:
        return cls(**{k: row[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class TurnEntry:
    turn: int
    question: str
    asked_by: str
    asked_at: datetime
    requested_model: str
    mode: str
    k: int
    flags: list[str]
    prompt_sha256: str | None
    history_turns: int
    status: str
    answer: str | None
    # n, chunk_id, document_id, filename, page, chunk_index, score, and the
    # chunk's text (None once the document is deleted)
    citations: list[dict[str, Any]]
    prompt_template: str | None
    provider: str | None
    model: str | None
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: Decimal | None
    latency_ms: float | None
    failure_code: str | None
    failure_reason: str | None
    answered_at: datetime | None
    position: int

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> TurnEntry:
        return cls(**{k: row[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Transcript:
    conversation: ConversationEntry
    turns: list[TurnEntry]


@dataclass(frozen=True)
class ConversationPage:
    entries: list[ConversationEntry]
    next_cursor: str | None


class ConversationsView(ProjectionView):
    """Transcripts' queries (rows written by ``ConversationsProjection``)."""

    # ----------------------------------------------------------------- queries

    def page(
        self,
        tenant_id: str,
        *,
        limit: int,
        cursor: str | None = None,
        started_by: str | None = None,
        include_erased: bool = False,
    ) -> ConversationPage:
        """Newest first; only ``started_by``'s when given; erased ones only when asked for."""
        where = [] if include_erased else ["erased_at IS NULL"]
        params = []
        if started_by is not None:
            where.append("started_by = %s")
            params.append(started_by)
        rows, next_cursor = self.newest_first(
            tenant_id,
            "conversations",
            ("started_at", "conversation_id"),
            limit=limit,
            cursor=cursor,
            where=where,
            params=params,
        )
        entries = [ConversationEntry.from_row(r) for r in rows]
        return ConversationPage(entries, next_cursor)

    def get(self, tenant_id: str, conversation_id: UUID) -> Transcript | None:
        with self.tenant_reads(tenant_id) as conn:
            row = conn.execute(
                "SELECT * FROM conversations WHERE tenant_id = %s AND conversation_id = %s",
                (tenant_id, conversation_id),
            ).fetchone()
            if row is None:
                return None
            turns = conn.execute(
                "SELECT * FROM conversation_turns WHERE tenant_id = %s AND conversation_id = %s"
                " ORDER BY turn",
                (tenant_id, conversation_id),
            ).fetchall()
            texts = _chunk_texts(conn, tenant_id, turns)
        for turn in turns:
            turn["citations"] = [
                {**c, "text": texts.get((c["document_id"], c["chunk_index"]))}
                for c in turn["citations"]
            ]
        return Transcript(ConversationEntry.from_row(row), [TurnEntry.from_row(t) for t in turns])

    def prompt(self, tenant_id: str, conversation_id: UUID, turn: int) -> Prompt | None:
        """The messages a turn's model was given, from the blob store (None if unrecorded)."""
        with self.tenant_reads(tenant_id) as conn:
            row = conn.execute(
                "SELECT t.prompt_sha256 AS sha256, b.key_id, b.content, t.retrieval"
                " FROM conversation_turns t LEFT JOIN blobs b ON b.tenant_id = t.tenant_id"
                " AND b.sha256 = t.prompt_sha256 AND b.key_id IN (%s, '')"
                " WHERE t.tenant_id = %s AND t.conversation_id = %s AND t.turn = %s"
                " AND t.prompt_sha256 IS NOT NULL",
                (turn_key(conversation_id, turn), tenant_id, conversation_id, turn),
            ).fetchone()
        if row is None:
            return None
        passages = list((row["retrieval"] or {}).get("passages", []))
        return Prompt(row["sha256"], self._opened_prompt(row), passages)

    def _opened_prompt(self, row: dict[str, Any]) -> bytes | None:
        """The prompt's bytes, opened with its turn's key; None once that key is gone."""
        if row["content"] is None:
            return None  # erased with its key (or never stored)
        if not row["key_id"]:
            return bytes(row["content"])  # stored before data keys
        key = Opener(self.projection.keys).key(row["key_id"])
        return None if key is None else key.open(bytes(row["content"]))

    def provenance(self, tenant_id: str, conversation_id: UUID, turn: int) -> Provenance | None:
        """What a turn was answered from: its row, its retrieval record, the prompt as sent
        and the status now of every document it quoted (None: no such turn)."""
        with self.tenant_reads(tenant_id) as conn:
            row = conn.execute(
                "SELECT c.started_by, t.*, b.key_id, b.content FROM conversation_turns t"
                " JOIN conversations c ON c.tenant_id = t.tenant_id"
                " AND c.conversation_id = t.conversation_id"
                " LEFT JOIN blobs b ON b.tenant_id = t.tenant_id AND b.sha256 = t.prompt_sha256"
                " AND b.key_id IN (%s, '')"
                " WHERE t.tenant_id = %s AND t.conversation_id = %s AND t.turn = %s",
                (turn_key(conversation_id, turn), tenant_id, conversation_id, turn),
            ).fetchone()
            if row is None:
                return None
            retrieval = row["retrieval"]
            documents = {str(p["document_id"]) for p in (retrieval or {}).get("passages", [])}
            statuses = conn.execute(
                "SELECT document_id, status FROM catalog_documents"
                " WHERE tenant_id = %s AND document_id = ANY(%s::uuid[])",
                (tenant_id, sorted(documents)),
            ).fetchall()
        row["citations"] = [{**c, "text": None} for c in row["citations"]]
        return Provenance(
            started_by=row["started_by"],
            turn=TurnEntry.from_row(row),
            retrieval=retrieval,
            prompt=self._opened_prompt(row),
            document_status={str(r["document_id"]): r["status"] for r in statuses},
        )


@dataclass(frozen=True)
class Provenance:
    started_by: str
    turn: TurnEntry
    retrieval: dict[str, Any] | None  # None until answered (a failed turn has none)
    prompt: bytes | None  # the messages as sent (None: not recorded)
    document_status: dict[str, str]  # catalog status now, by document id (absent: unknown)


_PASSAGE = re.compile(r"^\[(\d+)\] \(.*\)$")


def quoted_passages(prompt: bytes) -> dict[int, str]:
    """The passages a prompt quoted, by number, as the model was given them.

    The last message holds them as ``[n] (source)`` lines, each followed by the
    passage as one JSON string (see ``commands.answering._quote``).
    """
    messages = json.loads(prompt)
    if not messages:
        return {}
    lines = str(messages[-1].get("content", "")).split("\n")
    quoted: dict[int, str] = {}
    for header, body in itertools.pairwise(lines):
        match = _PASSAGE.match(header)
        if match and body.startswith('"'):
            try:
                text = json.loads(body)
            except json.JSONDecodeError:
                continue
            if isinstance(text, str):
                quoted.setdefault(int(match.group(1)), text)
    return quoted


@dataclass(frozen=True)
class Prompt:
    sha256: str
    content: bytes | None  # JSON [{role, content}], exactly as sent; None once erased
    passages: list[dict[str, Any]]  # the chunks quoted in it (chunk_id, document_id, ...)


def _chunk_texts(
    conn: Connection[DictRow], tenant_id: str, turns: list[DictRow]
) -> dict[tuple[str, int], str]:
    """The current text of every cited chunk, by (document id, chunk index)."""
    keys = {(c["document_id"], int(c["chunk_index"])) for t in turns for c in t["citations"]}
    if not keys:
        return {}
    documents, indexes = zip(*keys, strict=True)
    rows = conn.execute(
        "SELECT document_id, chunk_index, text FROM fulltext_chunks WHERE tenant_id = %s"
        " AND (document_id, chunk_index) IN"
        " (SELECT * FROM unnest(%s::uuid[], %s::integer[]))",
        (tenant_id, list(documents), list(indexes)),
    ).fetchall()
    return {(str(r["document_id"]), int(r["chunk_index"])): r["text"] for r in rows}

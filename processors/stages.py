"""The three processing stages: parse, chunk, embed — event in, command out.

Each stage loads the document first and does nothing unless the document is
waiting for that stage, so a redelivered message costs one read and appends
nothing. Inputs come from the blob store by the digests the events carry;
outputs go to the blob store before the command that records them. A document
that cannot be processed gets ``Document.Failed`` with the stage and a reason a
person understands; the worker moves on to the next message.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar
from uuid import UUID

import numpy as np
import structlog

from commands.base import CommandResult, ConcurrencyConflictError
from commands.documents import DocumentsApp
from domain.content import (
    ChunkRecord,
    PageText,
    decode_chunks,
    decode_pages,
    encode_chunks,
    encode_pages,
)
from domain.document import Document, DocumentNotFoundError, Stage
from infra.blobs import BlobNotFoundError, BlobStore
from infra.crypto import DataKey, document_key
from infra.embedding import Embedder, Matrix, matrix_to_bytes
from infra.telemetry import STAGE_DURATION, STAGE_FAILURES
from processors.chunk import TokenChunker
from processors.parse import ParsedDocument, ParseError

log = structlog.get_logger(__name__)
T = TypeVar("T")
_CONFLICT_RETRIES = 5


class _ErasedError(Exception):
    """The document was erased: there is nothing left to process."""


class StageStopped(Exception):  # noqa: N818 (not an error: the worker is stopping)
    """The worker is stopping: the stage gave up part-way, having recorded nothing."""


# Texts embedded between two looks at whether the worker is stopping: a big document's
# embedding takes minutes, a slice a second or two.
EMBED_SLICE = 256


class Outcome(StrEnum):
    RECORDED = "recorded"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class DocumentRef:
    tenant_id: str
    document_id: UUID


def _retry_conflicts(command: Callable[[], T]) -> T:
    """Run a command, re-deciding on a concurrency conflict (the loser re-reads)."""
    for attempt in range(_CONFLICT_RETRIES):
        try:
            return command()
        except ConcurrencyConflictError:
            if attempt == _CONFLICT_RETRIES - 1:
                raise
            time.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")


class Stages:
    def __init__(
        self,
        documents: DocumentsApp,
        blobs: BlobStore,
        *,
        chunker: TokenChunker,
        embedder: Callable[[], Embedder],
        parser: Callable[[bytes, str], ParsedDocument],
        actor: str,
    ) -> None:
        self._documents = documents
        self._blobs = blobs
        self._chunker = chunker
        self._embedder_factory = embedder
        self._embedder: Embedder | None = None
        self._parse = parser
        self._actor = actor

    @property
    def embedder(self) -> Embedder:
        # Loaded on first use, once per process: the model costs seconds and RAM.
        if self._embedder is None:
            self._embedder = self._embedder_factory()
        return self._embedder

    def _key(self, ref: DocumentRef) -> DataKey | None:
        """The document's data key (None: stored before keys); raises once it is erased."""
        key = self._documents.data_key(ref.document_id)
        if key is None and self._documents.keys.erased([document_key(ref.document_id)]):
            raise _ErasedError
        return key

    def _load(self, ref: DocumentRef, stage: Stage) -> Document | None:
        try:
            document = self._documents.get_document(ref.tenant_id, ref.document_id)
        except DocumentNotFoundError:
            log.warning(
                "stage_document_missing", stage=stage.value, document_id=str(ref.document_id)
            )
            return None
        return document if document.awaits(stage) else None

    def _fail(self, ref: DocumentRef, stage: Stage, code: str, reason: str) -> Outcome:
        _retry_conflicts(
            lambda: self._documents.record_failed(
                tenant_id=ref.tenant_id,
                document_id=ref.document_id,
                actor=self._actor,
                stage=stage,
                code=code,
                reason=reason,
            )
        )
        STAGE_FAILURES.labels(stage.value, code).inc()
        log.info(
            "document_failed",
            stage=stage.value,
            code=code,
            tenant_id=ref.tenant_id,
            document_id=str(ref.document_id),
        )
        return Outcome.FAILED

    def fail_after_retries(
        self, ref: DocumentRef, stage: Stage, attempts: int, error: str
    ) -> Outcome:
        """The last delivery failed too: record it rather than leave the document stuck."""
        if self._load(ref, stage) is None:
            return Outcome.SKIPPED
        return self._fail(
            ref,
            stage,
            "internal_error",
            f"The {stage.value} stage failed {attempts} times ({error}); the error was logged "
            "and parked for the operators, who can send the document through it again.",
        )

    def _get(self, ref: DocumentRef, sha256: str, key: DataKey | None) -> bytes:
        try:
            return self._blobs.get(ref.tenant_id, sha256, key)
        except BlobNotFoundError:
            self._key(ref)  # raises _ErasedError if the document was erased meanwhile
            raise

    @staticmethod
    def _recorded(result: CommandResult) -> Outcome:
        return Outcome.RECORDED if result.changed else Outcome.SKIPPED

    # ------------------------------------------------------------------ parse

    def parse(self, ref: DocumentRef) -> Outcome:
        try:
            return self._parse_document(ref)
        except _ErasedError:
            return Outcome.SKIPPED  # erased while waiting: nothing is left to parse

    def _parse_document(self, ref: DocumentRef) -> Outcome:
        document = self._load(ref, Stage.PARSE)
        if document is None:
            return Outcome.SKIPPED
        started = time.perf_counter()
        key = self._key(ref)
        content = self._get(ref, document.content_sha256, key)
        try:
            parsed = self._parse(content, document.media_type)
        except ParseError as error:
            return self._fail(ref, Stage.PARSE, error.code, error.reason)
        pages = [PageText(page.number, page.text) for page in parsed.pages]
        pages_sha256 = self._blobs.put(ref.tenant_id, encode_pages(pages), key)
        result = _retry_conflicts(
            lambda: self._documents.record_parsed(
                tenant_id=ref.tenant_id,
                document_id=ref.document_id,
                actor=self._actor,
                pages_sha256=pages_sha256,
                page_count=parsed.page_count,
                char_count=parsed.char_count,
                parser=parsed.parser,
                warnings=list(parsed.warnings),
            )
        )
        STAGE_DURATION.labels(Stage.PARSE.value).observe(time.perf_counter() - started)
        return self._recorded(result)

    # ------------------------------------------------------------------ chunk

    def chunk(self, ref: DocumentRef) -> Outcome:
        try:
            return self._chunk_document(ref)
        except _ErasedError:
            return Outcome.SKIPPED

    def _chunk_document(self, ref: DocumentRef) -> Outcome:
        document = self._load(ref, Stage.CHUNK)
        if document is None or document.pages_sha256 is None:
            return Outcome.SKIPPED
        started = time.perf_counter()
        key = self._key(ref)
        pages = decode_pages(self._get(ref, document.pages_sha256, key))
        chunks = [
            ChunkRecord(
                chunk_index=c.chunk_index,
                text=c.text,
                page_start=c.page_start,
                page_end=c.page_end,
                token_count=c.token_count,
                char_start=c.char_start,
                char_end=c.char_end,
            )
            for c in self._chunker.chunk(pages)
        ]
        if not chunks:
            return self._fail(ref, Stage.CHUNK, "no_text", "The extracted text produced no chunks.")
        chunks_sha256 = self._blobs.put(ref.tenant_id, encode_chunks(chunks), key)
        settings = self._chunker.settings
        result = _retry_conflicts(
            lambda: self._documents.record_chunked(
                tenant_id=ref.tenant_id,
                document_id=ref.document_id,
                actor=self._actor,
                chunks_sha256=chunks_sha256,
                chunk_count=len(chunks),
                chunk_tokens=settings.chunk_tokens,
                overlap_tokens=settings.overlap_tokens,
                tokenizer=self._chunker.tokenizer_name,
            )
        )
        STAGE_DURATION.labels(Stage.CHUNK.value).observe(time.perf_counter() - started)
        return self._recorded(result)

    # ------------------------------------------------------------------ embed

    def embed(
        self, refs: Sequence[DocumentRef], stopping: Callable[[], bool] = lambda: False
    ) -> list[Outcome]:
        """Embed several documents' chunks in shared batches (the model prefers full batches).

        Raises ``StageStopped``, before recording anything, once ``stopping()`` is true
        between two slices of the texts: the documents wait for the next worker."""
        outcomes = [Outcome.SKIPPED] * len(refs)
        work: list[tuple[int, DocumentRef, Document, list[ChunkRecord], DataKey | None]] = []
        started = time.perf_counter()
        for i, ref in enumerate(refs):
            document = self._load(ref, Stage.EMBED)
            if document is None or document.chunks_sha256 is None:
                continue
            try:
                key = self._key(ref)
                chunks = decode_chunks(self._get(ref, document.chunks_sha256, key))
            except _ErasedError:
                continue
            work.append((i, ref, document, chunks, key))
        if not work:
            return outcomes
        texts = [chunk.text for _, _, _, chunks, _ in work for chunk in chunks]
        embedder = self.embedder
        parts: list[Matrix] = []
        for start in range(0, len(texts), EMBED_SLICE):
            if stopping():
                raise StageStopped
            parts.append(embedder.embed(texts[start : start + EMBED_SLICE]))
        matrix = np.concatenate(parts) if parts else embedder.embed([])
        offset = 0
        for i, ref, document, chunks, key in work:
            rows = matrix[offset : offset + len(chunks)]
            offset += len(chunks)
            embeddings_sha256 = self._blobs.put(ref.tenant_id, matrix_to_bytes(rows), key)
            chunks_sha256 = document.chunks_sha256
            assert chunks_sha256 is not None
            record = functools.partial(
                self._documents.record_embedded,
                tenant_id=ref.tenant_id,
                document_id=ref.document_id,
                actor=self._actor,
                embeddings_sha256=embeddings_sha256,
                chunks_sha256=chunks_sha256,
                chunk_count=len(chunks),
                model=embedder.model_name,
                dimension=embedder.dimension,
                token_count=embedder.count_tokens([chunk.text for chunk in chunks]),
            )
            outcomes[i] = self._recorded(_retry_conflicts(record))
        elapsed = time.perf_counter() - started
        for _ in work:
            STAGE_DURATION.labels(Stage.EMBED.value).observe(elapsed / len(work))
        return outcomes

"""The ``Document`` aggregate: one uploaded file's life from upload to embedding.

Order in this module: events (each with its fold in ``apply``), the aggregate's
state, its decisions, then its errors. Decisions are idempotent by
construction: a decision that would not change the state returns ``False`` and
emits nothing, so a redelivered message or a repeated command is a no-op.

Events stay small (a claim check): bytes, extracted text, chunks and embedding
matrices live in the blob store and events carry only their SHA-256 digests,
counts and parameters.
"""

from __future__ import annotations

import re
import unicodedata
from enum import StrEnum
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.errors import DomainError, NotFoundError, ValidationError

# A fixed namespace so that document ids derived from content are stable across
# processes and releases (changing it would break upload deduplication).
DOCUMENT_ID_NAMESPACE = uuid5(NAMESPACE_URL, "https://knowledge-foundry/documents")

MAX_FILENAME_LENGTH = 255


class DocumentStatus(StrEnum):
    UPLOADED = "uploaded"
    PARSED = "parsed"
    CHUNKED = "chunked"
    EMBEDDED = "embedded"
    FAILED = "failed"
    DELETED = "deleted"


class Stage(StrEnum):
    """Processing stages a failure can be attributed to."""

    PARSE = "parse"
    CHUNK = "chunk"
    EMBED = "embed"


_PROCESSING = (DocumentStatus.UPLOADED, DocumentStatus.PARSED, DocumentStatus.CHUNKED)
_STAGE_INPUT_STATUS = {
    Stage.PARSE: DocumentStatus.UPLOADED,
    Stage.CHUNK: DocumentStatus.PARSED,
    Stage.EMBED: DocumentStatus.CHUNKED,
}


class Document(Aggregate):
    # ------------------------------------------------------------------ events

    class Event(Aggregate.Event):
        """Every document event says whose it is and who caused it."""

        tenant_id: str
        actor: str

    class Uploaded(Event, Aggregate.Created):
        filename: str
        media_type: str
        declared_type: str | None
        size_bytes: int
        content_sha256: str

    class Parsed(Event):
        pages_sha256: str
        page_count: int | None
        char_count: int
        parser: str
        warnings: list[str]

        def apply(self, aggregate: Any) -> None:
            doc: Document = aggregate
            doc.status = DocumentStatus.PARSED
            doc.pages_sha256 = self.pages_sha256
            doc.page_count = self.page_count
            doc.char_count = self.char_count

    class Chunked(Event):
        chunks_sha256: str
        chunk_count: int
        chunk_tokens: int
        overlap_tokens: int
        tokenizer: str

        def apply(self, aggregate: Any) -> None:
            doc: Document = aggregate
            doc.status = DocumentStatus.CHUNKED
            doc.chunks_sha256 = self.chunks_sha256
            doc.chunk_count = self.chunk_count

    class Embedded(Event):
        embeddings_sha256: str
        chunks_sha256: str
        chunk_count: int
        model: str
        dimension: int
        # v2: the tokens the model was given (its tokenizer's count); None before v2.
        token_count: int | None

        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["token_count"] = None

        def apply(self, aggregate: Any) -> None:
            doc: Document = aggregate
            doc.status = DocumentStatus.EMBEDDED
            doc.embeddings_sha256 = self.embeddings_sha256

    class Failed(Event):
        stage: str
        code: str
        reason: str

        def apply(self, aggregate: Any) -> None:
            doc: Document = aggregate
            doc.status = DocumentStatus.FAILED
            doc.failure = (self.stage, self.code, self.reason)

    class Deleted(Event):
        def apply(self, aggregate: Any) -> None:
            doc: Document = aggregate
            doc.status = DocumentStatus.DELETED

    # ------------------------------------------------------------------- state

    def __init__(
        self,
        tenant_id: str,
        filename: str,
        media_type: str,
        size_bytes: int,
        content_sha256: str,
    ) -> None:
        # Called by the library when the Uploaded event is applied (the fold of
        # the creation event); its parameters are picked from that event.
        self.tenant_id = tenant_id
        self.filename = filename
        self.media_type = media_type
        self.size_bytes = size_bytes
        self.content_sha256 = content_sha256
        self.status = DocumentStatus.UPLOADED
        self.page_count: int | None = None
        self.char_count: int | None = None
        self.pages_sha256: str | None = None
        self.chunk_count: int | None = None
        self.chunks_sha256: str | None = None
        self.embeddings_sha256: str | None = None
        self.failure: tuple[str, str, str] | None = None

    @staticmethod
    def id_for(tenant_id: str, content_sha256: str, generation: int) -> UUID:
        """The id a tenant's upload of these bytes gets.

        Deriving the id from the content makes deduplication race-free: two
        concurrent uploads of the same bytes collide on the event store's
        primary key instead of creating two documents. ``generation`` counts
        deletions, so the same bytes can be uploaded again after a delete.
        """
        return uuid5(DOCUMENT_ID_NAMESPACE, f"{tenant_id}:{content_sha256}:{generation}")

    # --------------------------------------------------------------- decisions

    @classmethod
    def upload(
        cls,
        *,
        document_id: UUID,
        tenant_id: str,
        actor: str,
        filename: str,
        media_type: str,
        declared_type: str | None,
        size_bytes: int,
        content_sha256: str,
    ) -> Document:
        if size_bytes <= 0:
            raise EmptyFileError("The file is empty.")
        return cls._create(
            cls.Uploaded,
            id=document_id,
            tenant_id=tenant_id,
            actor=actor,
            filename=clean_filename(filename),
            media_type=media_type,
            declared_type=declared_type,
            size_bytes=size_bytes,
            content_sha256=content_sha256,
        )

    @property
    def is_deleted(self) -> bool:
        return self.status is DocumentStatus.DELETED

    def record_parsed(
        self,
        *,
        actor: str,
        pages_sha256: str,
        page_count: int | None,
        char_count: int,
        parser: str,
        warnings: list[str],
    ) -> bool:
        if self.status is not DocumentStatus.UPLOADED:
            return False
        self.trigger_event(
            self.Parsed,
            tenant_id=self.tenant_id,
            actor=actor,
            pages_sha256=pages_sha256,
            page_count=page_count,
            char_count=char_count,
            parser=parser,
            warnings=list(warnings),
        )
        return True

    def record_chunked(
        self,
        *,
        actor: str,
        chunks_sha256: str,
        chunk_count: int,
        chunk_tokens: int,
        overlap_tokens: int,
        tokenizer: str,
    ) -> bool:
        if self.status is not DocumentStatus.PARSED:
            return False
        self.trigger_event(
            self.Chunked,
            tenant_id=self.tenant_id,
            actor=actor,
            chunks_sha256=chunks_sha256,
            chunk_count=chunk_count,
            chunk_tokens=chunk_tokens,
            overlap_tokens=overlap_tokens,
            tokenizer=tokenizer,
        )
        return True

    def record_embedded(
        self,
        *,
        actor: str,
        embeddings_sha256: str,
        chunks_sha256: str,
        chunk_count: int,
        model: str,
        dimension: int,
        token_count: int | None = None,
    ) -> bool:
        if self.status is not DocumentStatus.CHUNKED:
            return False
        if chunks_sha256 != self.chunks_sha256 or chunk_count != self.chunk_count:
            # Embeddings of other chunks than the recorded ones would make the
            # index disagree with the chunk blob; refuse rather than record.
            raise StaleStageInputError(
                "The embeddings were computed from chunks this document no longer has."
            )
        self.trigger_event(
            self.Embedded,
            tenant_id=self.tenant_id,
            actor=actor,
            embeddings_sha256=embeddings_sha256,
            chunks_sha256=chunks_sha256,
            chunk_count=chunk_count,
            model=model,
            dimension=dimension,
            token_count=token_count,
        )
        return True

    def record_failed(self, *, actor: str, stage: Stage, code: str, reason: str) -> bool:
        """Fail the document at ``stage`` if it is still waiting for that stage."""
        if self.status is not _STAGE_INPUT_STATUS[stage]:
            return False
        self.trigger_event(
            self.Failed,
            tenant_id=self.tenant_id,
            actor=actor,
            stage=stage.value,
            code=code,
            reason=reason,
        )
        return True

    def delete(self, *, actor: str) -> bool:
        if self.is_deleted:
            return False
        self.trigger_event(self.Deleted, tenant_id=self.tenant_id, actor=actor)
        return True

    def awaits(self, stage: Stage) -> bool:
        """Whether the document is waiting for ``stage`` to run."""
        return self.status is _STAGE_INPUT_STATUS[stage]

    @property
    def is_processing(self) -> bool:
        return self.status in _PROCESSING


# -------------------------------------------------------------------- values

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def clean_filename(filename: str) -> str:
    """A display name safe to store and echo: no path, no control characters."""
    name = unicodedata.normalize("NFC", filename)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _CONTROL.sub("", name).strip()
    if not name or name in {".", ".."}:
        raise InvalidFilenameError("The upload has no usable file name.")
    if len(name) > MAX_FILENAME_LENGTH:
        stem, dot, ext = name.rpartition(".")
        keep = MAX_FILENAME_LENGTH - len(ext) - 1 if dot and len(ext) <= 16 else MAX_FILENAME_LENGTH
        name = (stem[:keep] + "." + ext) if dot and len(ext) <= 16 else name[:keep]
    return name


# -------------------------------------------------------------------- errors


class DocumentNotFoundError(NotFoundError):
    code = "document_not_found"


class EmptyFileError(ValidationError):
    code = "empty_file"


class UnsupportedMediaTypeError(DomainError):
    code = "unsupported_media_type"


class FileTooLargeError(DomainError):
    code = "file_too_large"


class InvalidFilenameError(ValidationError):
    code = "invalid_filename"


class StaleStageInputError(DomainError):
    code = "stale_stage_input"

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
from collections.abc import Callable
from enum import StrEnum
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.errors import DomainError, GoneError, NotFoundError, ValidationError

# A fixed namespace so that document ids derived from content are stable across
# processes and releases (changing it would break upload deduplication).
DOCUMENT_ID_NAMESPACE = uuid5(NAMESPACE_URL, "https://knowledge-foundry/documents")

MAX_FILENAME_LENGTH = 255
MAX_HOLD_REASON = 500
ERASURE_CAUSES = ("request", "retention", "trash")


class DocumentStatus(StrEnum):
    UPLOADED = "uploaded"
    PARSED = "parsed"
    CHUNKED = "chunked"
    EMBEDDED = "embedded"
    FAILED = "failed"
    DELETED = "deleted"
    ERASED = "erased"


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

    class Retried(Event):
        """A failed document sent through its failed stage again (an operator's retry):
        back to the status that stage takes, the failure cleared."""

        stage: str
        status: str

        def apply(self, aggregate: Any) -> None:
            doc: Document = aggregate
            doc.status = DocumentStatus(self.status)
            doc.failure = None

    class Deleted(Event):
        def apply(self, aggregate: Any) -> None:
            doc: Document = aggregate
            doc.status_before_delete = doc.status
            doc.status = DocumentStatus.DELETED

    class Restored(Event):
        """Taken out of the trash, back to where it was; it carries what the read models
        that dropped the document need to show and index it again (no re-processing)."""

        status: str
        filename: str  # as the upload recorded it (sealed)
        media_type: str
        uploaded_at: str
        page_count: int | None
        char_count: int | None
        chunk_count: int | None
        chunks_sha256: str | None
        embeddings_sha256: str | None

        def apply(self, aggregate: Any) -> None:
            doc: Document = aggregate
            doc.status = DocumentStatus(self.status)
            doc.status_before_delete = None

    class Held(Event):
        """Under legal hold: it can be neither deleted nor erased until released."""

        reason: str

        def apply(self, aggregate: Any) -> None:
            doc: Document = aggregate
            doc.held = True

    class Released(Event):
        def apply(self, aggregate: Any) -> None:
            doc: Document = aggregate
            doc.held = False

    class Erased(Event):
        """The document's data key was destroyed with this event: its content, file
        name and every answer that quoted it can no longer be read. Irreversible."""

        cause: str  # request | retention | trash
        status_before: str

        def apply(self, aggregate: Any) -> None:
            doc: Document = aggregate
            doc.status = DocumentStatus.ERASED

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
        self.held = False
        self.status_before_delete: DocumentStatus | None = None

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
        seal: Callable[[str], str] = str,
    ) -> Document:
        """``seal``: how the file name is kept in the event (sealed with the document's
        data key, so that erasing the document erases its name)."""
        if size_bytes <= 0:
            raise EmptyFileError("The file is empty.")
        return cls._create(
            cls.Uploaded,
            id=document_id,
            tenant_id=tenant_id,
            actor=actor,
            filename=seal(clean_filename(filename)),
            media_type=media_type,
            declared_type=declared_type,
            size_bytes=size_bytes,
            content_sha256=content_sha256,
        )

    @property
    def is_deleted(self) -> bool:
        """Deleted or erased: gone for its users (the same bytes may be uploaded anew)."""
        return self.status in (DocumentStatus.DELETED, DocumentStatus.ERASED)

    @property
    def is_erased(self) -> bool:
        return self.status is DocumentStatus.ERASED

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

    def retry(self, *, actor: str) -> Stage:
        """Send a failed document through the stage it failed in again; the stage."""
        if self.status is not DocumentStatus.FAILED or self.failure is None:
            raise DocumentNotFailedError(
                f"Only a failed document is processed again; this one is {self.status.value}."
            )
        stage = Stage(self.failure[0])
        self.trigger_event(
            self.Retried,
            tenant_id=self.tenant_id,
            actor=actor,
            stage=stage.value,
            status=_STAGE_INPUT_STATUS[stage].value,
        )
        return stage

    def delete(self, *, actor: str) -> bool:
        if self.is_deleted:
            return False
        self._not_held("deleted")
        self.trigger_event(self.Deleted, tenant_id=self.tenant_id, actor=actor)
        return True

    def restore(self, *, actor: str) -> bool:
        """Take a deleted document out of the trash; False if it is not deleted."""
        if self.is_erased:
            raise DocumentErasedError("The document was erased; it cannot be restored.")
        if self.status is not DocumentStatus.DELETED:
            return False
        before = self.status_before_delete or DocumentStatus.UPLOADED
        self.trigger_event(
            self.Restored,
            tenant_id=self.tenant_id,
            actor=actor,
            status=before.value,
            filename=self.filename,
            media_type=self.media_type,
            uploaded_at=self.created_on.isoformat(),
            page_count=self.page_count,
            char_count=self.char_count,
            chunk_count=self.chunk_count,
            chunks_sha256=self.chunks_sha256,
            embeddings_sha256=self.embeddings_sha256,
        )
        return True

    def hold(self, *, actor: str, reason: str) -> bool:
        """Put the document under legal hold; False if it is held already."""
        if self.is_erased:
            raise DocumentErasedError("The document was erased; there is nothing to hold.")
        reason = unicodedata.normalize("NFC", reason).strip()
        if len(reason) > MAX_HOLD_REASON or _CONTROL.search(reason):
            raise InvalidHoldError(
                f"A hold's reason is at most {MAX_HOLD_REASON} characters, without control "
                "characters."
            )
        if self.held:
            return False
        self.trigger_event(self.Held, tenant_id=self.tenant_id, actor=actor, reason=reason)
        return True

    def release(self, *, actor: str) -> bool:
        """Lift the legal hold; False if there is none."""
        if not self.held:
            return False
        self.trigger_event(self.Released, tenant_id=self.tenant_id, actor=actor)
        return True

    def _not_held(self, what: str) -> None:
        if self.held:
            raise LegalHoldError(
                f"The document is under legal hold: it cannot be {what} until the hold is lifted."
            )

    def erase(self, *, actor: str, cause: str = "request") -> bool:
        """Erase the document (whatever its state); False if it is erased already."""
        if self.is_erased:
            return False
        if cause not in ERASURE_CAUSES:
            raise ValueError(f"unknown erasure cause {cause!r}")
        self._not_held("erased")
        self.trigger_event(
            self.Erased,
            tenant_id=self.tenant_id,
            actor=actor,
            cause=cause,
            status_before=self.status.value,
        )
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


class LegalHoldError(DomainError):
    code = "legal_hold"


class DocumentNotFailedError(DomainError):
    code = "document_not_failed"


class DocumentErasedError(GoneError):
    code = "document_erased"


class InvalidHoldError(ValidationError):
    code = "invalid_hold"

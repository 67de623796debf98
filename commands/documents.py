"""Command handlers of the documents context (events table ``documents_events``).

Upload writes the bytes to the blob store first and then appends
``Document.Uploaded``: an event never points at a blob that is not there.
Processing stages record their outcome through the ``record_*`` handlers, which
are idempotent, so a redelivered message appends nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.utils import EnvType

from commands.base import CommandResult, ConcurrencyConflictError, ContextApplication
from domain.document import (
    Document,
    DocumentNotFoundError,
    EmptyFileError,
    FileTooLargeError,
    Stage,
    UnsupportedMediaTypeError,
)
from domain.media import SUPPORTED_MEDIA_TYPES, sniff_media_type
from infra.blobs import EVENTS_WITH_BLOBS, BlobStore, put_row, sealed_row, sha256_hex
from infra.crypto import DataKey, KeyStore, destroy_keys, document_key

# Enough for any realistic number of delete/re-upload cycles of one file.
_MAX_GENERATIONS = 10_000


# A delete retried after losing to a processing stage; bounded, since each stage
# appends at most once.
_DELETE_ATTEMPTS = 5


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int


class DocumentsApp(ContextApplication):
    context = "documents"

    def __init__(
        self, env: EnvType, *, blobs: BlobStore, keys: KeyStore, limits: UploadLimits
    ) -> None:
        super().__init__({**(env or {}), "APPLICATION_RECORDER_TOPIC": EVENTS_WITH_BLOBS})
        self.blobs = blobs
        self.keys = keys
        self.limits = limits

    def data_key(self, document_id: UUID) -> DataKey | None:
        """The document's data key; None once it is erased (or for one stored before keys)."""
        return self.keys.get_many([document_key(document_id)]).get(document_key(document_id))

    # ----------------------------------------------------------------- queries

    def get_document(self, tenant_id: str, document_id: UUID) -> Document:
        """The document, if it exists and belongs to ``tenant_id``."""
        try:
            document: Document = self.repository.get(document_id)
        except AggregateNotFoundError:
            raise DocumentNotFoundError(f"No document {document_id}.") from None
        if document.tenant_id != tenant_id:
            # Indistinguishable from absent: ids of other tenants leak nothing.
            raise DocumentNotFoundError(f"No document {document_id}.")
        return document

    # ---------------------------------------------------------------- commands

    def upload_document(
        self,
        *,
        tenant_id: str,
        actor: str,
        filename: str,
        declared_type: str | None,
        content: bytes,
        admit: Callable[[], Callable[[int | None], None]] | None = None,
    ) -> CommandResult:
        """Upload bytes; identical bytes already live in this tenant → that document.

        ``admit`` is asked, once the bytes are known to be valid and new, whether they may
        be stored (it raises if not, e.g. past a quota); what it returns is called with
        the position the document was recorded at, or None if it was not recorded.
        """
        if not content:
            raise EmptyFileError("The file is empty.")
        if len(content) > self.limits.max_bytes:
            raise FileTooLargeError(
                f"The file is {len(content)} bytes; the limit is {self.limits.max_bytes} bytes."
            )
        media_type = sniff_media_type(content, filename, declared_type)
        if media_type is None:
            raise UnsupportedMediaTypeError(
                "The file's content is not a supported type. Supported: "
                + ", ".join(SUPPORTED_MEDIA_TYPES)
                + "."
            )
        digest = sha256_hex(content)
        generation = 0
        while generation < _MAX_GENERATIONS:
            document_id = Document.id_for(tenant_id, digest, generation)
            try:
                existing: Document = self.repository.get(document_id)
            except AggregateNotFoundError:
                pass
            else:
                if existing.is_deleted:
                    generation += 1
                    continue
                return CommandResult(document_id, self.position_of(document_id), changed=False)
            admitted = admit() if admit is not None else None
            try:
                result = self._store(document_id, tenant_id, actor, filename, media_type,
                                     declared_type, content, digest)  # fmt: skip
            except BaseException:
                if admitted is not None:
                    admitted(None)
                raise
            if admitted is not None:
                admitted(result.position if result is not None else None)
            if result is None:
                continue  # the same bytes were stored concurrently: look again
            return result
        raise RuntimeError("too many generations of one document")  # pragma: no cover

    def _store(
        self,
        document_id: UUID,
        tenant_id: str,
        actor: str,
        filename: str,
        media_type: str,
        declared_type: str | None,
        content: bytes,
        digest: str,
    ) -> CommandResult | None:
        """Record the upload; None when the same bytes won the id concurrently.

        The document's data key, the file sealed with it and the ``Uploaded`` event
        (its file name sealed too) are written in one transaction.
        """
        key, wrapped = self.keys.new_key(document_key(document_id))
        document = Document.upload(
            document_id=document_id,
            tenant_id=tenant_id,
            actor=actor,
            filename=filename,
            media_type=media_type,
            declared_type=declared_type,
            size_bytes=len(content),
            content_sha256=digest,
            seal=key.seal_text,
        )
        blob = sealed_row(tenant_id, content, key)
        try:
            position = self.record(
                document,
                also=[
                    lambda curs: self.keys.insert_key(curs, tenant_id, key, wrapped),
                    lambda curs: put_row(curs, blob),
                ],
            )
        except ConcurrencyConflictError:
            # The same bytes were uploaded concurrently and won the id:
            # look again, and return that document as a duplicate.
            return None
        assert position is not None
        return CommandResult(document_id, position, changed=True)

    def delete_document(self, *, tenant_id: str, actor: str, document_id: UUID) -> CommandResult:
        """Delete a document, even while a worker is processing it.

        Losing the append to a processing stage (the worker recorded Parsed,
        Chunked or Embedded in between) is not a conflict with the user's
        intent, so the delete is decided again on the newer state. Losing it to
        another delete is: that request gets the 409.
        """
        for _ in range(_DELETE_ATTEMPTS - 1):
            try:
                return self._decide(tenant_id, document_id, lambda d: d.delete(actor=actor))
            except ConcurrencyConflictError:
                if self.get_document(tenant_id, document_id).is_deleted:
                    raise
        return self._decide(tenant_id, document_id, lambda d: d.delete(actor=actor))

    def restore_document(
        self,
        *,
        tenant_id: str,
        actor: str,
        document_id: UUID,
        admit: Callable[[], Callable[[int | None], None]] | None = None,
    ) -> CommandResult:
        """Take a deleted document out of the trash (before it is erased); ``admit`` as for
        an upload: it counts against the tenant's quotas again."""
        document = self.get_document(tenant_id, document_id)
        if not document.restore(actor=actor):
            return CommandResult(document_id, self.position_of(document_id), changed=False)
        admitted = admit() if admit is not None else None
        try:
            position = self.record(document)
        except BaseException:
            if admitted is not None:
                admitted(None)
            raise
        if admitted is not None:
            admitted(position)
        assert position is not None
        return CommandResult(document_id, position, changed=True)

    def retry_document(self, *, tenant_id: str, actor: str, document_id: UUID) -> CommandResult:
        """Send a failed document through the stage it failed in again (``Document.Retried``;
        the workers take it from there). 409 ``document_not_failed`` otherwise."""
        return self._decide(tenant_id, document_id, lambda d: bool(d.retry(actor=actor)))

    def hold_document(
        self, *, tenant_id: str, actor: str, document_id: UUID, reason: str
    ) -> CommandResult:
        return self._decide(tenant_id, document_id, lambda d: d.hold(actor=actor, reason=reason))

    def release_document(self, *, tenant_id: str, actor: str, document_id: UUID) -> CommandResult:
        return self._decide(tenant_id, document_id, lambda d: d.release(actor=actor))

    def erase_document(
        self, *, tenant_id: str, actor: str, document_id: UUID, cause: str = "request"
    ) -> CommandResult:
        """Erase a document: ``Document.Erased`` appended and its data key destroyed, at once.

        One transaction appends the event, destroys the document's key and every key
        that quotes it (answers and prompts of turns given its passages), and deletes
        the blobs sealed with them: either all of it happens or none. What is left to
        do (read models dropping their copies) follows the event, and survives crashes
        as events do. Erasing an erased document changes nothing.
        """

        def erase(document: Document) -> bool:
            return document.erase(actor=actor, cause=cause)

        def also(document: Document) -> list[Callable[[Any], None]]:
            digests = (document.content_sha256, document.pages_sha256,
                       document.chunks_sha256, document.embeddings_sha256)  # fmt: skip
            legacy = [d for d in digests if d]
            return [
                lambda curs: destroy_keys(curs, tenant_id, document_key(document_id)),
                # Blobs stored before data keys existed (sealed with none) go too.
                lambda curs: curs.execute(
                    "DELETE FROM blobs WHERE tenant_id = %s AND key_id = '' AND sha256 = ANY(%s)",
                    (tenant_id, legacy),
                ),
            ]

        for _ in range(_DELETE_ATTEMPTS - 1):
            try:
                return self._decide(tenant_id, document_id, erase, also)
            except ConcurrencyConflictError:
                if self.get_document(tenant_id, document_id).is_erased:
                    raise
        return self._decide(tenant_id, document_id, erase, also)

    def record_parsed(
        self,
        *,
        tenant_id: str,
        document_id: UUID,
        actor: str,
        pages_sha256: str,
        page_count: int | None,
        char_count: int,
        parser: str,
        warnings: list[str],
    ) -> CommandResult:
        return self._decide(
            tenant_id,
            document_id,
            lambda d: d.record_parsed(
                actor=actor,
                pages_sha256=pages_sha256,
                page_count=page_count,
                char_count=char_count,
                parser=parser,
                warnings=warnings,
            ),
        )

    def record_chunked(
        self,
        *,
        tenant_id: str,
        document_id: UUID,
        actor: str,
        chunks_sha256: str,
        chunk_count: int,
        chunk_tokens: int,
        overlap_tokens: int,
        tokenizer: str,
    ) -> CommandResult:
        return self._decide(
            tenant_id,
            document_id,
            lambda d: d.record_chunked(
                actor=actor,
                chunks_sha256=chunks_sha256,
                chunk_count=chunk_count,
                chunk_tokens=chunk_tokens,
                overlap_tokens=overlap_tokens,
                tokenizer=tokenizer,
            ),
        )

    def record_embedded(
        self,
        *,
        tenant_id: str,
        document_id: UUID,
        actor: str,
        embeddings_sha256: str,
        chunks_sha256: str,
        chunk_count: int,
        model: str,
        dimension: int,
        token_count: int | None = None,
    ) -> CommandResult:
        return self._decide(
            tenant_id,
            document_id,
            lambda d: d.record_embedded(
                actor=actor,
                embeddings_sha256=embeddings_sha256,
                chunks_sha256=chunks_sha256,
                chunk_count=chunk_count,
                model=model,
                dimension=dimension,
                token_count=token_count,
            ),
        )

    def record_failed(
        self,
        *,
        tenant_id: str,
        document_id: UUID,
        actor: str,
        stage: Stage,
        code: str,
        reason: str,
    ) -> CommandResult:
        return self._decide(
            tenant_id,
            document_id,
            lambda d: d.record_failed(actor=actor, stage=stage, code=code, reason=reason),
        )

    def _decide(
        self,
        tenant_id: str,
        document_id: UUID,
        decision: Callable[[Document], bool],
        also: Callable[[Document], list[Callable[[Any], None]]] | None = None,
    ) -> CommandResult:
        document = self.get_document(tenant_id, document_id)
        if not decision(document):
            return CommandResult(document_id, self.position_of(document_id), changed=False)
        position = self.record(document, also=also(document) if also is not None else [])
        assert position is not None
        return CommandResult(document_id, position, changed=True)

"""Command handlers on the real event store: dedupe, validation, idempotence, races."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commands.base import ConcurrencyConflictError
from commands.documents import DocumentsApp
from config.root import Container
from domain.document import (
    DocumentNotFoundError,
    EmptyFileError,
    FileTooLargeError,
    Stage,
    UnsupportedMediaTypeError,
)
from infra.blobs import sha256_hex

PDF_BYTES = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


@pytest.fixture(scope="module")
def container(make_container: Callable[..., Container]) -> Iterator[Container]:
    built = make_container(api={"max_upload_bytes": 1000})
    yield built


def _tenant() -> str:
    return str(uuid.uuid4())


def _upload(documents: DocumentsApp, tenant: str, content: bytes, name: str = "a.txt") -> Any:
    return documents.upload_document(
        tenant_id=tenant, actor="key:test", filename=name, declared_type=None, content=content
    )


def _event_types(container: Container, document_id: uuid.UUID) -> list[str]:
    return [type(e).__qualname__ for e in container.documents.events.get(document_id)]


def test_upload_writes_blob_then_event(container: Container) -> None:
    tenant = _tenant()
    result = _upload(container.documents, tenant, b"hello world")
    assert result.changed
    assert result.position >= 1
    key = container.documents.data_key(result.id)
    assert key is not None
    assert container.blobs.get(tenant, sha256_hex(b"hello world"), key) == b"hello world"
    # Sealed at rest: the stored row is not the bytes, and no other key opens it.
    raw = container.blobs.get_many([(tenant, key.key_id, sha256_hex(b"hello world"))])
    assert b"hello world" not in next(iter(raw.values()))
    document = container.documents.get_document(tenant, result.id)
    assert document.filename.startswith("kfsealed:1:document:")  # the name, sealed
    assert key.open_text(document.filename) == "a.txt"
    assert document.media_type == "text/plain"
    assert document.size_bytes == 11


def test_identical_bytes_within_a_tenant_return_the_existing_document(container: Container) -> None:
    tenant = _tenant()
    first = _upload(container.documents, tenant, b"same bytes", "one.txt")
    second = _upload(container.documents, tenant, b"same bytes", "two.txt")
    other_tenant = _upload(container.documents, _tenant(), b"same bytes", "one.txt")
    assert second.id == first.id and not second.changed
    assert second.position == first.position
    assert other_tenant.id != first.id and other_tenant.changed
    assert _event_types(container, first.id) == ["Document.Uploaded"]


def test_after_delete_the_same_bytes_make_a_new_document(container: Container) -> None:
    tenant = _tenant()
    first = _upload(container.documents, tenant, b"deleted later")
    container.documents.delete_document(tenant_id=tenant, actor="key:test", document_id=first.id)
    again = _upload(container.documents, tenant, b"deleted later")
    assert again.changed and again.id != first.id
    assert _event_types(container, first.id) == ["Document.Uploaded", "Document.Deleted"]


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"", EmptyFileError),
        (b"x" * 1001, FileTooLargeError),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, UnsupportedMediaTypeError),
        (b"MZ\x90\x00\x03\x00\x00\x00", UnsupportedMediaTypeError),
    ],
)
def test_bad_uploads_are_refused_and_write_nothing(
    container: Container, content: bytes, error: type[Exception]
) -> None:
    head = container.documents.head_position()
    with pytest.raises(error):
        _upload(container.documents, _tenant(), content)
    assert container.documents.head_position() == head


def test_documents_of_another_tenant_are_not_found(container: Container) -> None:
    tenant = _tenant()
    result = _upload(container.documents, tenant, b"private")
    with pytest.raises(DocumentNotFoundError):
        container.documents.get_document(_tenant(), result.id)
    with pytest.raises(DocumentNotFoundError):
        container.documents.delete_document(
            tenant_id=_tenant(), actor="key:x", document_id=result.id
        )


def test_a_redelivered_stage_result_appends_nothing(container: Container) -> None:
    tenant = _tenant()
    result = _upload(container.documents, tenant, b"stage twice")

    def parsed() -> Any:
        return container.documents.record_parsed(
            tenant_id=tenant,
            document_id=result.id,
            actor="worker:1",
            pages_sha256="p",
            page_count=None,
            char_count=11,
            parser="text",
            warnings=[],
        )

    first, second = parsed(), parsed()
    assert first.changed and not second.changed
    assert second.position == first.position
    failed = container.documents.record_failed(
        tenant_id=tenant,
        document_id=result.id,
        actor="w",
        stage=Stage.PARSE,
        code="x",
        reason="late",
    )
    assert not failed.changed  # the parse stage is no longer awaited
    assert _event_types(container, result.id) == ["Document.Uploaded", "Document.Parsed"]


def test_two_commands_racing_on_one_document_one_wins_one_conflicts(container: Container) -> None:
    tenant = _tenant()
    result = _upload(container.documents, tenant, b"raced")
    documents = container.documents
    barrier = threading.Barrier(2, timeout=10)
    original_get = documents.repository.get

    waited = threading.local()

    def get_then_wait(aggregate_id: Any, *args: Any, **kwargs: Any) -> Any:
        aggregate = original_get(aggregate_id, *args, **kwargs)
        if aggregate_id == result.id and not getattr(waited, "done", False):
            waited.done = True
            barrier.wait()  # both commands have read version 1 before either writes
        return aggregate

    outcomes: list[object] = []

    def delete() -> None:
        try:
            outcomes.append(
                documents.delete_document(tenant_id=tenant, actor="key:a", document_id=result.id)
            )
        except ConcurrencyConflictError as exc:
            outcomes.append(exc)

    documents.repository.get = get_then_wait  # type: ignore[method-assign]
    try:
        threads = [threading.Thread(target=delete) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
    finally:
        documents.repository.get = original_get  # type: ignore[method-assign]
    conflicts = [o for o in outcomes if isinstance(o, ConcurrencyConflictError)]
    assert len(outcomes) == 2 and len(conflicts) == 1
    events = list(documents.events.get(result.id))
    assert [e.originator_version for e in events] == [1, 2]  # no gap, nothing half-written
    assert [type(e).__qualname__ for e in events] == ["Document.Uploaded", "Document.Deleted"]


def test_a_delete_that_loses_to_a_processing_stage_is_decided_again(
    container: Container,
) -> None:
    tenant = _tenant()
    result = _upload(container.documents, tenant, b"deleted while a worker parses it")
    documents = container.documents
    original_get = documents.repository.get
    raced = False

    def get_then_let_the_worker_write(aggregate_id: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal raced
        aggregate = original_get(aggregate_id, *args, **kwargs)
        if aggregate_id == result.id and not raced:
            raced = True  # the worker records Parsed after the delete has read version 1
            documents.repository.get = original_get  # type: ignore[method-assign]
            documents.record_parsed(
                tenant_id=tenant,
                document_id=result.id,
                actor="worker:test",
                pages_sha256="0" * 64,
                page_count=None,
                char_count=10,
                parser="test",
                warnings=[],
            )
        return aggregate

    documents.repository.get = get_then_let_the_worker_write  # type: ignore[method-assign]
    try:
        deleted = documents.delete_document(tenant_id=tenant, actor="key:a", document_id=result.id)
    finally:
        documents.repository.get = original_get  # type: ignore[method-assign]
    assert raced and deleted.changed
    assert _event_types(container, result.id) == [
        "Document.Uploaded",
        "Document.Parsed",
        "Document.Deleted",
    ]


def test_concurrent_identical_uploads_make_one_document(container: Container) -> None:
    tenant = _tenant()
    barrier = threading.Barrier(8, timeout=10)
    results: list[Any] = []

    def upload() -> None:
        barrier.wait()
        results.append(_upload(container.documents, tenant, b"uploaded eight times at once"))

    threads = [threading.Thread(target=upload) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 8
    assert len({r.id for r in results}) == 1
    assert sum(r.changed for r in results) == 1
    assert _event_types(container, results[0].id) == ["Document.Uploaded"]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(min_size=1, max_size=200).filter(lambda b: b"\x00" not in b))
def test_uploading_the_same_bytes_twice_is_a_no_op(container: Container, content: bytes) -> None:
    tenant = _tenant()
    try:
        first = _upload(container.documents, tenant, content)
    except UnsupportedMediaTypeError:
        return
    head = container.documents.head_position()
    second = _upload(container.documents, tenant, content)
    assert (second.id, second.changed) == (first.id, False)
    assert container.documents.head_position() == head

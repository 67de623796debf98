"""The dead letter's life: parked once per component and subject, retried, resolved,
parked again when a retry fails, dropped; and a failed document sent through its stage
again."""

from __future__ import annotations

import uuid

import pytest

from domain.activity import (
    MAX_ERROR,
    DeadLetter,
    DeadLetterState,
    DeadLetterStateError,
    InvalidDeadLetterActionError,
    ParkedMessage,
)
from domain.document import Document, DocumentNotFailedError, DocumentStatus, Stage


def _letter(component: str = "projection:catalog") -> DeadLetter:
    return DeadLetter.park(
        ParkedMessage(
            tenant_id="t",
            component=component,
            subject="documents:42",
            context="documents",
            position=42,
            event_type="Document.Uploaded",
            aggregate_id="a",
            attempts=5,
            error="RuntimeError: " + "x" * 5000,
        ),
        actor=f"system:{component}",
    )


def test_one_letter_per_component_and_subject() -> None:
    letter = _letter()
    assert letter.id == DeadLetter.id_for("projection:catalog", "documents:42")
    assert letter.id != DeadLetter.id_for("projection:search", "documents:42")
    assert letter.id != DeadLetter.id_for("projection:catalog", "documents:43")
    assert letter.state is DeadLetterState.PARKED and letter.is_projection
    assert len(letter.error) == MAX_ERROR  # bounded
    assert not _letter("worker:parse").is_projection


def test_retry_resolve_repark_and_drop() -> None:
    letter = _letter()
    assert not letter.park_again(actor="system", attempts=5, error="again")  # parked already
    assert not letter.resolve(actor="system")  # no retry asked for
    assert letter.request_retry(actor="key:ops", reason="fixed")
    assert not letter.request_retry(actor="key:ops")  # asked already
    assert letter.state is DeadLetterState.RETRYING
    assert letter.park_again(actor="system", attempts=5, error="RuntimeError: still")
    assert letter.state is DeadLetterState.PARKED and letter.attempts == 10
    assert letter.request_retry(actor="key:ops")
    assert letter.resolve(actor="system")
    assert letter.state is DeadLetterState.RESOLVED
    with pytest.raises(DeadLetterStateError):
        letter.request_retry(actor="key:ops")
    with pytest.raises(DeadLetterStateError):
        letter.drop(actor="key:ops")

    dropped = _letter()
    assert dropped.drop(actor="key:ops", reason="bad data")
    assert not dropped.drop(actor="key:ops")
    assert dropped.state is DeadLetterState.DROPPED
    with pytest.raises(DeadLetterStateError):
        dropped.request_retry(actor="key:ops")
    with pytest.raises(InvalidDeadLetterActionError):
        _letter().drop(actor="key:ops", reason="r" * 501)
    kinds = [type(e).__qualname__ for e in letter.collect_events()]
    assert kinds == [
        "DeadLetter.Parked", "DeadLetter.RetryRequested", "DeadLetter.Reparked",
        "DeadLetter.RetryRequested", "DeadLetter.Resolved",
    ]  # fmt: skip


def _document() -> Document:
    return Document.upload(
        document_id=uuid.uuid4(),
        tenant_id="t",
        actor="key:a",
        filename="notes.txt",
        media_type="text/plain",
        declared_type=None,
        size_bytes=10,
        content_sha256="0" * 64,
    )


@pytest.mark.parametrize(
    ("stage", "status"),
    [
        (Stage.PARSE, DocumentStatus.UPLOADED),
        (Stage.CHUNK, DocumentStatus.PARSED),
        (Stage.EMBED, DocumentStatus.CHUNKED),
    ],
)
def test_a_failed_document_is_retried_at_the_stage_it_failed_in(
    stage: Stage, status: DocumentStatus
) -> None:
    document = _document()
    with pytest.raises(DocumentNotFailedError):
        document.retry(actor="key:a")
    document.status = status  # as if the stages before had run
    assert document.record_failed(actor="worker", stage=stage, code="internal_error", reason="x")
    assert document.retry(actor="key:a") is stage
    assert document.status is status and document.failure is None
    assert document.awaits(stage)
    with pytest.raises(DocumentNotFailedError):
        document.retry(actor="key:a")

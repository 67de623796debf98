"""The bus envelope: plain JSON in, the same envelope out; events stay small."""

from __future__ import annotations

import json
import uuid

import pytest

from domain.document import Document
from infra.envelope import ENVELOPE_VERSION, Envelope


def _uploaded() -> object:
    document = Document.upload(
        document_id=uuid.uuid4(),
        tenant_id="t-1",
        actor="key:abc",
        filename="a.pdf",
        media_type="application/pdf",
        declared_type=None,
        size_bytes=3,
        content_sha256="f" * 64,
    )
    return document.collect_events()[0]


def test_envelope_round_trips_through_plain_json() -> None:
    event = _uploaded()
    envelope = Envelope.from_event("documents", 42, "domain.document:Document.Uploaded", event)
    body = json.loads(envelope.to_json())
    assert body["envelope_version"] == ENVELOPE_VERSION
    assert body["context"] == "documents" and body["position"] == 42
    assert body["event_type"] == "Document.Uploaded"
    assert body["tenant_id"] == "t-1" and body["actor"] == "key:abc"
    assert body["aggregate_version"] == 1
    assert body["data"] == {
        "filename": "a.pdf",
        "media_type": "application/pdf",
        "declared_type": None,
        "size_bytes": 3,
        "content_sha256": "f" * 64,
    }
    assert Envelope.from_json(envelope.to_json()) == envelope
    assert envelope.message_id == "documents:42"


def test_unknown_envelope_versions_are_refused() -> None:
    with pytest.raises(ValueError, match="envelope_version"):
        Envelope.from_json(b'{"envelope_version": 99}')


def test_what_caused_a_command_travels_as_metadata_and_version_1_still_reads() -> None:
    event = _uploaded()
    cause = {"request_id": "req-1", "client_address": "10.0.0.7", "user_agent": "curl/8"}
    object.__setattr__(event, "metadata", cause)  # what commands/base.py does on record
    envelope = Envelope.from_event("documents", 7, "domain.document:Document.Uploaded", event)
    assert envelope.metadata == cause and "metadata" not in envelope.data
    body = json.loads(envelope.to_json())
    assert body["envelope_version"] == 2 and body["metadata"] == cause
    assert Envelope.from_json(envelope.to_json()) == envelope
    old = {k: v for k, v in body.items() if k != "metadata"} | {"envelope_version": 1}
    assert Envelope.from_json(json.dumps(old).encode()).metadata == {}
    # An event stored before metadata existed has none.
    assert Envelope.from_event("documents", 8, "t", _uploaded()).metadata == {}


def test_the_cause_is_the_request_inside_one_and_the_process_outside() -> None:
    from infra.causation import caused_by, current, set_process

    set_process("worker:host:1")
    try:
        assert current() == {"process": "worker:host:1"}
        with caused_by(request_id="r", client_address="::1", user_agent="x\x00y" + "z" * 400):
            inside = current()
        assert inside["request_id"] == "r" and inside["client_address"] == "::1"
        assert inside["user_agent"].startswith("xyz") and len(inside["user_agent"]) == 300
        assert current() == {"process": "worker:host:1"}
        with caused_by(request_id="r", client_address=None, user_agent=""):
            assert current() == {"request_id": "r"}
    finally:
        set_process("")

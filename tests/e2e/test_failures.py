"""Failures are events with a stage and a reason; the worker keeps going."""

from __future__ import annotations

import io
import uuid
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from config.settings import Settings
from infra.embedding import SentenceTransformerEmbedder
from processors.sandbox import ParseSandbox
from tests.harness import RunningSystem

POISON = b"POISON-PILL"


@pytest.fixture(scope="module")
def system(
    settings_factory: Callable[..., Settings], embedder: SentenceTransformerEmbedder
) -> Iterator[RunningSystem]:
    real_parse = ParseSandbox.parse

    def parse_or_explode(self: ParseSandbox, content: bytes, media_type: str) -> Any:
        if POISON in content:
            raise RuntimeError("simulated parser crash")
        return real_parse(self, content, media_type)

    ParseSandbox.parse = parse_or_explode  # type: ignore[method-assign]
    try:
        settings = settings_factory(ingest={"max_deliver": 2})
        with RunningSystem(settings, embedder) as running:
            yield running
    finally:
        ParseSandbox.parse = real_parse  # type: ignore[method-assign]


def _upload(client: httpx.Client, name: str, content: bytes) -> str:
    response = client.post("/v1/documents", files={"file": (name, content)})
    assert response.status_code == 202, response.text
    document_id: str = response.json()["id"]
    return document_id


def _corrupt_docx() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "this is not XML at all <<<")
    return buffer.getvalue()


def test_unreadable_documents_fail_with_stage_and_reason(system: RunningSystem) -> None:
    with system.client() as client:
        corrupt = _upload(client, "broken.docx", _corrupt_docx())
        blank = _upload(client, "blank.txt", b"   \n\t\n   ")
        fine = _upload(client, "fine.txt", f"A perfectly fine note {uuid.uuid4()}.".encode())
        final = system.wait_final(client, [corrupt, blank, fine])
    assert final[corrupt]["status"] == "failed"
    assert final[corrupt]["failure"]["stage"] == "parse"
    assert final[corrupt]["failure"]["code"] == "corrupt"
    assert final[blank]["failure"] == {
        "stage": "parse",
        "code": "no_text",
        "reason": "The file contains no text.",
    }
    assert final[fine]["status"] == "embedded"


def test_a_stage_that_keeps_crashing_fails_the_document_and_the_worker_moves_on(
    system: RunningSystem,
) -> None:
    with system.client() as client:
        poisoned = _upload(client, "poison.txt", POISON + f" {uuid.uuid4()}".encode())
        after = _upload(client, "after.txt", f"Uploaded after the poison {uuid.uuid4()}.".encode())
        final = system.wait_final(client, [poisoned, after], timeout=120)
    failure = final[poisoned]["failure"]
    assert final[poisoned]["status"] == "failed"
    assert failure["stage"] == "parse" and failure["code"] == "internal_error"
    assert "2 times" in failure["reason"]
    assert final[after]["status"] == "embedded"
    events = [
        type(e).__qualname__ for e in system.container.documents.events.get(uuid.UUID(poisoned))
    ]
    assert events == ["Document.Uploaded", "Document.Failed"]


def test_a_docx_compression_bomb_fails_with_a_reason_and_the_worker_moves_on(
    system: RunningSystem,
) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(
            "[Content_Types].xml",
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Override PartName="/word/document.xml" ContentType="application/'
            'vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>',
        )
        archive.writestr("word/document.xml", "<w:document/>")
        archive.writestr("word/media/image1.bin", b"\0" * (64 * 1024 * 1024))
    bomb = buffer.getvalue()
    assert len(bomb) < 256 * 1024  # 64 MB of zeros in a small upload
    with system.client() as client:
        bombed = _upload(client, "bomb.docx", bomb)
        after = _upload(client, "after.txt", f"Uploaded after the bomb {uuid.uuid4()}.".encode())
        final = system.wait_final(client, [bombed, after], timeout=120)
    assert final[bombed]["status"] == "failed"
    assert final[bombed]["media_type"].endswith("wordprocessingml.document")
    failure = final[bombed]["failure"]
    assert failure["stage"] == "parse" and failure["code"] == "too_large"
    assert "compression bomb" in failure["reason"]
    assert final[after]["status"] == "embedded"

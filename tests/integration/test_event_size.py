"""Claim check: a 500-page PDF's events (and their bus envelopes) stay under 64 KB each."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pymupdf
import pytest

from config.root import Container
from config.runtime import build_stages
from infra.embedding import SentenceTransformerEmbedder
from processors.stages import DocumentRef, Outcome

LIMIT = 64 * 1024


def _five_hundred_page_pdf() -> bytes:
    """Text on every page; every other page mostly covered by an image (warnings galore)."""
    pdf = pymupdf.open()
    pixmap = pymupdf.Pixmap(pymupdf.csRGB, pymupdf.IRect(0, 0, 8, 8), False)
    pixmap.clear_with(200)
    image = pixmap.tobytes("png")
    for number in range(1, 501):
        page = pdf.new_page()
        if number % 2:
            page.insert_text((72, 72), f"Page {number}: the quarterly figures and their notes.")
        else:
            page.insert_image(page.rect, stream=image)
            page.insert_text((72, 72), f"p{number}")
    data: bytes = pdf.tobytes()
    pdf.close()
    return data


@pytest.fixture(scope="module")
def container(make_container: Callable[..., Container]) -> Iterator[Container]:
    built = make_container()
    yield built


@pytest.mark.timeout(300)
def test_events_of_a_500_page_pdf_stay_small(
    container: Container, embedder: SentenceTransformerEmbedder
) -> None:
    tenant = str(uuid.uuid4())
    content = _five_hundred_page_pdf()
    result = container.documents.upload_document(
        tenant_id=tenant, actor="key:t", filename="big.pdf", declared_type=None, content=content
    )
    stages = build_stages(container)
    stages._embedder_factory = lambda: embedder
    ref = DocumentRef(tenant, result.id)
    assert stages.parse(ref) is Outcome.RECORDED
    assert stages.chunk(ref) is Outcome.RECORDED
    assert stages.embed([ref]) == [Outcome.RECORDED]

    document = container.documents.get_document(tenant, result.id)
    assert document.page_count == 500 and document.chunk_count and document.chunk_count > 10
    stored = container.documents.recorder.select_events(result.id)
    assert [s.topic.rsplit(".", 1)[-1] for s in stored] == [
        "Uploaded",
        "Parsed",
        "Chunked",
        "Embedded",
    ]
    assert max(len(s.state) for s in stored) < LIMIT
    envelopes = [e for batch in container.event_logs["documents"].read_all(0) for e in batch]
    assert envelopes and max(len(e.to_json()) for e in envelopes) < LIMIT
    parsed = next(e for e in envelopes if e.event_type == "Document.Parsed")
    assert 0 < len(parsed.data["warnings"]) <= 25  # per-page warnings are capped, then summarised

"""Hostile uploads end in a ParseError with a reason, never a stuck or dead worker.

The sandbox tests use a real child process with its real memory cap and
deadline; the parse functions they hand it (module-level, so the spawned child
can import them) misbehave on purpose.
"""

from __future__ import annotations

import io
import os
import signal
import time
import zipfile
from collections.abc import Iterator

import pytest

from processors.parse import ParsedDocument, ParseError, ParseLimits, parse_document
from processors.sandbox import ParserCrashedError, ParseSandbox, SandboxLimits

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
TEXT = "text/plain"


def misbehaving_parse(content: bytes, media_type: str, limits: ParseLimits) -> ParsedDocument:
    if content == b"slow":
        time.sleep(60)
    if content == b"hog":
        hoard = bytearray(8 * 1024**3)  # far beyond the cap: MemoryError
        del hoard
    if content == b"die":
        os.kill(os.getpid(), signal.SIGKILL)
    if content == b"bug":
        raise KeyError("a bug in the parser")
    return parse_document(content, media_type, limits)


@pytest.fixture
def sandbox() -> Iterator[ParseSandbox]:
    made = ParseSandbox(
        ParseLimits(), SandboxLimits(timeout_s=3, max_memory_mb=1024), parse=misbehaving_parse
    )
    yield made
    made.close()


def _fine(sandbox: ParseSandbox) -> None:
    parsed = sandbox.parse(b"Still parsing after that.", TEXT)
    assert parsed.pages[0].text == "Still parsing after that."


def test_a_parse_past_its_deadline_is_killed_and_reported(sandbox: ParseSandbox) -> None:
    started = time.monotonic()
    with pytest.raises(ParseError) as failed:
        sandbox.parse(b"slow", TEXT)
    assert time.monotonic() - started < 30
    assert failed.value.code == "too_complex" and "3 s" in failed.value.reason
    _fine(sandbox)


def test_a_parse_that_exhausts_its_memory_is_reported(sandbox: ParseSandbox) -> None:
    with pytest.raises(ParseError) as failed:
        sandbox.parse(b"hog", TEXT)
    assert failed.value.code == "too_large" and "1024 MB" in failed.value.reason
    _fine(sandbox)


def test_a_parser_killed_outright_is_reported(sandbox: ParseSandbox) -> None:
    with pytest.raises(ParseError) as failed:
        sandbox.parse(b"die", TEXT)
    assert failed.value.code == "too_large"
    _fine(sandbox)


def test_a_parser_bug_is_a_crash_for_redelivery_not_a_verdict_on_the_file(
    sandbox: ParseSandbox,
) -> None:
    with pytest.raises(ParserCrashedError, match="a bug in the parser"):
        sandbox.parse(b"bug", TEXT)
    _fine(sandbox)


def _docx_with(member: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as package:
        package.writestr("[Content_Types].xml", "<Types/>")
        package.writestr(member, data)
    return buffer.getvalue()


def test_a_docx_that_expands_past_the_limit_is_refused_unopened() -> None:
    bomb = _docx_with("word/document.xml", b"<" + b" " * (12 * 1024 * 1024))
    limits = ParseLimits(max_docx_expanded_bytes=8 * 1024 * 1024, max_docx_ratio=10**6)
    with pytest.raises(ParseError) as refused:
        parse_document(bomb, DOCX, limits)
    assert refused.value.code == "too_large" and "expand to 12 MB" in refused.value.reason


def test_a_docx_part_compressed_like_a_bomb_is_refused() -> None:
    bomb = _docx_with("word/media/image1.png", b"\0" * (4 * 1024 * 1024))
    with pytest.raises(ParseError) as refused:
        parse_document(bomb, DOCX, ParseLimits())
    assert refused.value.code == "too_large" and "compression bomb" in refused.value.reason


def test_a_docx_with_too_many_parts_is_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as package:
        for i in range(60):
            package.writestr(f"word/part{i}.xml", "<x/>")
    with pytest.raises(ParseError) as refused:
        parse_document(buffer.getvalue(), DOCX, ParseLimits(max_docx_members=50))
    assert refused.value.code == "too_large"


def _nested_docx(depth: int) -> bytes:
    w = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
    body = "<w:tbl><w:tr><w:tc>" * depth + "<w:p><w:r><w:t>deep</w:t></w:r></w:p>"
    body += "</w:tc></w:tr></w:tbl>" * depth
    document = f'<w:document xmlns:w="{w}"><w:body>{body}</w:body></w:document>'
    rels = (
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
        'relationships/officeDocument" Target="word/document.xml"/></Relationships>'
    )
    types = (
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/'
        'vnd.openxmlformats-package.relationships+xml"/>'
        '<Override PartName="/word/document.xml" ContentType="application/'
        'vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>'
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as package:
        package.writestr("[Content_Types].xml", types)
        package.writestr("_rels/.rels", rels)
        package.writestr("word/document.xml", document)
    return buffer.getvalue()


def test_deeply_nested_docx_fails_with_a_reason_in_the_real_sandbox() -> None:
    real = ParseSandbox(ParseLimits(), SandboxLimits(timeout_s=30, max_memory_mb=2048))
    try:
        assert real.parse(_nested_docx(3), DOCX).pages[0].text.strip() == "deep"
        with pytest.raises(ParseError) as failed:
            real.parse(_nested_docx(5000), DOCX)
        assert failed.value.code in {"corrupt", "too_complex", "too_large"}
        assert failed.value.reason
        assert real.parse(_nested_docx(2), DOCX).pages[0].text.strip() == "deep"
    finally:
        real.close()


def test_extracted_text_beyond_the_limit_is_refused() -> None:
    with pytest.raises(ParseError) as refused:
        parse_document(b"word " * 1000, TEXT, ParseLimits(max_chars=1000))
    assert refused.value.code == "too_large"

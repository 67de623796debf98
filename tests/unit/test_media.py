"""Unit tests for domain.media: the media type comes from the bytes.

Every shared real-world fixture sniffs to its kind whatever it claims to be;
text and Markdown are told apart by name or declared type only; lookalikes
(images, executables, archives, other Office formats, binary) are refused; and
no sequence of bytes makes sniffing raise.
"""

from __future__ import annotations

import codecs
import gzip
import io
import struct
import zipfile
import zlib

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from domain.media import (
    DOCX,
    MARKDOWN,
    PDF,
    SUPPORTED_MEDIA_TYPES,
    TEXT,
    decode_text,
    sniff_media_type,
)
from tests.shared_data import DOCUMENTS, manifest

MANIFEST = manifest()
KIND_TO_TYPE = {"pdf": PDF, "docx": DOCX}


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\x00"))
        + chunk(b"IEND", b"")
    )


def test_manifest_lists_every_fixture() -> None:
    on_disk = {path.name for path in DOCUMENTS.iterdir() if path.suffix in {".pdf", ".docx"}}
    assert on_disk == {row["filename"] for row in MANIFEST}


@pytest.mark.parametrize("row", MANIFEST, ids=lambda row: row["filename"])
def test_fixture_sniffs_to_its_kind(row: dict[str, str]) -> None:
    content = (DOCUMENTS / row["filename"]).read_bytes()
    assert sniff_media_type(content, row["filename"], None) == KIND_TO_TYPE[row["kind"]]


@pytest.mark.parametrize("row", MANIFEST, ids=lambda row: row["filename"])
def test_bytes_win_over_a_misleading_name_and_declared_type(row: dict[str, str]) -> None:
    content = (DOCUMENTS / row["filename"]).read_bytes()
    assert sniff_media_type(content, "notes.md", "text/markdown") == KIND_TO_TYPE[row["kind"]]


def test_pdf_marker_after_leading_junk_within_the_first_kilobyte() -> None:
    assert sniff_media_type(b"\r\n" * 400 + b"%PDF-1.4\n", "a.pdf", None) == PDF


def test_pdf_marker_beyond_the_first_kilobyte_does_not_make_a_pdf() -> None:
    content = b"plain words " * 100 + b"%PDF-1.4\n"
    assert sniff_media_type(content, "a.pdf", PDF) == TEXT


@pytest.mark.parametrize(
    ("filename", "declared_type"),
    [
        ("notes.md", None),
        ("NOTES.MD", None),
        ("notes.markdown", None),
        ("notes.mdown", None),
        ("notes.txt", "text/markdown"),
        ("upload", "text/markdown; charset=utf-8"),
        ("upload", "Text/X-Markdown"),
    ],
)
def test_markdown_by_extension_or_declared_type(filename: str, declared_type: str | None) -> None:
    assert sniff_media_type(b"# Title\n\nSome *text*.\n", filename, declared_type) == MARKDOWN


@pytest.mark.parametrize(
    ("filename", "declared_type"),
    [("notes.txt", None), ("notes.txt", "text/plain"), ("README", None), ("notes.md.txt", None)],
)
def test_plain_text_otherwise(filename: str, declared_type: str | None) -> None:
    assert sniff_media_type(b"# Title\n\nSome *text*.\n", filename, declared_type) == TEXT


@pytest.mark.parametrize(
    "content",
    [
        "caf\u00e9 na\u00efve\n".encode(),
        codecs.BOM_UTF8 + "caf\u00e9\n".encode(),
        codecs.BOM_UTF16_LE + "caf\u00e9\r\n\u4e2d\u6587\n".encode("utf-16-le"),
        codecs.BOM_UTF16_BE + "caf\u00e9\r\n\u4e2d\u6587\n".encode("utf-16-be"),
        b"col1\tcol2\r\nvalue\tvalue\f\n",
        b"   \n\t\n",
        b"log line with one escape \x1b[0m and otherwise prose that goes on for a while\n",
    ],
    ids=["utf8", "utf8-bom", "utf16-le", "utf16-be", "tabs-crlf-ff", "whitespace", "one-escape"],
)
def test_text_encodings_sniff_as_text(content: bytes) -> None:
    assert sniff_media_type(content, "notes.txt", None) == TEXT


def _office_lookalikes() -> dict[str, bytes]:
    return {
        "plain zip": _zip({"a.txt": b"hello"}),
        "xlsx-like zip": _zip(
            {"[Content_Types].xml": b"<Types/>", "xl/workbook.xml": b"<workbook/>"}
        ),
        "pptx-like zip": _zip(
            {"[Content_Types].xml": b"<Types/>", "ppt/presentation.xml": b"<presentation/>"}
        ),
        "odt zip": _zip(
            {"mimetype": b"application/vnd.oasis.opendocument.text", "content.xml": b"<x/>"}
        ),
    }


@pytest.mark.parametrize(
    "content",
    [
        _png(),
        b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01",
        b"\x7fELF\x02\x01\x01\x00" + bytes(56),
        b"MZ\x90\x00\x03\x00\x00\x00",
        gzip.compress(b"hello world\n"),
        *_office_lookalikes().values(),
        b"",
        b"hello\x00world",
        b"\x01\x02\x03\x04\x05\x06\x07\x08 binary-ish",
        "caf\u00e9\n".encode("latin-1"),
        codecs.BOM_UTF32_LE + "text".encode("utf-32-le"),
        codecs.BOM_UTF16_LE + b"\x00",
    ],
    ids=[
        "png",
        "jpeg",
        "elf",
        "pe",
        "gzip",
        *_office_lookalikes().keys(),
        "empty",
        "nul",
        "controls",
        "latin-1",
        "utf-32",
        "odd-utf-16",
    ],
)
def test_unsupported_bytes_sniff_as_none(content: bytes) -> None:
    assert sniff_media_type(content, "upload.txt", "text/plain") is None


def test_damaged_docx_is_not_docx() -> None:
    content = (DOCUMENTS / "word_sample.docx").read_bytes()
    assert sniff_media_type(content[:2000], "word_sample.docx", DOCX) is None


def test_decode_text_strips_the_utf8_bom() -> None:
    assert decode_text(codecs.BOM_UTF8 + b"abc") == "abc"


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_decode_text_follows_the_utf16_bom(codec: str) -> None:
    bom = codecs.BOM_UTF16_LE if codec.endswith("le") else codecs.BOM_UTF16_BE
    assert decode_text(bom + "\u4e2d\u6587 text".encode(codec)) == "\u4e2d\u6587 text"


@pytest.mark.parametrize("content", [b"caf\xe9", codecs.BOM_UTF16_LE + b"a"])
def test_decode_text_refuses_undecodable_bytes(content: bytes) -> None:
    with pytest.raises(ValueError, match="decode"):
        decode_text(content)


_INTERESTING_PREFIXES = st.sampled_from(
    [
        b"",
        b"PK\x03\x04",
        b"PK\x05\x06",
        b"%PDF-",
        codecs.BOM_UTF8,
        codecs.BOM_UTF16_LE,
        codecs.BOM_UTF16_BE,
        b"# ",
    ]
)


@given(
    prefix=_INTERESTING_PREFIXES,
    content=st.binary(max_size=4096),
    filename=st.text(max_size=40),
    declared_type=st.none() | st.text(max_size=40),
)
def test_sniffing_never_raises(
    prefix: bytes, content: bytes, filename: str, declared_type: str | None
) -> None:
    result = sniff_media_type(prefix + content, filename, declared_type)
    assert result is None or result in SUPPORTED_MEDIA_TYPES


@given(st.text(max_size=500), st.sampled_from(["notes.txt", "notes.md"]))
def test_utf8_text_without_controls_is_always_text(text: str, filename: str) -> None:
    printable = "".join(c for c in text if c.isprintable() or c in "\t\n\r\f")
    assume("%PDF-" not in printable)
    expected = MARKDOWN if filename.endswith(".md") else TEXT
    content = printable.encode()
    assert sniff_media_type(content, filename, None) == (expected if content else None)

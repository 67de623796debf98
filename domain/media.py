"""Media types the platform accepts, and how to tell them from the bytes.

This module owns the list of supported media types and the rule that decides
which of them an upload really is. The bytes decide; the declared MIME type and
the file name only choose between plain text and Markdown, which share every
byte-level trait. It also owns ``decode_text``, the one place that turns text
bytes into ``str``, so that sniffing and parsing agree on what counts as text.
"""

from __future__ import annotations

import codecs
import io
import re
import zipfile

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
TEXT = "text/plain"
MARKDOWN = "text/markdown"
SUPPORTED_MEDIA_TYPES: tuple[str, ...] = (PDF, DOCX, TEXT, MARKDOWN)

# Readers (Acrobat, MuPDF) accept a PDF header preceded by junk within the first
# kilobyte, so a stricter check would refuse files people can open.
_PDF_MARKER = b"%PDF-"
_PDF_MARKER_WINDOW = 1024
_ZIP_LOCAL_HEADER = b"PK\x03\x04"
_DOCX_MAIN_PART = "word/document.xml"
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_MARKDOWN_SUFFIXES = (".md", ".markdown", ".mdown")
_MARKDOWN_DECLARED = frozenset({"text/markdown", "text/x-markdown"})
# Unicode category Cc (C0, DEL and C1) except tab, line feed, form feed and
# carriage return, which text files use for layout.
_DISALLOWED_CONTROLS = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")
# Real prose carries at most a stray escape or two; binary that happens to be
# valid UTF-8 (short headers, packed ASCII integers) is dense with controls.
# A tenth is far above the first and well below the second.
_MAX_CONTROL_FRACTION = 0.1

# zipfile reports a damaged archive through several unrelated exceptions.
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError)


def sniff_media_type(content: bytes, filename: str, declared_type: str | None) -> str | None:
    """Return the supported media type the bytes really are, or None if unsupported."""
    if _PDF_MARKER in content[:_PDF_MARKER_WINDOW]:
        return PDF
    if content.startswith(_ZIP_LOCAL_HEADER):
        # A ZIP is never text, so a ZIP that is not a Word document is unsupported.
        return DOCX if _lists_docx_main_part(content) else None
    if not _is_text(content):
        return None
    if _names_markdown(filename, declared_type):
        return MARKDOWN
    return TEXT


def decode_text(content: bytes) -> str:
    """Decode text bytes: UTF-16 when a UTF-16 byte-order mark says so, else UTF-8.

    A UTF-8 byte-order mark is dropped. Raises ValueError when the bytes are not
    valid in the encoding chosen.
    """
    if content.startswith(_UTF16_BOMS):
        # The "utf-16" codec reads the BOM to pick the byte order and strips it.
        return content.decode("utf-16")
    return content.decode("utf-8-sig")


def _lists_docx_main_part(content: bytes) -> bool:
    # Only the central directory is read; members are never decompressed here,
    # so a ZIP bomb costs nothing at this stage.
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            return _DOCX_MAIN_PART in archive.namelist()
    except _ZIP_ERRORS:
        return False


def _is_text(content: bytes) -> bool:
    if not content:
        return False
    # NUL never occurs in UTF-8 text but is every other byte of ASCII in UTF-16,
    # so NUL bytes only disqualify content that has no UTF-16 byte-order mark.
    if b"\x00" in content and not content.startswith(_UTF16_BOMS):
        return False
    try:
        text = decode_text(content)
    except ValueError:
        return False
    if "\x00" in text:
        # UTF-32 starts with the UTF-16 LE mark and decodes to NUL-laden text.
        return False
    controls = len(text) - len(_DISALLOWED_CONTROLS.sub("", text))
    return controls <= len(text) * _MAX_CONTROL_FRACTION


def _names_markdown(filename: str, declared_type: str | None) -> bool:
    if filename.lower().endswith(_MARKDOWN_SUFFIXES):
        return True
    if declared_type is None:
        return False
    # Browsers and clients append parameters such as "; charset=utf-8".
    essence = declared_type.split(";", 1)[0].strip().lower()
    return essence in _MARKDOWN_DECLARED

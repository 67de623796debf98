"""Unit tests for processors.parse on the shared real-world documents.

Every PDF and DOCX in the shared MANIFEST.tsv is parsed: page counts, page
numbers and first words against the manifest; the encrypted and the malformed
PDF; DOCX headers and footers, tables, document order and page splits. Damaged
bytes, text encodings, limits and unsupported types are checked with small
inputs built here, and a property checks that no input escapes as anything but
ParseError.
"""

from __future__ import annotations

import codecs
import io
import random
import zipfile

import docx
import pymupdf
import pytest
from docx.oxml import parse_xml
from docx.oxml.ns import nsdecls
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.media import DOCX, MARKDOWN, PDF, SUPPORTED_MEDIA_TYPES, TEXT
from processors.parse import (
    ParsedDocument,
    ParsedPage,
    ParseError,
    ParseLimits,
    parse_document,
)
from tests.shared_data import DOCUMENTS, manifest

MANIFEST = manifest()
PDFS_WITH_TEXT = [
    row for row in MANIFEST if row["kind"] == "pdf" and row["text_extraction"] == "yes"
]
DOCXS = [row for row in MANIFEST if row["kind"] == "docx"]

# Word's own count from docProps/app.xml, except where the file's explicit page
# break proves more pages than the (generated, never laid out) app.xml says.
DOCX_PAGE_COUNTS = {
    "word_sample.docx": 2,
    "word_tables.docx": 2,
    "docx_lists.docx": 3,
    "unit_test_headers_numbered.docx": 2,
    "blk-paras-and-tables.docx": 1,
    "docx_page_header_footer_first_page.docx": 2,  # app.xml says 1; a w:br page break says 2
}


def _read(filename: str) -> bytes:
    return (DOCUMENTS / filename).read_bytes()


def _parse_fixture(filename: str) -> ParsedDocument:
    media_type = PDF if filename.endswith(".pdf") else DOCX
    return parse_document(_read(filename), media_type)


def _full_text(document: ParsedDocument) -> str:
    return "\n".join(page.text for page in document.pages)


def _words(text: str) -> list[str]:
    # Table cell separators are layout, not words; the manifest and the parser
    # may place them differently around empty cells.
    return [word for word in text.split() if word != "|"]


def _contains_in_order(haystack: list[str], needle: list[str]) -> bool:
    return any(haystack[i : i + len(needle)] == needle for i in range(len(haystack)))


def _first_words(row: dict[str, str], count: int = 6) -> list[str]:
    # first80 is cut at 80 characters: its last word may be truncated.
    return _words(row["first80"])[:-1][:count]


def _assert_parse_error(content: bytes, media_type: str, code: str) -> ParseError:
    with pytest.raises(ParseError) as caught:
        parse_document(content, media_type)
    assert caught.value.code == code, caught.value.reason
    assert caught.value.reason
    assert str(caught.value) == caught.value.reason
    return caught.value


def test_every_manifest_fixture_is_covered() -> None:
    covered = {row["filename"] for row in PDFS_WITH_TEXT + DOCXS} | {
        "password-example.pdf",
        "malformed-from-issue-932.pdf",
    }
    assert covered == {row["filename"] for row in MANIFEST}
    assert set(DOCX_PAGE_COUNTS) == {row["filename"] for row in DOCXS}


# --- PDF fixtures ---------------------------------------------------------------


@pytest.mark.parametrize("row", PDFS_WITH_TEXT, ids=lambda row: row["filename"])
def test_pdf_with_text_keeps_every_page(row: dict[str, str]) -> None:
    document = _parse_fixture(row["filename"])

    assert document.page_count == int(row["pages"])
    assert [page.number for page in document.pages] == list(range(1, document.page_count + 1))
    assert document.char_count == sum(len(page.text) for page in document.pages)
    assert _full_text(document).strip()
    assert document.parser.startswith("pymupdf ")


@pytest.mark.parametrize("row", PDFS_WITH_TEXT, ids=lambda row: row["filename"])
def test_pdf_text_starts_with_the_manifest_words(row: dict[str, str]) -> None:
    document = _parse_fixture(row["filename"])
    assert _contains_in_order(_words(_full_text(document)), _first_words(row))


@pytest.mark.parametrize("row", PDFS_WITH_TEXT, ids=lambda row: row["filename"])
def test_pdf_text_has_no_ligatures_or_control_characters(row: dict[str, str]) -> None:
    text = _full_text(_parse_fixture(row["filename"]))
    assert not [c for c in text if "\ufb00" <= c <= "\ufb06"]
    assert not [c for c in text if (ord(c) < 32 and c not in "\t\n\f") or 0x7F <= ord(c) <= 0x9F]


def test_pdf_ligatures_are_expanded_into_letters() -> None:
    text = _full_text(_parse_fixture("issue-982-example.pdf"))
    assert "fi" in text


def test_text_only_pdfs_carry_no_warnings() -> None:
    for filename in ("2201.00069.pdf", "issue-982-example.pdf", "scotus-transcript-p1.pdf"):
        assert _parse_fixture(filename).warnings == ()


def test_ocr_layer_over_scanned_pages_is_not_flagged() -> None:
    document = _parse_fixture("Seige_of_Vicksburg_Sample_OCR.pdf")
    assert document.warnings == ()
    assert "VICKSBURG" in document.pages[0].text


def test_pages_that_are_pictures_of_text_are_flagged() -> None:
    # Pages 8 and 9 of the Federal Register issue print the AFM revisions as
    # images with no text layer; only the running head is text.
    warnings = _parse_fixture("federal-register-2020-17221.pdf").warnings
    assert [w.split(":", 1)[0] for w in warnings] == ["page 8", "page 9"]
    assert all("could not be extracted" in w for w in warnings)


def test_encrypted_pdf_needs_a_password() -> None:
    error = _assert_parse_error(_read("password-example.pdf"), PDF, "encrypted")
    assert "password" in error.reason


def test_malformed_scan_parses_with_a_truthful_warning() -> None:
    document = _parse_fixture("malformed-from-issue-932.pdf")

    assert document.page_count == 1
    assert len(document.pages) == 1
    assert document.pages[0].number == 1
    assert document.pages[0].text.split() == ["2021", "3", "31"]
    assert document.char_count < 50
    assert len(document.warnings) == 1
    assert document.warnings[0].startswith("page 1: only 7 non-space characters")
    assert "mostly image" in document.warnings[0]


def test_pdf_over_the_page_limit_is_refused() -> None:
    with pytest.raises(ParseError) as caught:
        parse_document(_read("federal-register-2020-17221.pdf"), PDF, ParseLimits(max_pages=5))
    assert caught.value.code == "too_many_pages"
    assert "15" in caught.value.reason
    assert "5" in caught.value.reason


def test_pdf_at_the_page_limit_is_accepted() -> None:
    limits = ParseLimits(max_pages=15)
    assert parse_document(_read("federal-register-2020-17221.pdf"), PDF, limits).page_count == 15


def _pdf_bytes(*, image_page: bool) -> bytes:
    with pymupdf.open() as pdf:
        page = pdf.new_page(width=200, height=200)
        if image_page:
            pixmap = pymupdf.Pixmap(pymupdf.csRGB, pymupdf.IRect(0, 0, 20, 20), False)
            pixmap.set_rect(pixmap.irect, (120, 120, 120))
            page.insert_image(page.rect, pixmap=pixmap)
        pdf.new_page(width=200, height=200)
        return bytes(pdf.tobytes())


def test_pdf_without_a_text_layer_has_no_text() -> None:
    error = _assert_parse_error(_pdf_bytes(image_page=True), PDF, "no_text")
    assert "2 page(s)" in error.reason
    assert "OCR is not supported" in error.reason


def test_blank_pdf_has_no_text() -> None:
    _assert_parse_error(_pdf_bytes(image_page=False), PDF, "no_text")


@pytest.mark.parametrize(
    "content",
    [
        _read("2201.00069.pdf")[: len(_read("2201.00069.pdf")) // 2],
        _read("scotus-transcript-p1.pdf")[:30_000],
        random.Random(932).randbytes(4096),
        b"%PDF-1.7\n" + random.Random(982).randbytes(4096),
        b"%PDF-1.7\n",
        b"",
    ],
    ids=["truncated-half", "truncated-scotus", "random", "header-then-random", "header", "empty"],
)
def test_unreadable_pdf_is_corrupt(content: bytes) -> None:
    error = _assert_parse_error(content, PDF, "corrupt")
    assert error.reason.startswith("The file is not a readable PDF: ")


def test_truncated_pdf_with_recoverable_text_parses_with_a_warning() -> None:
    content = _read("GeoBase_NHNC1_Data_Model_UML_EN.pdf")
    document = parse_document(content[: len(content) * 3 // 10], PDF)
    assert _full_text(document).strip()
    assert "damaged" in document.warnings[0]


# --- DOCX fixtures --------------------------------------------------------------


@pytest.mark.parametrize("row", DOCXS, ids=lambda row: row["filename"])
def test_docx_text_contains_the_manifest_words_in_order(row: dict[str, str]) -> None:
    document = _parse_fixture(row["filename"])

    assert _contains_in_order(_words(_full_text(document)), _first_words(row))
    assert document.parser.startswith("python-docx ")
    assert document.char_count == sum(len(page.text) for page in document.pages)


@pytest.mark.parametrize("row", DOCXS, ids=lambda row: row["filename"])
def test_docx_page_count(row: dict[str, str]) -> None:
    document = _parse_fixture(row["filename"])

    assert document.page_count == DOCX_PAGE_COUNTS[row["filename"]]
    assert [page.number for page in document.pages] == list(range(1, len(document.pages) + 1))
    assert len(document.pages) <= document.page_count


def test_docx_page_numbers_without_recorded_breaks_are_flagged_approximate() -> None:
    document = _parse_fixture("word_tables.docx")

    assert (document.page_count, len(document.pages)) == (2, 1)
    assert document.warnings == (
        "the document has 2 pages but records where only 1 of them begin; "
        "page numbers given for its text are approximate",
    )


@pytest.mark.parametrize(
    "filename", ["docx_lists.docx", "word_sample.docx", "docx_page_header_footer_first_page.docx"]
)
def test_docx_with_every_page_break_recorded_has_no_warnings(filename: str) -> None:
    assert _parse_fixture(filename).warnings == ()


def test_docx_pages_split_at_rendered_and_explicit_breaks() -> None:
    # docx_lists: a rendered break before "Test 6", then an explicit break that
    # Word follows with a rendered break before "Test 9": three pages, not four.
    pages = _parse_fixture("docx_lists.docx").pages
    assert len(pages) == 3
    assert pages[0].text.startswith("Test Document")
    assert pages[1].text.startswith("Test 6:")
    assert pages[2].text.startswith("Test 9: List continuity")


def test_docx_rendered_break_inside_the_document() -> None:
    pages = _parse_fixture("word_sample.docx").pages
    assert [page.text.splitlines()[0] for page in pages] == ["Summer activities", "Let\u2019s eat"]


def test_docx_headings_and_list_items_are_lines() -> None:
    lines = _parse_fixture("word_sample.docx").pages[0].text.splitlines()
    assert lines[:3] == ["Summer activities", "", "Swimming in the lake"]
    assert "Paddle about" in lines
    assert lines[lines.index("Let\u2019s swim!") - 1] == ""


def test_docx_headers_come_first_and_footers_last() -> None:
    document = _parse_fixture("docx_page_header_footer_first_page.docx")
    first, last = document.pages[0].text.splitlines(), document.pages[-1].text.splitlines()

    assert first[:3] == [
        "FIRST PAGE HEADER (page 1 only)",
        "REGULAR HEADER (page 2 onward)",
        "Page header/footer regression fixture",
    ]
    assert last[-3:] == [
        "This is body text on page 2.",
        "FIRST PAGE FOOTER (page 1 only)",
        "REGULAR FOOTER (page 2 onward)",
    ]
    assert _full_text(document).count("REGULAR HEADER") == 1


def test_docx_table_rows_join_cells_and_show_merged_cells_once() -> None:
    lines = _full_text(_parse_fixture("word_tables.docx")).splitlines()

    assert "Header 0.0 | Header 0.1 | Header 0.2" in lines
    assert "Cell 1.0 | Cell 1.1 | Cell 1.2" in lines
    # Horizontal span: one w:tc with a gridSpan.
    assert "Cell 1.0 | Merged Cell 1.1 1.2" in lines
    assert "Cell 1.0 | Merged Cell 1.1 1.2 | Cell 1.3" in lines
    # Vertical span: the continuation cell is empty, as Word shows it.
    assert "Cell 1.0 | Merged Cell 1.1 2.1 | Cell 1.2" in lines
    assert "Cell 2.0 |  | Cell 2.2" in lines


def test_docx_paragraphs_and_tables_in_document_order() -> None:
    lines = _parse_fixture("blk-paras-and-tables.docx").pages[0].text.splitlines()
    assert lines == [
        "Left-side | Right-side",  # the header is a table
        "Lorem ipsum dolor sit amet, consectetur adipiscing elit.",
        "Text before Table Between Text after",  # a table nested in a cell
        "Donec semper facilisis metus finibus malesuada.",
        "Copyright | Page-number",  # the footer is a table
    ]


def test_docx_page_number_fields_are_left_out() -> None:
    # word_sample's footer holds only a PAGE field, cached as "2".
    last_page = _parse_fixture("word_sample.docx").pages[-1].text
    assert last_page.splitlines()[-1] == "Grain"


def test_docx_over_the_page_limit_is_refused() -> None:
    with pytest.raises(ParseError) as caught:
        parse_document(_read("docx_lists.docx"), DOCX, ParseLimits(max_pages=2))
    assert caught.value.code == "too_many_pages"
    assert "3" in caught.value.reason


def _docx_with_body(xml: str) -> bytes:
    document = docx.Document()
    body = document.element.body
    for element in parse_xml(f"<w:body {nsdecls('w')}>{xml}</w:body>"):
        body.insert(len(body) - 1, element)  # before the final w:sectPr
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def test_docx_reads_what_word_shows_and_nothing_else() -> None:
    content = _docx_with_body(
        "<w:p>"
        '<w:ins w:id="1" w:author="a" w:date="2024-01-01T00:00:00Z">'
        "<w:r><w:t>kept</w:t></w:r></w:ins>"
        '<w:del w:id="2" w:author="a" w:date="2024-01-01T00:00:00Z">'
        "<w:r><w:delText>deleted</w:delText></w:r></w:del>"
        '<w:r><w:t xml:space="preserve"> and </w:t></w:r>'
        "<w:sdt><w:sdtContent><w:r><w:t>inline control</w:t></w:r></w:sdtContent></w:sdt>"
        "</w:p>"
        "<w:sdt><w:sdtContent><w:p><w:r><w:t>block control</w:t></w:r></w:p></w:sdtContent></w:sdt>"
        '<w:p><w:r><w:t>before</w:t><w:br w:type="page"/><w:t>after</w:t></w:r></w:p>'
        "<w:p><w:pPr><w:pageBreakBefore/></w:pPr><w:r><w:t>third page</w:t></w:r></w:p>"
    )
    pages = parse_document(content, DOCX).pages

    assert [page.text for page in pages] == [
        "kept and inline control\nblock control\nbefore",
        "after",
        "third page",
    ]


def test_docx_without_text_has_no_text() -> None:
    _assert_parse_error(
        _docx_with_body("<w:p/><w:p><w:r><w:t>  </w:t></w:r></w:p>"), DOCX, "no_text"
    )


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _with_broken_document_xml() -> bytes:
    source = zipfile.ZipFile(io.BytesIO(_read("word_sample.docx")))
    buffer = io.BytesIO()
    with source, zipfile.ZipFile(buffer, "w") as archive:
        for info in source.infolist():
            data = source.read(info)
            archive.writestr(
                info, b"<w:document garbage" if info.filename == "word/document.xml" else data
            )
    return buffer.getvalue()


@pytest.mark.parametrize(
    "content",
    [
        _zip({"a.txt": b"hello"}),
        _zip({"[Content_Types].xml": b"<Types/>", "xl/workbook.xml": b"<workbook/>"}),
        _read("word_tables.docx")[:5000],
        random.Random(1).randbytes(4096),
        _with_broken_document_xml(),
        b"",
    ],
    ids=["zip-without-document-xml", "xlsx-like", "truncated", "random", "broken-xml", "empty"],
)
def test_unreadable_docx_is_corrupt(content: bytes) -> None:
    error = _assert_parse_error(content, DOCX, "corrupt")
    assert error.reason.startswith("The file is not a readable Word document: ")


# --- text and Markdown ----------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        "caf\u00e9\n\u4e2d\u6587\n".encode(),
        codecs.BOM_UTF8 + "caf\u00e9\n\u4e2d\u6587\n".encode(),
        codecs.BOM_UTF16_LE + "caf\u00e9\r\n\u4e2d\u6587\r\n".encode("utf-16-le"),
        codecs.BOM_UTF16_BE + "caf\u00e9\r\n\u4e2d\u6587\r\n".encode("utf-16-be"),
        "caf\u00e9\r\n\u4e2d\u6587\r\n".encode(),
        "caf\u00e9\r\u4e2d\u6587\r".encode(),
    ],
    ids=["utf8", "utf8-bom", "utf16-le-crlf", "utf16-be-crlf", "crlf", "cr"],
)
@pytest.mark.parametrize("media_type", [TEXT, MARKDOWN])
def test_text_is_one_page_without_number(content: bytes, media_type: str) -> None:
    document = parse_document(content, media_type)

    assert document.pages == (ParsedPage(number=None, text="caf\u00e9\n\u4e2d\u6587\n"),)
    assert document.page_count is None
    assert document.char_count == len("caf\u00e9\n\u4e2d\u6587\n")
    assert document.warnings == ()
    assert document.parser == "text"


def test_text_keeps_markdown_as_written() -> None:
    content = b"# Title\n\n* item\n\n```py\nx = 1\n```\n"
    assert parse_document(content, MARKDOWN).pages[0].text == content.decode()


@pytest.mark.parametrize("content", [b"", b"   \n\t\r\n", codecs.BOM_UTF8, codecs.BOM_UTF16_LE])
def test_whitespace_only_text_has_no_text(content: bytes) -> None:
    error = _assert_parse_error(content, TEXT, "no_text")
    assert error.reason == "The file contains no text."


def test_undecodable_text_is_corrupt() -> None:
    _assert_parse_error("caf\u00e9".encode("latin-1"), TEXT, "corrupt")


@pytest.mark.parametrize("media_type", ["image/png", "application/zip", "text/html", ""])
def test_other_media_types_are_unsupported(media_type: str) -> None:
    _assert_parse_error(b"whatever", media_type, "unsupported_type")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prefix=st.sampled_from([b"", b"%PDF-1.4\n", b"PK\x03\x04", codecs.BOM_UTF16_LE]),
    content=st.binary(max_size=2048),
    media_type=st.sampled_from(SUPPORTED_MEDIA_TYPES),
)
def test_any_bytes_parse_or_raise_parse_error(
    prefix: bytes, content: bytes, media_type: str
) -> None:
    try:
        document = parse_document(prefix + content, media_type)
    except ParseError as error:
        assert error.code in {"corrupt", "no_text", "encrypted", "too_many_pages"}
    else:
        assert document.char_count == sum(len(page.text) for page in document.pages)

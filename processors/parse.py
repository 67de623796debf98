"""Parsing stage: the bytes of a supported document become pages of plain text.

This module owns the conversion of PDF (PyMuPDF), DOCX (python-docx) and plain
text or Markdown into ``ParsedDocument`` values, the warnings that say how much
of a document could not be read, and ``ParseError``, the refusal with a reason a
person can act on. It never decides the media type (``domain.media`` does) and
never chunks, embeds or stores anything.
"""

from __future__ import annotations

import io
import itertools
import re
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

import docx
import pymupdf
from docx.document import Document as DocxDocument
from docx.exceptions import PythonDocxError
from docx.opc.exceptions import OpcError
from docx.oxml.ns import qn

from domain.media import DOCX, MARKDOWN, PDF, TEXT, decode_text


@dataclass(frozen=True)
class ParsedPage:
    number: int | None  # 1-based page number; None where the format has no pages (txt/md)
    text: str


@dataclass(frozen=True)
class ParsedDocument:
    pages: tuple[ParsedPage, ...]
    page_count: int | None  # PDF: real page count; DOCX: rendered estimate; text: None
    char_count: int  # sum of len(page.text), whitespace included
    warnings: tuple[str, ...]  # human-readable notes on content that could not be read
    parser: str  # library and version that produced the text, e.g. "pymupdf 2.0"


class ParseError(Exception):
    """A document that cannot be parsed, with a reason a person understands."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason

    def __reduce__(self) -> tuple[type[ParseError], tuple[str, str]]:
        # Crosses the pipe from the parsing sandbox (processors/sandbox.py).
        return (ParseError, (self.code, self.reason))


@dataclass(frozen=True)
class ParseLimits:
    max_pages: int = 2000
    # A DOCX is a zip: what it would expand to is checked before anything is
    # decompressed, so a decompression bomb is refused unopened.
    max_docx_expanded_bytes: int = 256 * 1024 * 1024
    max_docx_ratio: int = 200  # per member, for members over 1 MB expanded
    max_docx_members: int = 10_000
    max_chars: int = 20_000_000  # extracted text, all pages


DEFAULT_LIMITS = ParseLimits()


def parse_document(
    content: bytes, media_type: str, limits: ParseLimits = DEFAULT_LIMITS
) -> ParsedDocument:
    """Extract the text of ``content``, page by page where the format has pages.

    ``media_type`` must be what ``domain.media.sniff_media_type`` returned for
    the bytes. Raises ParseError when the document cannot be read.
    """
    if media_type == PDF:
        parsed = _parse_pdf(content, limits)
    elif media_type == DOCX:
        parsed = _parse_docx(content, limits)
    elif media_type in (TEXT, MARKDOWN):
        parsed = _parse_text(content)
    else:
        raise ParseError(
            "unsupported_type",
            f"Files of type {media_type!r} are not supported; "
            "upload a PDF, a Word (.docx) document, a plain text or a Markdown file.",
        )
    if parsed.char_count > limits.max_chars:
        raise ParseError(
            "too_large",
            f"The document holds {parsed.char_count} characters of text; at most "
            f"{limits.max_chars} are accepted.",
        )
    return parsed


# --- shared -------------------------------------------------------------------

# C0 and C1 control characters other than tab, line feed and form feed. PDFs
# yield them as raw glyph codes of symbol fonts (bullets come out as \x01, \x02),
# and PostgreSQL refuses NUL in text, so none of them is worth keeping. Carriage
# returns go too: every parser ends lines with \n alone.
_CONTROL_CHARACTERS = re.compile("[\x00-\x08\x0b\x0d-\x1f\x7f-\x9f]")


def _clean(text: str) -> str:
    return _CONTROL_CHARACTERS.sub("", text)


def _non_space_length(text: str) -> int:
    return sum(1 for char in text if not char.isspace())


def _document(
    pages: Iterable[ParsedPage], page_count: int | None, warnings: Iterable[str], parser: str
) -> ParsedDocument:
    page_tuple = tuple(pages)
    return ParsedDocument(
        pages=page_tuple,
        page_count=page_count,
        char_count=sum(len(page.text) for page in page_tuple),
        warnings=tuple(warnings),
        parser=parser,
    )


def _too_many_pages(page_count: int, limits: ParseLimits) -> ParseError:
    return ParseError(
        "too_many_pages",
        f"The document has {page_count} pages; at most {limits.max_pages} are accepted.",
    )


# --- text and Markdown ----------------------------------------------------------


def _parse_text(content: bytes) -> ParsedDocument:
    try:
        text = decode_text(content)
    except ValueError as error:
        raise ParseError(
            "corrupt", f"The file is not valid UTF-8 or UTF-16 text: {error}"
        ) from error
    # Lone CRs are old Mac line ends; after CRLF they are the only CRs left.
    text = _clean(text.replace("\r\n", "\n").replace("\r", "\n"))
    if not text.strip():
        raise ParseError("no_text", "The file contains no text.")
    return _document([ParsedPage(number=None, text=text)], None, (), "text")


# --- PDF ----------------------------------------------------------------------

# Reading order: page.get_text() without sort. On the multi-column fixtures,
# sort=True reorders text by position across columns and multiplies the jumps
# back to an earlier column (federal register 49 -> 115 over 1,702 lines,
# arXiv paper 12 -> 51 over 667); the content-stream order of typeset PDFs
# already follows the columns.
# Ligatures (U+FB01 "fi" and friends) are expanded so that words match what
# people type; MuPDF keeps them by default.
_PDF_TEXT_FLAGS = pymupdf.TEXTFLAGS_TEXT & ~pymupdf.TEXT_PRESERVE_LIGATURES

# Below this many non-space characters a page holds less than a sentence or two.
_SPARSE_PAGE_CHARACTERS = 50
# "Mostly image": images cover at least half of the page.
_IMAGE_PAGE_COVERAGE = 0.5
# Only the largest images matter for coverage; the cap bounds the cost of
# pages made of thousands of tiny image tiles.
_MAX_IMAGES_MEASURED = 32
# A 2,000-page scan would otherwise produce 2,000 identical warnings.
_MAX_PAGE_WARNINGS = 20

# MuPDF reports bad data as FileDataError (a RuntimeError), other RuntimeErrors
# and ValueErrors from the bindings, and FzErrorBase from the C layer.
_PDF_ERRORS = (RuntimeError, ValueError, pymupdf.mupdf.FzErrorBase)


def _parse_pdf(content: bytes, limits: ParseLimits) -> ParsedDocument:
    _quiet_mupdf()
    try:
        try:
            pdf = pymupdf.open(stream=content, filetype="pdf")  # type: ignore[no-untyped-call]
        except _PDF_ERRORS as error:
            raise _corrupt_pdf(_error_detail(error)) from error
        with pdf:
            try:
                return _read_pdf(pdf, limits)
            except _PDF_ERRORS as error:
                raise _corrupt_pdf(_error_detail(error)) from error
    finally:
        pymupdf.TOOLS.reset_mupdf_warnings()  # type: ignore[no-untyped-call]


def _read_pdf(pdf: pymupdf.Document, limits: ParseLimits) -> ParsedDocument:
    if pdf.needs_pass:
        raise ParseError(
            "encrypted",
            "The PDF is encrypted and needs a password; upload a copy without a password.",
        )
    page_count = int(pdf.page_count)
    if page_count == 0:
        raise _corrupt_pdf(
            "it is damaged (truncated?) and no page could be recovered"
            if pdf.is_repaired
            else "it has no pages"
        )
    if page_count > limits.max_pages:
        raise _too_many_pages(page_count, limits)

    pages: list[ParsedPage] = []
    page_warnings: list[str] = []
    for index in range(page_count):
        page = pdf[index]
        text = _clean(_page_text(page))
        # Empty pages stay in the list so that page numbers remain true.
        pages.append(ParsedPage(number=index + 1, text=text))
        warning = _pdf_page_warning(page, index + 1, text)
        if warning is not None:
            page_warnings.append(warning)

    if not any(page.text.strip() for page in pages):
        if pdf.is_repaired:
            # A truncated file opens "repaired" with pages whose content is gone.
            raise _corrupt_pdf("it is damaged (truncated?) and no text could be recovered")
        raise ParseError(
            "no_text",
            f"No extractable text: the PDF has {page_count} page(s) but no text layer "
            "(scanned images?); OCR is not supported.",
        )

    warnings: list[str] = []
    if pdf.is_repaired:
        warnings.append(
            "the PDF is damaged and had to be repaired to be opened; "
            "some of its text may be missing"
        )
    warnings.extend(page_warnings[:_MAX_PAGE_WARNINGS])
    if len(page_warnings) > _MAX_PAGE_WARNINGS:
        warnings.append(
            f"... and {len(page_warnings) - _MAX_PAGE_WARNINGS} more page(s) "
            "whose content could not be fully extracted"
        )
    return _document(pages, page_count, warnings, f"pymupdf {pymupdf.__version__}")


def _pdf_page_warning(page: pymupdf.Page, number: int, text: str) -> str | None:
    """Say what the text layer of the page misses, or None if nothing is known."""
    characters = _non_space_length(text)
    page_box = _box(page.rect)
    images = _image_boxes(page, page_box)
    coverage = _coverage(images, page_box)
    if coverage >= _IMAGE_PAGE_COVERAGE:
        if characters == 0:
            return (
                f"page {number}: no text; the page is an image (scanned?), "
                "so its content could not be extracted"
            )
        if characters < _SPARSE_PAGE_CHARACTERS:
            return (
                f"page {number}: only {characters} non-space characters of text; the page is "
                "mostly image (scanned?), so most of its content could not be extracted"
            )
        # An OCR layer lies over its scan; text only in the margins around a
        # large image means the image itself (a scan, a picture of a table or
        # of a form) has no text layer.
        if _characters_over(page, images) < _SPARSE_PAGE_CHARACTERS:
            return (
                f"page {number}: images cover {coverage:.0%} of the page and have no text "
                "layer; any text shown in them could not be extracted"
            )
        return None
    if characters == 0 and (images or _has_drawings(page)):
        return (
            f"page {number}: no extractable text; the page holds only images or vector "
            "graphics (a drawing, or text converted to outlines?)"
        )
    return None


# Geometry on plain (x0, y0, x1, y1) tuples: pymupdf's Rect and Point are untyped.
_Box = tuple[float, float, float, float]


def _box(rect: Any) -> _Box:
    x0, y0, x1, y1 = (float(edge) for edge in rect)
    return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def _area(box: _Box) -> float:
    return max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)


def _image_boxes(page: pymupdf.Page, page_box: _Box) -> list[_Box]:
    boxes = []
    for info in page.get_image_info():
        x0, y0, x1, y1 = _box(info["bbox"])
        # Clipped to the page: images often bleed past its edges.
        clipped = (
            max(x0, page_box[0]),
            max(y0, page_box[1]),
            min(x1, page_box[2]),
            min(y1, page_box[3]),
        )
        if _area(clipped) > 0:
            boxes.append(clipped)
    boxes.sort(key=_area, reverse=True)
    return boxes[:_MAX_IMAGES_MEASURED]


def _coverage(boxes: list[_Box], page_box: _Box) -> float:
    """Fraction of the page covered by the union of ``boxes``.

    Images overlap (a scan and its mask, tiles), so their areas cannot simply
    be added; the union is measured on the grid their edges define.
    """
    page_area = _area(page_box)
    if not boxes or page_area <= 0:
        return 0.0
    xs = sorted({edge for box in boxes for edge in (box[0], box[2])})
    ys = sorted({edge for box in boxes for edge in (box[1], box[3])})
    covered = 0.0
    for left, right in itertools.pairwise(xs):
        for top, bottom in itertools.pairwise(ys):
            if any(
                box[0] <= left and right <= box[2] and box[1] <= top and bottom <= box[3]
                for box in boxes
            ):
                covered += (right - left) * (bottom - top)
    return min(covered / page_area, 1.0)


def _characters_over(page: pymupdf.Page, boxes: list[_Box]) -> int:
    """Non-space characters of the words whose centre lies on one of ``boxes``."""
    count = 0
    for x0, y0, x1, y1, word, *_ in _page_words(page):
        x, y = (x0 + x1) / 2, (y0 + y1) / 2
        if any(box[0] <= x <= box[2] and box[1] <= y <= box[3] for box in boxes):
            count += _non_space_length(word)
    return count


def _error_detail(error: Exception) -> str:
    detail = str(error).strip() or type(error).__name__
    # MuPDF's own diagnosis ("cannot find startxref") says more than the
    # binding's "Failed to open stream".
    first_warning = _mupdf_warnings().strip().split("\n", 1)[0]
    return f"{detail} ({first_warning})" if first_warning else detail


def _corrupt_pdf(detail: str) -> ParseError:
    return ParseError("corrupt", f"The file is not a readable PDF: {detail}.")


# pymupdf ships py.typed but leaves these functions unannotated; each call is
# confined here with the type it is documented to return.


def _quiet_mupdf() -> None:
    # MuPDF prints warnings and errors to stderr by default: noise in service
    # logs. Its message store grows until reset, and is process-wide, so under
    # concurrent parses an error's detail may name another document's problem;
    # it only ever enriches an error message.
    pymupdf.TOOLS.mupdf_display_errors(False)  # type: ignore[no-untyped-call]
    pymupdf.TOOLS.mupdf_display_warnings(False)  # type: ignore[no-untyped-call]
    pymupdf.TOOLS.reset_mupdf_warnings()  # type: ignore[no-untyped-call]


def _mupdf_warnings() -> str:
    return str(pymupdf.TOOLS.mupdf_warnings())  # type: ignore[no-untyped-call]


def _page_text(page: pymupdf.Page) -> str:
    return str(page.get_text(flags=_PDF_TEXT_FLAGS))  # type: ignore[no-untyped-call]


def _page_words(page: pymupdf.Page) -> list[tuple[float, float, float, float, str]]:
    words = page.get_text("words", flags=_PDF_TEXT_FLAGS)  # type: ignore[no-untyped-call]
    return [(float(w[0]), float(w[1]), float(w[2]), float(w[3]), str(w[4])) for w in words]


def _has_drawings(page: pymupdf.Page) -> bool:
    return bool(page.get_cdrawings())  # type: ignore[no-untyped-call]


# --- DOCX ---------------------------------------------------------------------

# Once a package is open, a damaged one still fails later through the zip
# module, zlib, lxml (XMLSyntaxError is a SyntaxError), KeyError for missing
# parts or relationships, ValueError for wrong content types, and its own errors.
_DOCX_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    KeyError,
    ValueError,
    SyntaxError,
    OSError,
    EOFError,
    NotImplementedError,
    RuntimeError,
    OpcError,
    PythonDocxError,
)

_W_P = qn("w:p")
_W_TBL = qn("w:tbl")
_W_TR = qn("w:tr")
_W_TC = qn("w:tc")
_W_R = qn("w:r")
_W_T = qn("w:t")
_W_TAB = qn("w:tab")
_W_PTAB = qn("w:ptab")
_W_BR = qn("w:br")
_W_CR = qn("w:cr")
_W_NO_BREAK_HYPHEN = qn("w:noBreakHyphen")
_W_LAST_RENDERED_PAGE_BREAK = qn("w:lastRenderedPageBreak")
_W_FLD_SIMPLE = qn("w:fldSimple")
_W_FLD_CHAR = qn("w:fldChar")
_W_FLD_CHAR_TYPE = qn("w:fldCharType")
_W_INSTR = qn("w:instr")
_W_INSTR_TEXT = qn("w:instrText")
_W_SDT = qn("w:sdt")
_W_SDT_CONTENT = qn("w:sdtContent")
_W_TYPE = qn("w:type")
_W_VAL = qn("w:val")

# Containers whose content is shown as if they were not there: content controls,
# custom XML, tracked insertions and moves, hyperlinks, smart tags, bidi runs.
# Deletions (w:del, w:moveFrom) are deliberately absent: Word does not show them.
_TRANSPARENT = frozenset(
    qn(tag)
    for tag in (
        "w:customXml",
        "w:ins",
        "w:moveTo",
        "w:hyperlink",
        "w:smartTag",
        "w:dir",
        "w:bdo",
    )
)
# Fields whose shown value is the page number or count: the file holds the value
# from one page of Word's last layout, which is wrong on every other page.
_PAGE_NUMBER_FIELDS = frozenset({"PAGE", "NUMPAGES", "SECTIONPAGES"})
_PAGE_SECTION_TYPES = frozenset({"nextPage", "oddPage", "evenPage"})
_OFF_VALUES = frozenset({"0", "false", "off"})
_HEADING_STYLE_PREFIXES = ("Heading", "Title")
_APP_PROPERTIES = "docProps/app.xml"
# docProps/app.xml is a few hundred bytes; the cap keeps a hostile one cheap.
_MAX_APP_PROPERTIES_BYTES = 1 << 20
_APP_PAGES = re.compile(rb"<(?:\w+:)?Pages>\s*(\d+)\s*</")


class _Break(Enum):
    # Typed by the author: w:br type="page", a page-break-before paragraph, or
    # a section that starts on a new page.
    EXPLICIT = "explicit"
    # Recorded by Word where its last layout started a new page.
    RENDERED = "rendered"


class _PageWriter:
    """Lines of text grouped into pages as page breaks arrive."""

    def __init__(self) -> None:
        self.pages: list[list[str]] = [[]]
        self._line: list[str] = []
        # Word records a rendered break at the top of each page it laid out,
        # also on the page an explicit break opened; that second break must not
        # open another page. The document's start counts as such a break.
        self._after_explicit_break = True

    def write(self, text: str) -> None:
        self._line.append(text)

    def end_line(self) -> None:
        line = "".join(self._line).strip()
        self._line = []
        if line:
            self.pages[-1].append(line)

    def blank_line(self) -> None:
        self.end_line()
        if self.pages[-1] and self.pages[-1][-1]:
            self.pages[-1].append("")

    def page_break(self, kind: _Break) -> None:
        if kind is _Break.RENDERED and self._after_explicit_break and not self._has_text():
            self._after_explicit_break = False
            return
        self.end_line()
        self.pages.append([])
        self._after_explicit_break = kind is _Break.EXPLICIT

    def page_texts(self) -> list[str]:
        self.end_line()
        return ["\n".join(lines).strip("\n") for lines in self.pages]

    def _has_text(self) -> bool:
        return bool(self.pages[-1]) or bool("".join(self._line).strip())


def _check_docx_package(content: bytes, limits: ParseLimits) -> None:
    """Refuse a package that would expand beyond the limits, before expanding it."""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as package:
            members = package.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise _corrupt_docx(error) from error
    if len(members) > limits.max_docx_members:
        raise ParseError(
            "too_large",
            f"The DOCX package holds {len(members)} parts; at most "
            f"{limits.max_docx_members} are accepted.",
        )
    expanded = sum(member.file_size for member in members)
    if expanded > limits.max_docx_expanded_bytes:
        raise ParseError(
            "too_large",
            f"The DOCX would expand to {expanded // (1024 * 1024)} MB; at most "
            f"{limits.max_docx_expanded_bytes // (1024 * 1024)} MB are accepted "
            "(a compression bomb, or a document far larger than its file).",
        )
    for member in members:
        if member.file_size > 1024 * 1024 and member.file_size > limits.max_docx_ratio * max(
            member.compress_size, 1
        ):
            raise ParseError(
                "too_large",
                f"The DOCX part {member.filename!r} is compressed more than "
                f"{limits.max_docx_ratio}:1; such files are refused as compression bombs.",
            )


def _parse_docx(content: bytes, limits: ParseLimits) -> ParsedDocument:
    _check_docx_package(content, limits)
    try:
        document = docx.Document(io.BytesIO(content))
    # python-docx trusts the package's shape while loading it: a content-types
    # part in the wrong namespace, for one, fails with AttributeError. Whatever
    # it raises while opening, the bytes are not a Word document it can read.
    except Exception as error:
        raise _corrupt_docx(error) from error
    try:
        headings = _heading_style_ids(document)
        body = _PageWriter()
        _write_blocks(document.element.body, body, headings)
        page_texts = body.page_texts()
        headers, footers = _headers_and_footers(document, headings)
    except _DOCX_ERRORS as error:
        raise _corrupt_docx(error) from error

    if headers:
        page_texts[0] = "\n".join([*headers, page_texts[0]]).strip("\n")
    if footers:
        page_texts[-1] = "\n".join([page_texts[-1], *footers]).strip("\n")
    page_texts = [_clean(text) for text in page_texts]
    if not any(text.strip() for text in page_texts):
        raise ParseError("no_text", "The document contains no text.")

    # Breaks only mark pages Word had laid out when it last saved the file, or
    # that the author forced; app.xml carries Word's own count when present.
    page_count = max(len(page_texts), _declared_page_count(content) or 0)
    if page_count > limits.max_pages:
        raise _too_many_pages(page_count, limits)
    warnings = []
    if page_count > len(page_texts):
        warnings.append(
            f"the document has {page_count} pages but records where only {len(page_texts)} "
            "of them begin; page numbers given for its text are approximate"
        )
    pages = [ParsedPage(number, text) for number, text in enumerate(page_texts, start=1)]
    return _document(pages, page_count, warnings, f"python-docx {docx.__version__}")


def _corrupt_docx(error: Exception) -> ParseError:
    detail = str(error).strip() or type(error).__name__
    return ParseError("corrupt", f"The file is not a readable Word document: {detail}")


def _heading_style_ids(document: DocxDocument) -> frozenset[str]:
    """Style ids (as written in w:pStyle) of the heading and title styles."""
    return frozenset(
        style.style_id
        for style in document.styles
        if style.name is not None and style.name.startswith(_HEADING_STYLE_PREFIXES)
    )


def _headers_and_footers(
    document: DocxDocument, headings: frozenset[str]
) -> tuple[list[str], list[str]]:
    """Distinct texts of the headers and footers Word shows, in section order."""
    even_pages_differ = document.settings.odd_and_even_pages_header_footer
    headers: list[str] = []
    footers: list[str] = []
    for section in document.sections:
        first_page_differs = section.different_first_page_header_footer
        for shown, header, footer in (
            (first_page_differs, section.first_page_header, section.first_page_footer),
            (True, section.header, section.footer),
            (even_pages_differ, section.even_page_header, section.even_page_footer),
        ):
            if not shown:
                continue
            for part_owner, texts in ((header, headers), (footer, footers)):
                # A linked header has no definition of its own: it repeats the
                # previous section's, already collected.
                if part_owner.is_linked_to_previous:
                    continue
                writer = _PageWriter()
                _write_blocks(part_owner.part.element, writer, headings)
                text = "\n".join(writer.page_texts()).strip()
                if text and text not in texts:
                    texts.append(text)
    return headers, footers


def _declared_page_count(content: bytes) -> int | None:
    """The page count Word stored in docProps/app.xml, if any."""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            info = archive.getinfo(_APP_PROPERTIES)
            if info.file_size > _MAX_APP_PROPERTIES_BYTES:
                return None
            app_properties = archive.read(info)
    except _DOCX_ERRORS:
        return None
    match = _APP_PAGES.search(app_properties)
    return int(match.group(1)) if match else None


def _children(element: Any) -> Iterator[Any]:
    """Child elements, looking through containers that do not change the text."""
    for child in element:
        if child.tag == _W_SDT:
            for content in child.iterchildren(_W_SDT_CONTENT):
                yield from _children(content)
        elif child.tag in _TRANSPARENT:
            yield from _children(child)
        else:
            yield child


def _write_blocks(container: Any, writer: _PageWriter, headings: frozenset[str]) -> None:
    for block in _children(container):
        if block.tag == _W_P:
            _write_paragraph(block, writer, headings)
        elif block.tag == _W_TBL:
            _write_table(block, writer)


def _write_paragraph(paragraph: Any, writer: _PageWriter, headings: frozenset[str]) -> None:
    properties = paragraph.find(qn("w:pPr"))
    if properties is not None and _is_on(properties.find(qn("w:pageBreakBefore"))):
        writer.page_break(_Break.EXPLICIT)
    if properties is not None and _style_id(properties) in headings:
        # A blank line before a heading keeps the section boundary visible.
        writer.blank_line()
    for item in _paragraph_items(paragraph):
        if isinstance(item, _Break):
            writer.page_break(item)
        else:
            writer.write(item)
    writer.end_line()
    if properties is not None and _starts_new_page(properties.find(qn("w:sectPr"))):
        writer.page_break(_Break.EXPLICIT)


def _write_table(table: Any, writer: _PageWriter) -> None:
    """One line per row, the cells' texts joined by " | ".

    Each w:tc is read once: a horizontally merged cell is one w:tc with a
    gridSpan, and the continuation of a vertical merge is an empty w:tc, so
    merged text appears once, where Word shows it.
    """
    for row in _children(table):
        if row.tag != _W_TR:
            continue
        cells: list[str] = []
        breaks: set[_Break] = set()
        for cell in _children(row):
            if cell.tag != _W_TC:
                continue
            parts: list[str] = []
            for item in _flat_items(cell):
                if isinstance(item, _Break):
                    breaks.add(item)
                else:
                    parts.append(item)
            cells.append(" ".join("".join(parts).split()))
        # A break inside a row moves the whole row: a row is one line.
        for kind in (_Break.EXPLICIT, _Break.RENDERED):
            if kind in breaks:
                writer.page_break(kind)
        if any(cells):
            writer.write(" | ".join(cells))
            writer.end_line()


def _flat_items(container: Any) -> Iterator[str | _Break]:
    """Text and breaks of a cell, nested tables included, paragraphs space-separated."""
    for block in _children(container):
        if block.tag == _W_P:
            yield from _paragraph_items(block)
            yield " "
        elif block.tag == _W_TBL:
            for row in _children(block):
                for cell in _children(row):
                    if cell.tag == _W_TC:
                        yield from _flat_items(cell)


def _paragraph_items(paragraph: Any) -> Iterator[str | _Break]:
    # Instructions of the complex fields (w:fldChar begin ... end) open at this
    # point; they nest, and never span paragraphs in the fields that matter here.
    open_fields: list[str] = []
    yield from _inline_items(paragraph, open_fields)


def _inline_items(container: Any, open_fields: list[str]) -> Iterator[str | _Break]:
    for child in _children(container):
        if child.tag == _W_R:
            yield from _run_items(child, open_fields)
        elif child.tag == _W_FLD_SIMPLE and not _is_page_number_field(child.get(_W_INSTR)):
            yield from _inline_items(child, open_fields)


def _run_items(run: Any, open_fields: list[str]) -> Iterator[str | _Break]:
    for child in run:
        tag = child.tag
        if tag == _W_FLD_CHAR:
            _track_field(child.get(_W_FLD_CHAR_TYPE), open_fields)
        elif tag == _W_INSTR_TEXT and open_fields:
            open_fields[-1] += child.text or ""
        elif tag == _W_LAST_RENDERED_PAGE_BREAK:
            yield _Break.RENDERED
        elif tag == _W_BR and child.get(_W_TYPE) == "page":
            yield _Break.EXPLICIT
        elif not any(_is_page_number_field(field) for field in open_fields):
            yield _run_text(child)


def _run_text(element: Any) -> str:
    tag = element.tag
    if tag == _W_T:
        return str(element.text or "")
    if tag in (_W_TAB, _W_PTAB):
        return "\t"
    if tag in (_W_BR, _W_CR):
        return "\n"
    if tag == _W_NO_BREAK_HYPHEN:
        return "-"
    # Run properties, field codes, drawings, deleted text: nothing to read.
    return ""


def _track_field(char_type: str | None, open_fields: list[str]) -> None:
    if char_type == "begin":
        open_fields.append("")
    elif char_type == "end" and open_fields:
        open_fields.pop()


def _is_page_number_field(instruction: str | None) -> bool:
    words = (instruction or "").split()
    return bool(words) and words[0].upper() in _PAGE_NUMBER_FIELDS


def _style_id(properties: Any) -> str | None:
    style = properties.find(qn("w:pStyle"))
    return None if style is None else str(style.get(_W_VAL))


def _is_on(toggle: Any) -> bool:
    """Whether an OOXML on/off property element (e.g. w:pageBreakBefore) is on."""
    return toggle is not None and str(toggle.get(_W_VAL, "true")).lower() not in _OFF_VALUES


def _starts_new_page(section_properties: Any) -> bool:
    # A w:sectPr inside a paragraph ends a section there; unless its type says
    # otherwise (continuous, nextColumn), the next section starts a new page.
    if section_properties is None:
        return False
    section_type = section_properties.find(qn("w:type"))
    kind = "nextPage" if section_type is None else str(section_type.get(_W_VAL, "nextPage"))
    return kind in _PAGE_SECTION_TYPES

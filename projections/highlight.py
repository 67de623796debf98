"""Snippets with highlighted matches, safe to put in HTML.

A word is highlighted when it reduces to one of the query's terms under the
same tokenizer, stemmer and stop words as the BM25 leg, so what is marked is
what matched. The snippet is the window of words with the most matches; the
text is HTML-escaped and matches are wrapped in ``<mark>…</mark>``.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

_WORD = re.compile(r"\w+", re.UNICODE)
START, STOP = "<mark>", "</mark>"


def snippet(
    text: str,
    query_terms: frozenset[int] | set[int],
    terms_of: Callable[[str], frozenset[int] | set[int]],
    *,
    window_words: int = 40,
) -> str:
    words = list(_WORD.finditer(text))
    if not words:
        return html.escape(text[:300])
    cache: dict[str, bool] = {}

    def matches(word: str) -> bool:
        key = word.lower()
        if key not in cache:
            cache[key] = bool(query_terms and terms_of(key) & query_terms)
        return cache[key]

    hits = [matches(w.group()) for w in words]
    best_start, best_count, count = 0, -1, 0
    for i, hit in enumerate(hits):
        count += hit
        if i >= window_words:
            count -= hits[i - window_words]
        if i >= window_words - 1 or i == len(hits) - 1:
            start = max(0, i - window_words + 1)
            if count > best_count:
                best_start, best_count = start, count
    end = min(len(words), best_start + window_words)
    begin_char = words[best_start].start() if best_start > 0 else 0
    end_char = words[end - 1].end() if end < len(words) else len(text)
    parts: list[str] = ["…" if begin_char > 0 else ""]
    cursor = begin_char
    for word, hit in zip(words[best_start:end], hits[best_start:end], strict=True):
        if hit:
            parts.append(html.escape(text[cursor : word.start()]))
            parts.append(START + html.escape(word.group()) + STOP)
            cursor = word.end()
    parts.append(html.escape(text[cursor:end_char]))
    if end_char < len(text):
        parts.append("…")
    return "".join(parts).strip()


_SENTINEL_START, _SENTINEL_STOP = "\x02", "\x03"
HEADLINE_OPTIONS = f"StartSel={_SENTINEL_START}, StopSel={_SENTINEL_STOP}, MaxWords=45, MinWords=20"


def escape_headline(headline: str) -> str:
    """A ``ts_headline`` produced with sentinel markers → escaped HTML with ``<mark>``."""
    return html.escape(headline).replace(_SENTINEL_START, START).replace(_SENTINEL_STOP, STOP)

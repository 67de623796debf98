"""Shapes of the content blobs that events point at: extracted pages and chunks.

Pure data and JSON codecs, versioned by a ``format`` field, so the processors
that write them and the read models that replay them agree on one layout.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

PAGES_FORMAT = "kf.pages.v1"
CHUNKS_FORMAT = "kf.chunks.v1"


@dataclass(frozen=True)
class PageText:
    number: int | None
    text: str


@dataclass(frozen=True)
class ChunkRecord:
    chunk_index: int
    text: str
    page_start: int | None
    page_end: int | None
    token_count: int
    char_start: int
    char_end: int


def _dump(format_name: str, key: str, items: Sequence[Any]) -> bytes:
    body = {"format": format_name, key: [asdict(item) for item in items]}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def _load(raw: bytes, format_name: str, key: str) -> list[dict[str, Any]]:
    body = json.loads(raw)
    if body.get("format") != format_name:
        raise ValueError(f"expected blob format {format_name}, got {body.get('format')!r}")
    items: list[dict[str, Any]] = body[key]
    return items


def encode_pages(pages: Sequence[PageText]) -> bytes:
    return _dump(PAGES_FORMAT, "pages", pages)


def decode_pages(raw: bytes) -> list[PageText]:
    return [PageText(**item) for item in _load(raw, PAGES_FORMAT, "pages")]


def encode_chunks(chunks: Sequence[ChunkRecord]) -> bytes:
    return _dump(CHUNKS_FORMAT, "chunks", chunks)


def decode_chunks(raw: bytes) -> list[ChunkRecord]:
    return [ChunkRecord(**item) for item in _load(raw, CHUNKS_FORMAT, "chunks")]

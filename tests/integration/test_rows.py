"""``PostgresRows.insert_batched``: rows queued for the end of the batch read and change
exactly as if inserted at once, in PostgreSQL as in memory."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import DictRow, dict_row

from projections.rows import BatchWrites, MemoryRows, PostgresRows, Rows

TABLES = {"seen": ("k",), "other": ("k",)}


@pytest.fixture
def curs(database_url: str) -> Iterator[psycopg.Cursor[DictRow]]:
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        with conn.cursor() as cursor:
            cursor.execute("CREATE TEMP TABLE seen (k int PRIMARY KEY, at timestamptz, v jsonb)")
            cursor.execute("CREATE TEMP TABLE other (k int PRIMARY KEY, n int)")
            yield cursor
        conn.rollback()


def _story(rows: Rows) -> list[Any]:
    """Queued inserts interleaved with every other kind of statement on the same table."""
    now = datetime(2026, 12, 1, tzinfo=UTC)
    seen: list[Any] = []
    for k in range(5):
        rows.insert_batched("seen", {"k": k, "at": now - timedelta(days=k), "v": {"k": k}})
    rows.insert("other", {"k": 1, "n": 1})  # another table: the queue stays queued
    seen.append(sorted(r["k"] for r in rows.select("seen", {})))
    seen.append(rows.delete_before("seen", {}, "at", now - timedelta(days=2, hours=12)))
    rows.insert_batched("seen", {"k": 10, "at": now, "v": [1, 2]})
    seen.append(rows.update("seen", {"k": 10}, {"v": {"changed": True}}))
    rows.insert_batched("seen", {"k": 11, "at": now, "v": None})
    seen.append(rows.delete("seen", {"k": 11}))
    rows.insert_batched("seen", {"k": 12, "at": now, "v": {"last": 1}})
    return seen


def test_queued_rows_read_and_change_as_if_inserted_at_once(
    curs: psycopg.Cursor[DictRow],
) -> None:
    writes = BatchWrites()
    in_postgres = PostgresRows(curs, lambda table: table, writes)
    in_memory = MemoryRows(TABLES)

    assert _story(in_postgres) == _story(in_memory) == [[0, 1, 2, 3, 4], 2, 1, 1]
    assert writes.tables == {"seen"}  # the last row is still queued, until the batch ends
    writes.flush(curs)
    stored = {r["k"]: r["v"] for r in curs.execute("SELECT k, v FROM seen").fetchall()}
    assert stored == {k: row["v"] for (k,), row in in_memory.tables["seen"].items()}
    assert stored == {0: {"k": 0}, 1: {"k": 1}, 2: {"k": 2}, 10: {"changed": True}, 12: {"last": 1}}


def test_a_failed_batch_leaves_nothing_queued(curs: psycopg.Cursor[DictRow]) -> None:
    writes = BatchWrites()
    rows = PostgresRows(curs, lambda table: table, writes)
    rows.insert_batched("seen", {"k": 1, "at": None, "v": None})
    rows.insert_batched("seen", {"k": 1, "at": None, "v": None})  # the same key twice
    with pytest.raises(psycopg.errors.UniqueViolation):
        writes.flush(curs)
    writes.clear()  # as ProjectionView.apply_in does before the next batch
    assert writes.tables == set()

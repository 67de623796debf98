"""Reads of concurrent requests are appended together, and each caller gets its own result."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from commands.activity import GroupCommit, _Pending


def _pending(n: int) -> _Pending:
    return _Pending(read=n, blob=None)  # type: ignore[arg-type]


def test_concurrent_callers_share_transactions_and_each_gets_its_own_position() -> None:
    batches: list[list[int]] = []
    counter = iter(range(1, 10_000))

    def append(batch: list[_Pending]) -> list[int]:
        time.sleep(0.01)  # a commit: others queue meanwhile
        batches.append([p.read for p in batch])  # type: ignore[misc]
        return [next(counter) for _ in batch]

    group = GroupCommit(append, max_batch=8)
    results: dict[int, int] = {}
    lock = threading.Lock()

    def one(n: int) -> None:
        position = group.append(_pending(n))
        with lock:
            results[n] = position

    threads = [threading.Thread(target=one, args=(n,)) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(results) == list(range(40))
    assert sorted(results.values()) == list(range(1, 41))  # every read appended once
    assert sorted(n for b in batches for n in b) == list(range(40))
    assert len(batches) < 40 and max(len(b) for b in batches) <= 8
    order = {n: i for i, b in enumerate(batches) for n in b}
    positions = {n: p for n, p in results.items()}
    for a in range(40):  # a read appended in an earlier batch has a smaller position
        for b in range(40):
            if order[a] < order[b]:
                assert positions[a] < positions[b]


def test_a_failed_append_fails_its_batch_only_and_the_next_ones_succeed() -> None:
    calls: list[int] = []

    def append(batch: list[_Pending]) -> list[int]:
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("the events table is gone")
        return list(range(len(batch)))

    group = GroupCommit(append)
    with pytest.raises(RuntimeError, match="gone"):
        group.append(_pending(1))
    assert group.append(_pending(2)) == 0


def test_alone_a_caller_appends_its_own_read_at_once() -> None:
    seen: list[Any] = []
    group = GroupCommit(lambda batch: seen.append(batch) or [7])  # type: ignore[func-returns-value]
    assert group.append(_pending(1)) == 7 and len(seen) == 1

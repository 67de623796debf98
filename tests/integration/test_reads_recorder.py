"""The activity context's append (``infra.blobs.ReadsRecorder``): one statement per batch
of reads, in order, with its texts; a failed one writes nothing."""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent

from config.root import Container
from domain.activity import Read, ReadKind
from infra.blobs import ReadsRecorder, sha256_hex


def _reads(container: Container, tenant: str, n: int) -> list[StoredEvent]:
    stored = []
    for i in range(n):
        read = Read.record(
            tenant_id=tenant, actor="key:test", role="viewer", kind=ReadKind.SEARCH,
            route="/v1/search", query_sha256=sha256_hex(f"q{i}".encode()),
            documents=[], chunks=[], mode="hybrid",
        )  # fmt: skip
        stored.extend(container.activity.mapper.to_stored_event(e) for e in read.collect_events())
    return stored


@contextlib.contextmanager
def _traced(recorder: ReadsRecorder, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """What the client sends to the server during the block, one protocol message a line."""
    lines: list[str] = []
    original = recorder.datastore.get_connection
    with tempfile.TemporaryFile("w+") as trace:

        @contextlib.contextmanager
        def get_connection() -> Iterator[Any]:
            with original() as conn:
                conn.pgconn.trace(trace.fileno())
                try:
                    yield conn
                finally:
                    conn.pgconn.untrace()

        monkeypatch.setattr(recorder.datastore, "get_connection", get_connection)
        try:
            yield lines
        finally:
            monkeypatch.setattr(recorder.datastore, "get_connection", original)
            trace.seek(0)
            lines.extend(line.split("\t", 3)[3].strip() for line in trace if "\tF\t" in line)


def _blob_exists(database_url: str, tenant: str, content: bytes) -> bool:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM blobs WHERE tenant_id = %s AND sha256 = %s",
            (tenant, sha256_hex(content)),
        ).fetchone()
    assert row is not None
    return bool(row[0])


def test_a_batch_is_appended_in_one_round_trip_in_order_with_its_blobs(
    make_container: Callable[..., Container], monkeypatch: pytest.MonkeyPatch
) -> None:
    container = make_container(database={"pool_size": 1, "max_overflow": 0})  # one connection
    recorder = container.activity.recorder
    assert isinstance(recorder, ReadsRecorder)
    tenant = f"t-{uuid.uuid4()}"
    # The connection prepares the statement on its first use (a round trip of its own).
    recorder.insert_events(_reads(container, tenant, 1), blobs=[(tenant, os.urandom(32))])
    stored = _reads(container, tenant, 3)
    text = os.urandom(32)
    with _traced(recorder, monkeypatch) as sent:
        positions = recorder.insert_events(stored, blobs=[(tenant, text)])
    # One statement (the prepared call of the function, on an autocommit connection):
    # bound, executed, one Sync.
    assert [line.split("\t")[0] for line in sent] == ["Bind", "Describe", "Execute", "Sync"], sent
    assert positions == sorted(positions) and len(set(positions)) == 3
    notes = recorder.select_notifications(positions[0], 3)
    assert [(n.id, n.originator_id) for n in notes] == [
        (p, e.originator_id) for p, e in zip(positions, stored, strict=True)
    ]
    assert _blob_exists(container.settings.database.url, tenant, text)


def test_a_failed_append_writes_nothing_and_leaves_the_connection_usable(
    make_container: Callable[..., Container],
) -> None:
    container = make_container(database={"pool_size": 1, "max_overflow": 0})  # one connection
    recorder = container.activity.recorder
    assert isinstance(recorder, ReadsRecorder)
    tenant = f"t-{uuid.uuid4()}"
    first = _reads(container, tenant, 1)
    recorder.insert_events(first)
    head = recorder.max_notification_id()
    again = os.urandom(32)
    # The same aggregate's version again (with a new event after it and a blob): refused
    # as the library refuses it, so the command layer sees its conflict.
    with pytest.raises(IntegrityError):
        recorder.insert_events([*first, *_reads(container, tenant, 1)], blobs=[(tenant, again)])
    assert recorder.max_notification_id() == head
    assert not _blob_exists(container.settings.database.url, tenant, again)
    # The pool's one connection came back out of the failed transaction: the next
    # append on it commits.
    [position] = recorder.insert_events(_reads(container, tenant, 1))
    assert position > (head or 0)

"""Crash safety: SIGKILL the relay and a worker mid-ingest, restart them, lose nothing.

The relay and the workers run as real ``kf relay`` / ``kf worker`` processes on
this module's database and stream; the catalog projector runs in-process.
After the kills and restarts every document reaches exactly one final state,
the catalog agrees with the event store, and the stream never carries an event
twice or out of order.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import nats
import pytest

from config.settings import Settings
from infra.bus import HEADER_CONTEXT
from infra.envelope import Envelope
from tests.harness import RunningSystem
from tests.roles import Role, role_env

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory(ingest={"ack_wait_s": 10, "parse_timeout_s": 8})


@pytest.fixture(scope="module")
def roles(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Role]]:
    logs = tmp_path_factory.mktemp("role-logs")
    env = {
        **role_env(settings),
        "KF__INGEST__ACK_WAIT_S": "10",
        "KF__INGEST__PARSE_TIMEOUT_S": "8",
    }
    started = {
        "relay": Role("relay", ["relay"], env, logs),
        "worker-a": Role("worker-a", ["worker"], env, logs),
        "worker-b": Role("worker-b", ["worker"], env, logs),
    }
    yield started
    for role in started.values():
        role.stop()


def _stream_positions(settings: Settings) -> list[int]:
    async def read() -> list[int]:
        nc = await nats.connect(settings.nats.url)
        try:
            js = nc.jetstream()
            info = await js.stream_info(settings.nats.stream)
            positions = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                msg = await js.get_msg(settings.nats.stream, seq)
                if (msg.headers or {}).get(HEADER_CONTEXT) != "documents":
                    continue  # reads, published in batch messages
                positions.append(Envelope.from_json(msg.data or b"").position)
            return positions
        finally:
            await nc.close()

    return asyncio.run(read())


def _texts(count: int) -> list[tuple[str, bytes]]:
    return [(f"note-{i}.txt", (f"Crash-safety note {i}. " * 300).encode()) for i in range(count)]


def test_killing_relay_and_worker_mid_ingest_loses_and_duplicates_nothing(
    settings: Settings,
    roles: dict[str, Role],
    documents_dir: Path,
) -> None:
    with RunningSystem(settings, None, worker=False, relays=False, projectors=True) as system:
        roles["relay"].start().wait_for_log("relay_started")
        for worker in ("worker-a", "worker-b"):
            roles[worker].start()
        for worker in ("worker-a", "worker-b"):
            roles[worker].wait_for_log("worker_ready", timeout=240)

        files = sorted(p for p in documents_dir.iterdir() if p.suffix in {".pdf", ".docx"})[:14]
        uploads = [(p.name, p.read_bytes()) for p in files] + _texts(20 - len(files))
        documents = system.container.documents
        ids: list[uuid.UUID] = []
        for name, content in uploads:
            result = documents.upload_document(
                tenant_id=system.tenant_id,
                actor="key:test",
                filename=name,
                declared_type=None,
                content=content,
            )
            ids.append(result.id)
        assert len(set(ids)) == 20

        # Let ingestion get going, then kill mid-flight.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            counts = system.container.views["catalog"].counts(system.tenant_id)
            if counts.get("parsed", 0) + counts.get("chunked", 0) + counts.get("embedded", 0) >= 3:
                break
            time.sleep(0.1)
        roles["relay"].kill()
        roles["worker-a"].kill()
        in_flight = system.container.views["catalog"].counts(system.tenant_id)
        assert in_flight.get("embedded", 0) + in_flight.get("failed", 0) < 20, (
            "killed too late to matter"
        )

        time.sleep(1.0)
        roles["relay"].start().wait_for_log("relay_started")
        roles["worker-a"].start().wait_for_log("worker_ready", timeout=240)

        catalog = system.container.views["catalog"]
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            entries = [catalog.get(system.tenant_id, i) for i in ids]
            if all(e is not None and e.status in {"embedded", "failed"} for e in entries):
                break
            time.sleep(0.25)
        else:
            pytest.fail(f"not all final: {Counter(e.status if e else None for e in entries)}")

        # Exactly one final state per document; no stage event appended twice.
        events_by_document: dict[str, list[Envelope]] = {}
        for batch in system.container.event_logs["documents"].read_all(0):
            for envelope in batch:
                events_by_document.setdefault(envelope.aggregate_id, []).append(envelope)
        for document_id in ids:
            events = events_by_document[str(document_id)]
            types = [e.event_type for e in events]
            assert len(types) == len(set(types)), types
            assert sum(t in {"Document.Embedded", "Document.Failed"} for t in types) == 1, types
            assert [e.aggregate_version for e in events] == list(range(1, len(events) + 1))
            entry = catalog.get(system.tenant_id, document_id)
            assert entry is not None and entry.version == len(events)
            assert entry.status == types[-1].removeprefix("Document.").lower()

        # The catalog's counts match the event store's.
        final_types = Counter(events_by_document[str(i)][-1].event_type for i in ids)
        counts = catalog.counts(system.tenant_id)
        assert counts.get("embedded", 0) == final_types["Document.Embedded"]
        assert counts.get("failed", 0) == final_types["Document.Failed"]
        assert counts.get("failed", 0) == 1  # only the encrypted PDF

        # The stream carries every event once, in order, and the catalog applied them all.
        head = documents.head_position()
        positions = _stream_positions(settings)
        assert positions == sorted(set(positions)), "published twice or out of order"
        assert positions[-1] == head
        assert catalog.wait_for("documents", head, 30)
        assert "projection_failed" not in roles["relay"].log_text()

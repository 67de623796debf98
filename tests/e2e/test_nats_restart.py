"""Issue 15, point 1 (server mode, ``KF_NATS_URL``): the NATS server goes away in the middle
of ingestion and comes back (same address, same store); the relays, workers and
projectors reconnect and resume, and every document reaches exactly one final state.

A `nats-server` from the wheel that this test starts, stops and starts again; the real
PostgreSQL of the suite.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from config.settings import Settings
from infra.embedded import nats_server_binary
from infra.embedding import SentenceTransformerEmbedder
from tests.harness import RunningSystem

DOWN_FOR_S = 8


class NatsServer:
    def __init__(self, store: Path) -> None:
        self.store = store
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [str(nats_server_binary()), "-a", "127.0.0.1", "-p", str(self.port), "-js",
             "-sd", str(self.store)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("nats-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # as a crash would: no goodbye to the clients
            self.process.wait(10)


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats-store"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def system(
    settings_factory: Callable[..., Settings],
    embedder: SentenceTransformerEmbedder,
    nats_server: NatsServer,
) -> Iterator[RunningSystem]:
    settings = settings_factory(nats={"url": nats_server.url})
    with RunningSystem(settings, embedder) as running:
        yield running


def test_nats_down_and_back_mid_ingestion_loses_nothing(
    system: RunningSystem, nats_server: NatsServer
) -> None:
    ids: list[str] = []
    with system.client() as admin:
        for i in range(10):
            if i == 3:
                nats_server.stop()
                down_at = time.monotonic()
            if i == 7:  # uploads go on while NATS is away: the event store is the queue
                time.sleep(max(0.0, DOWN_FOR_S - (time.monotonic() - down_at)))
                nats_server.start()
            body = f"Note {i}: the broker went away and came back; nothing was lost."
            uploaded = admin.post(
                "/v1/documents", files={"file": (f"note-{i}.txt", body.encode(), "text/plain")}
            )
            assert uploaded.status_code == 202, uploaded.text
            ids.append(uploaded.json()["id"])
        final = system.wait_final(admin, ids, timeout=240)
    assert {d["status"] for d in final.values()} == {"embedded"}, final
    # Exactly one final state each, in the event store: one Embedded per document.
    embedded = [
        e.aggregate_id
        for batch in system.container.event_logs["documents"].read_all(0)
        for e in batch
        if e.event_type == "Document.Embedded"
    ]
    assert sorted(embedded) == sorted(ids)
    # The catalog equals the event store, and every read model caught up.
    heads = {c: log.head() for c, log in system.container.event_logs.items()}
    for name, view in system.container.views.items():
        for context in view.projection.contexts:
            assert view.wait_for(context, heads[context], 60), (name, context)

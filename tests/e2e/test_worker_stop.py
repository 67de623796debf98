"""A worker asked to stop while it embeds a big document stops within a slice of the texts,
records nothing, and hands the document back: the next worker embeds it at once."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from uuid import UUID

import pytest

import processors.stages as stages_module
from config.runtime import build_stages
from config.settings import Settings
from domain.document import Stage
from infra.bus import Bus
from infra.embedding import Embedder, Matrix, SentenceTransformerEmbedder
from processors.worker import Worker
from tests.harness import RunningSystem

SLICE = 16
SLICE_WAIT_S = 3.0


class SlowEmbedder:
    """The real model, made slow: each call waits first (a big document on a slow machine)."""

    def __init__(self, real: SentenceTransformerEmbedder) -> None:
        self.real = real
        self.calls = 0
        self.started = threading.Event()

    @property
    def model_name(self) -> str:
        return self.real.model_name

    @property
    def dimension(self) -> int:
        return self.real.dimension

    def count_tokens(self, texts: Sequence[str]) -> int:
        return self.real.count_tokens(texts)

    def embed(self, texts: Sequence[str]) -> Matrix:
        self.calls += 1
        self.started.set()
        time.sleep(SLICE_WAIT_S)
        return self.real.embed(texts)


@pytest.fixture(scope="module")
def system(
    settings_factory: Callable[..., Settings], embedder: SentenceTransformerEmbedder
) -> Iterator[RunningSystem]:
    """Everything but the worker, which the test runs itself."""
    with RunningSystem(settings_factory(), embedder, worker=False) as running:
        yield running


async def _work(
    system: RunningSystem, embedder: Embedder, until: Callable[[], bool], within: float
) -> float:
    """Run a worker until ``until()`` holds (within ``within`` s); how long it took to stop
    once asked."""
    bus = Bus(system.settings.nats.url, system.settings.nats)
    await bus.connect("kf-test-worker")
    stages = build_stages(system.container)
    stages._embedder_factory = lambda: embedder
    worker = Worker(bus, stages, system.settings.ingest, system.container.dead_letters)
    stop = asyncio.Event()
    running = asyncio.ensure_future(worker.run(stop, tuple(Stage)))
    try:
        deadline = time.monotonic() + within
        while not until():
            assert time.monotonic() < deadline, "the worker never got there"
            assert not running.done(), running
            await asyncio.sleep(0.1)
        stop.set()
        asked = time.monotonic()
        await asyncio.wait_for(running, 60)
        return time.monotonic() - asked
    finally:
        stop.set()  # (a failed test's worker too, before its connection goes)
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(running, 60)
        await bus.close()


def test_a_stopping_worker_hands_back_a_big_embedding_and_the_next_one_embeds_it(
    system: RunningSystem,
    embedder: SentenceTransformerEmbedder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stages_module, "EMBED_SLICE", SLICE)
    text = "\n\n".join(
        " ".join(f"kittiwake{p}x{w}" for w in range(120)) for p in range(60)
    ).encode()
    with system.client() as client:
        response = client.post("/v1/documents", files={"file": ("kittiwakes.txt", text)})
        assert response.status_code == 202, response.text
        document_id = response.json()["id"]

    # The first worker is asked to stop once its embedding has begun.
    slow = SlowEmbedder(embedder)
    stopped_in = asyncio.run(_work(system, slow, slow.started.is_set, 120))
    document = system.container.documents.get_document(system.tenant_id, UUID(document_id))
    chunks = document.chunk_count or 0
    slices = -(-chunks // SLICE)
    assert slices >= 5, f"{chunks} chunks: too few slices for the test to mean anything"
    # It stopped after the slice under way, not after the whole document.
    assert slow.calls < slices
    assert stopped_in < 2 * SLICE_WAIT_S + 10, stopped_in
    assert document.status.value == "chunked", document.status  # nothing recorded

    # The next worker is given the document at once (not after the ack wait, 120 s) and
    # embeds it.
    def embedded() -> bool:
        current = system.container.documents.get_document(system.tenant_id, UUID(document_id))
        return current.status.value == "embedded"

    asyncio.run(_work(system, embedder, embedded, 60))
    with system.client() as client:
        final = system.wait_final(client, [document_id], timeout=60)
    assert final[document_id]["status"] == "embedded"
    assert final[document_id]["chunk_count"] == chunks

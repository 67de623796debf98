"""Recorded reads relayed as batch messages, on real PostgreSQL and JetStream: what the relay
read together is one message headed by its last position; resuming after a crash neither
loses nor repeats a read; a projector applies each read once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import nats
import pytest

from config.root import Container
from config.settings import Settings
from domain.activity import ReadKind
from infra import relay as relay_module
from infra.bus import HEADER_BATCH, HEADER_CONTEXT, HEADER_POSITION, Bus
from infra.envelope import Envelope
from infra.relay import Relay, relay_tracking


@pytest.fixture
def setup(make_container: Callable[..., Container]) -> tuple[Container, Settings]:
    # A fresh stream per test; a short duplicate window proves resumption does not lean
    # on JetStream's deduplication.
    tag = uuid.uuid4().hex[:8]
    container = make_container(
        nats={"stream": f"KFR_{tag}", "subject_prefix": f"kfr{tag}", "duplicate_window_s": 1}
    )
    return container, container.settings


def _read(container: Container, count: int) -> None:
    tenant = str(uuid.uuid4())
    for _ in range(count):
        container.activity.record_read(
            tenant_id=tenant, actor="key:t", role="viewer", kind=ReadKind.SEARCH,
            route="/v1/search", query=f"q {uuid.uuid4()}", documents=[str(uuid.uuid4())],
        )  # fmt: skip


async def _messages(settings: Settings) -> list[tuple[dict[str, str], bytes]]:
    nc = await nats.connect(settings.nats.url)
    try:
        js = nc.jetstream()
        state = (await js.stream_info(settings.nats.stream)).state
        found = []
        for seq in range(state.first_seq, state.last_seq + 1):
            msg = await js.get_msg(settings.nats.stream, seq)
            headers = dict(msg.headers or {})
            if headers.get(HEADER_CONTEXT) == "activity":
                found.append((headers, msg.data or b""))
        return found
    finally:
        await nc.close()


def _positions(messages: list[tuple[dict[str, str], bytes]]) -> list[int]:
    return [e.position for _, data in messages for e in Envelope.batch_from_json(data)]


async def _relay_until(
    container: Container, settings: Settings, position: int, tracking: Any = None
) -> None:
    bus = Bus(settings.nats.url, settings.nats)
    await bus.connect("test-relay-batches")
    relay = Relay(container.activity, bus, settings.database.url, batch_messages=True)
    if tracking is not None:
        relay._tracking = tracking(relay._tracking)
    stop = asyncio.Event()
    task = asyncio.ensure_future(relay.run(stop))
    try:
        for _ in range(500):
            if relay.position >= position or task.done():
                break
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
        await bus.close()
    if task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


def test_reads_read_together_go_out_as_one_message_headed_by_the_last(
    setup: tuple[Container, Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    container, settings = setup
    _read(container, 5)
    head = container.activity.head_position()
    monkeypatch.setattr(relay_module, "_MESSAGE_EVENTS", 3)  # five reads: two messages
    asyncio.run(_relay_until(container, settings, head))
    messages = asyncio.run(_messages(settings))
    assert [h[HEADER_BATCH] for h, _ in messages] == ["3", "2"]
    positions = _positions(messages)
    assert positions == sorted(positions) and len(set(positions)) == 5 and positions[-1] == head
    for headers, data in messages:
        envelopes = Envelope.batch_from_json(data)
        assert headers[HEADER_POSITION] == str(envelopes[-1].position)
        first, last = envelopes[0].position, envelopes[-1].position
        assert headers["Nats-Msg-Id"] == f"activity:{first}-{last}"
        assert {e.event_type for e in envelopes} == {"Read.Recorded"}
    assert relay_tracking(container.activity).max_tracking_id("activity") == head


def test_a_message_is_cut_before_it_outgrows_its_byte_budget(
    monkeypatch: pytest.MonkeyPatch, setup: tuple[Container, Settings]
) -> None:
    container, settings = setup
    _read(container, 4)
    head = container.activity.head_position()
    monkeypatch.setattr(relay_module, "_MESSAGE_BYTES", 1)  # every envelope is over it
    asyncio.run(_relay_until(container, settings, head))
    messages = asyncio.run(_messages(settings))
    assert [h[HEADER_BATCH] for h, _ in messages] == ["1", "1", "1", "1"]


def test_a_crash_between_ack_and_record_repeats_and_loses_no_read(
    setup: tuple[Container, Settings],
) -> None:
    """The stream's newest message is a batch: resuming after its header's position (not
    JetStream's deduplication, whose 1 s window has passed) keeps every read once."""
    container, settings = setup
    tracking = relay_tracking(container.activity)
    tracked_before = tracking.max_tracking_id("activity") or 0
    _read(container, 3)

    class CrashingTracking:
        def __init__(self, real: Any) -> None:
            self.real = real

        def max_tracking_id(self, name: str) -> int | None:
            return self.real.max_tracking_id(name)

        def insert_tracking(self, tracking: Any) -> None:
            raise RuntimeError("crash after ack, before recording the position")

    with pytest.raises(RuntimeError, match="crash after ack"):
        asyncio.run(_relay_until(container, settings, 10**9, CrashingTracking))
    published = _positions(asyncio.run(_messages(settings)))
    assert published and max(published) > tracked_before  # published, never recorded
    assert (tracking.max_tracking_id("activity") or 0) == tracked_before
    asyncio.run(asyncio.sleep(1.5))  # past the stream's duplicate window
    _read(container, 2)
    head = container.activity.head_position()
    asyncio.run(_relay_until(container, settings, head))
    positions = _positions(asyncio.run(_messages(settings)))
    assert positions == sorted(set(positions)), "a read was published twice or out of order"
    assert len(positions) == 5 and positions[-1] == head


def test_a_projector_applies_each_read_of_the_batch_messages_once(
    setup: tuple[Container, Settings],
) -> None:
    from projections.runner import ProjectorRunner

    container, settings = setup
    view = container.views["readers"]
    view.catch_up_from(container.event_logs)
    applied: list[list[int]] = []

    async def scenario() -> None:
        bus = Bus(settings.nats.url, settings.nats)
        await bus.connect("batches")
        await bus.ensure_stream()
        relay = Relay(
            container.activity, bus, settings.database.url, linger_s=1.0, batch_messages=True
        )
        runner = ProjectorRunner(view, container.event_logs, bus, settings.database.url)
        real_apply = view.apply_batch

        def counting_apply(envelopes: Any, *args: Any) -> Any:
            if envelopes:
                applied.append([e.position for e in envelopes])
            return real_apply(envelopes, *args)

        view.apply_batch = counting_apply  # type: ignore[method-assign]
        stop = asyncio.Event()
        tasks = [asyncio.ensure_future(relay.run(stop)), asyncio.ensure_future(runner.run(stop))]
        try:
            await asyncio.wait_for(relay.active.wait(), 20)
            await asyncio.wait_for(runner.active.wait(), 20)
            applied.clear()  # what the catch-up applied
            for _ in range(3):  # a trickle, within the relay's linger
                await asyncio.to_thread(_read, container, 1)
            head = container.activity.head_position()
            for _ in range(500):
                if view.position("activity") >= head:
                    break
                await asyncio.sleep(0.02)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
            view.apply_batch = real_apply  # type: ignore[method-assign]
            await bus.close()

    asyncio.run(scenario())
    head = container.activity.head_position()
    assert applied == [[head - 2, head - 1, head]]
    [(headers, _)] = asyncio.run(_messages(settings))
    assert headers[HEADER_BATCH] == "3"

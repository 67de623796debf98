"""The relay on real PostgreSQL and JetStream: order, ids, resumption without gaps or duplicates;
recorded reads relayed as batch messages, each applied once by a projector."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import nats
import pytest

from config.root import Container
from config.settings import Settings
from domain.activity import ReadKind
from infra import relay as relay_module
from infra.bus import HEADER_BATCH, HEADER_CONTEXT, HEADER_POSITION, Bus, delete_stream
from infra.envelope import Envelope
from infra.relay import Relay, relay_tracking


@pytest.fixture
def setup(make_container: Callable[..., Container]) -> Iterator[tuple[Container, Settings]]:
    # A fresh stream per test; a short duplicate window proves resumption does
    # not lean on JetStream's deduplication. Deleted after the test: each stream
    # reserves its max_bytes of the server's JetStream storage.
    tag = uuid.uuid4().hex[:8]
    container = make_container(
        nats={"stream": f"KFR_{tag}", "subject_prefix": f"kfr{tag}", "duplicate_window_s": 1}
    )
    yield container, container.settings
    asyncio.run(delete_stream(container.settings.nats.url, container.settings.nats.stream))


def _upload_many(container: Container, count: int) -> None:
    tenant = str(uuid.uuid4())
    for i in range(count):
        container.documents.upload_document(
            tenant_id=tenant,
            actor="key:t",
            filename=f"{i}.txt",
            declared_type=None,
            content=f"doc {i} {uuid.uuid4()}".encode(),
        )


async def _stream(settings: Settings) -> list[tuple[int, dict[str, str], Envelope]]:
    nc = await nats.connect(settings.nats.url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(settings.nats.stream)
        messages = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(settings.nats.stream, seq)
            messages.append((seq, dict(msg.headers or {}), Envelope.from_json(msg.data or b"")))
        return messages
    finally:
        await nc.close()


class CrashingTracking:
    """A relay's tracking that fails to record its position: a crash after the ack."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def max_tracking_id(self, name: str) -> int | None:
        return self.real.max_tracking_id(name)

    def insert_tracking(self, tracking: Any) -> None:
        raise RuntimeError("crash after ack, before recording the position")


async def _run_relay_until(
    container: Container,
    settings: Settings,
    position: int,
    *,
    context: str = "documents",
    batch_messages: bool = False,
    crash: bool = False,
) -> Relay:
    """Run a relay of ``context`` until it has published ``position`` (or failed)."""
    bus = Bus(settings.nats.url, settings.nats)
    await bus.connect("test-relay")
    app = container.applications[context]
    relay = Relay(app, bus, settings.database.url, batch_messages=batch_messages)
    if crash:
        relay._tracking = CrashingTracking(relay._tracking)  # type: ignore[assignment]
    stop = asyncio.Event()
    task = asyncio.ensure_future(relay.run(stop))
    try:
        for _ in range(300):
            if relay.position >= position or task.done():
                break
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
        await bus.close()
    if task.exception() is not None:
        raise task.exception()  # type: ignore[misc]
    return relay


def _count_applied(view: Any, applied: list[list[int]]) -> Callable[[], None]:
    """Note the positions of every non-empty batch ``view`` applies; returns the undo."""
    real_apply = view.apply_batch

    def counting_apply(envelopes: Any, *args: Any) -> Any:
        if envelopes:
            applied.append([e.position for e in envelopes])
        return real_apply(envelopes, *args)

    view.apply_batch = counting_apply
    return lambda: setattr(view, "apply_batch", real_apply)


def _documents_in_stream(messages: list[tuple[int, dict[str, str], Envelope]]) -> list[int]:
    return [e.position for _, _, e in messages if e.context == "documents"]


def test_relay_publishes_every_event_in_order_with_its_message_id(
    setup: tuple[Container, Settings],
) -> None:
    container, settings = setup
    _upload_many(container, 5)
    head = container.documents.head_position()
    relay = asyncio.run(_run_relay_until(container, settings, head))
    assert relay.position == head
    messages = asyncio.run(_stream(settings))
    positions = _documents_in_stream(messages)
    assert positions == sorted(positions) and len(positions) == len(set(positions)) == 5
    for _, headers, envelope in messages:
        assert headers["Nats-Msg-Id"] == f"documents:{envelope.position}"
        assert envelope.event_type == "Document.Uploaded"
        assert envelope.tenant_id and envelope.actor == "key:t"
    tracking = container.documents  # relay tracking is recorded after the acks
    assert relay._tracking.max_tracking_id("documents") == head
    assert tracking.head_position() == head


def test_restart_resumes_without_gaps_or_duplicates(setup: tuple[Container, Settings]) -> None:
    container, settings = setup
    _upload_many(container, 3)
    asyncio.run(_run_relay_until(container, settings, container.documents.head_position()))
    _upload_many(container, 4)
    asyncio.run(_run_relay_until(container, settings, container.documents.head_position()))
    positions = _documents_in_stream(asyncio.run(_stream(settings)))
    assert positions == sorted(set(positions))
    assert len(positions) == 7


def test_crash_between_ack_and_record_publishes_nothing_twice(
    setup: tuple[Container, Settings],
) -> None:
    """The position is recorded after the ack; a crash in between must not duplicate.

    The duplicate window is 1 s and we wait past it, so only resuming from the
    stream's last message (not JetStream dedupe) can prevent the duplicate.
    """
    container, settings = setup
    _upload_many(container, 4)
    head = container.documents.head_position()
    tracking = relay_tracking(container.documents)
    tracked_before = tracking.max_tracking_id("documents") or 0
    with pytest.raises(RuntimeError, match="crash after ack"):
        asyncio.run(_run_relay_until(container, settings, 10**9, crash=True))
    positions = _documents_in_stream(asyncio.run(_stream(settings)))
    # Published and acked, but the position was never recorded.
    assert positions and tracked_before < max(positions) <= head
    assert (tracking.max_tracking_id("documents") or 0) == tracked_before
    asyncio.run(asyncio.sleep(1.5))  # past the stream's duplicate window
    _upload_many(container, 2)
    asyncio.run(_run_relay_until(container, settings, container.documents.head_position()))
    positions = _documents_in_stream(asyncio.run(_stream(settings)))
    assert positions == sorted(set(positions)), "an event was published twice or out of order"
    assert len(positions) == 6


def test_only_one_relay_per_context_publishes(setup: tuple[Container, Settings]) -> None:
    container, settings = setup
    _upload_many(container, 2)

    async def scenario() -> tuple[bool, bool, int]:
        bus = Bus(settings.nats.url, settings.nats)
        await bus.connect("two-relays")
        first = Relay(container.documents, bus, settings.database.url)
        second = Relay(container.documents, bus, settings.database.url)
        stop_first, stop_second = asyncio.Event(), asyncio.Event()
        task_first = asyncio.ensure_future(first.run(stop_first))
        await asyncio.wait_for(first.active.wait(), 10)
        task_second = asyncio.ensure_future(second.run(stop_second))
        await asyncio.sleep(1.0)
        second_was_active = second.active.is_set()
        stop_first.set()
        await task_first
        await asyncio.wait_for(second.active.wait(), 10)  # the standby takes over
        _upload_many(container, 1)
        head = container.documents.head_position()
        for _ in range(200):
            if second.position >= head:
                break
            await asyncio.sleep(0.02)
        stop_second.set()
        await task_second
        await bus.close()
        return second_was_active, True, second.position

    second_was_active, took_over, position = asyncio.run(scenario())
    assert not second_was_active and took_over
    assert position == container.documents.head_position()
    positions = _documents_in_stream(asyncio.run(_stream(settings)))
    assert positions == sorted(set(positions)) and len(positions) == 3


def test_lingering_relay_and_projector_take_a_trickle_of_events_in_one_batch(
    setup: tuple[Container, Settings],
) -> None:
    """Events committed one at a time within the linger go out (and are applied) together.

    The relay selects them once and records its position once per batch, the
    projector applies once per batch; a linger far longer than the three commits take
    makes that certain.
    """
    from projections.runner import ProjectorRunner

    container, settings = setup
    view = container.views["catalog"]
    tracked: list[int] = []
    applied: list[list[int]] = []
    selected: list[int] = []  # what each select of the event store found

    async def scenario() -> None:
        bus = Bus(settings.nats.url, settings.nats)
        await bus.connect("lingering")
        await bus.ensure_stream()
        relay = Relay(container.documents, bus, settings.database.url, linger_s=2.0)
        real_insert = relay._tracking.insert_tracking
        relay._tracking.insert_tracking = lambda t: (  # type: ignore[method-assign]
            tracked.append(t.notification_id),
            real_insert(t),
        )[-1]
        runner = ProjectorRunner(
            view, container.event_logs, bus, settings.database.url, linger_s=2.0
        )
        _count_applied(view, applied)
        recorder = container.documents.recorder
        real_select = recorder.select_notifications

        def counting_select(*args: Any, **kwargs: Any) -> Any:
            found = real_select(*args, **kwargs)
            selected.append(len(found))
            return found

        recorder.select_notifications = counting_select  # type: ignore[method-assign]
        stop = asyncio.Event()
        tasks = [asyncio.ensure_future(relay.run(stop)), asyncio.ensure_future(runner.run(stop))]
        await asyncio.wait_for(relay.active.wait(), 20)
        await asyncio.wait_for(runner.active.wait(), 20)
        applied.clear()  # what the catch-up applied
        tracked.clear()
        selected.clear()
        for _ in range(3):  # a trickle: one commit at a time
            await asyncio.to_thread(_upload_many, container, 1)
            await asyncio.sleep(0.05)
        head = container.documents.head_position()
        for _ in range(300):
            if view.position("documents") >= head:
                break
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.gather(*tasks)
        await bus.close()

    asyncio.run(scenario())
    head = container.documents.head_position()
    assert tracked == [head]
    assert len(applied) == 1 and len(applied[0]) == 3 and applied[0][-1] == head
    # The relay read the three commits from the event store with one query, not one each.
    assert [n for n in selected if n] == [3]


# Recorded reads, relayed as batch messages (what the relay read together is one
# message headed by its last position).
_READS: dict[str, Any] = {"context": "activity", "batch_messages": True}


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


def test_reads_read_together_go_out_as_one_message_headed_by_the_last(
    setup: tuple[Container, Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    container, settings = setup
    _read(container, 5)
    head = container.activity.head_position()
    monkeypatch.setattr(relay_module, "_MESSAGE_EVENTS", 3)  # five reads: two messages
    asyncio.run(_run_relay_until(container, settings, head, **_READS))
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
    asyncio.run(_run_relay_until(container, settings, head, **_READS))
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

    with pytest.raises(RuntimeError, match="crash after ack"):
        asyncio.run(_run_relay_until(container, settings, 10**9, crash=True, **_READS))
    published = _positions(asyncio.run(_messages(settings)))
    assert published and max(published) > tracked_before  # published, never recorded
    assert (tracking.max_tracking_id("activity") or 0) == tracked_before
    asyncio.run(asyncio.sleep(1.5))  # past the stream's duplicate window
    _read(container, 2)
    head = container.activity.head_position()
    asyncio.run(_run_relay_until(container, settings, head, **_READS))
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
        # A linger far longer than three appends take, however slow the machine.
        relay = Relay(
            container.activity, bus, settings.database.url, linger_s=3.0, batch_messages=True
        )
        runner = ProjectorRunner(view, container.event_logs, bus, settings.database.url)
        restore_apply = _count_applied(view, applied)
        stop = asyncio.Event()
        tasks = [asyncio.ensure_future(relay.run(stop)), asyncio.ensure_future(runner.run(stop))]
        try:
            await asyncio.wait_for(relay.active.wait(), 20)
            await asyncio.wait_for(runner.active.wait(), 20)
            applied.clear()  # what the catch-up applied
            for _ in range(3):  # a trickle, within the relay's linger
                await asyncio.to_thread(_read, container, 1)
            head = container.activity.head_position()
            for _ in range(1000):
                if view.position("activity") >= head:
                    break
                await asyncio.sleep(0.02)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
            restore_apply()
            await bus.close()

    asyncio.run(scenario())
    head = container.activity.head_position()
    assert applied == [[head - 2, head - 1, head]]
    [(headers, _)] = asyncio.run(_messages(settings))
    assert headers[HEADER_BATCH] == "3"

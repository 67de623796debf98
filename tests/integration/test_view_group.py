"""Read models kept together (``ViewGroup``): one consumer, one transaction per batch, and
each member's rows, positions and dead letters exactly as if it ran alone."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from nats.js.api import AckPolicy, ConsumerConfig

from config.root import Container
from domain.activity import DeadLetter, DeadLetterState, ReadKind
from infra.bus import Bus
from infra.db import AdvisoryLocks
from infra.envelope import Envelope
from infra.relay import Relay
from projections.base import ProjectionView
from projections.group import ViewGroup
from projections.rows import Rows
from projections.runner import ProjectorRunner

MEMBERS = ("audit", "readers", "usage")  # as `kf serve` groups them


@pytest.fixture
def container(make_container: Callable[..., Container]) -> Container:
    tag = uuid.uuid4().hex[:8]
    return make_container(nats={"stream": f"KFG_{tag}", "subject_prefix": f"kfg{tag}"})


def _reads(container: Container, count: int) -> tuple[str, list[uuid.UUID]]:
    tenant = str(uuid.uuid4())
    shown = [uuid.uuid4() for _ in range(3)]
    for i in range(count):
        container.activity.record_read(
            tenant_id=tenant,
            actor="key:reader",
            role="viewer",
            kind=ReadKind.SEARCH,
            route="/v1/search",
            query_sha256=f"{i:064x}",
            documents=[str(d) for d in shown],
        )
    return tenant, shown


def _count(container: Container, sql: str, *params: Any) -> int:
    with container.views["audit"].datastore.get_connection() as conn:
        row = conn.execute(sql, params).fetchone()
    assert row is not None
    return int(next(iter(row.values())))


def _positions(views: list[ProjectionView]) -> dict[str, dict[str, int]]:
    return {v.name: v.refresh_positions() for v in views}


def test_a_batch_commits_in_every_member_or_in_none_and_once(container: Container) -> None:
    views = [container.views[name] for name in MEMBERS]
    group = ViewGroup(views)
    for view in views:  # whatever the container's start left behind
        view.catch_up_from(container.event_logs)
    tenant, shown = _reads(container, 5)
    envelopes = container.event_logs["activity"].read(views[0].position("activity"), 100)
    assert len(envelopes) == 5
    before = _positions(views)

    readers = container.views["readers"].projection
    real_apply = readers.apply

    def failing(rows: Rows, envelope: Envelope) -> None:
        if envelope.position == envelopes[3].position:
            raise RuntimeError("readers cannot apply this one")
        real_apply(rows, envelope)

    readers.apply = failing  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        group.apply_batch(envelopes, "KF_TEST", 41)
    assert _positions(views) == before  # nothing moved, in any member
    assert _count(container, "SELECT count(*) FROM audit_events WHERE tenant_id = %s", tenant) == 0

    readers.apply = real_apply  # type: ignore[method-assign]
    assert group.apply_batch(envelopes, "KF_TEST", 42) == 5 * 3  # every event, every member
    head = envelopes[-1].position
    assert {v.name: v.refresh_positions()["activity"] for v in views} == dict.fromkeys(
        sorted(MEMBERS), head
    )
    assert {v.stream_offset("KF_TEST") for v in views} == {42}
    assert _count(container, "SELECT count(*) FROM audit_events WHERE tenant_id = %s", tenant) == 5
    readers_rows = "SELECT count(*) FROM document_reads WHERE tenant_id = %s"
    assert _count(container, readers_rows, tenant) == 5 * len(shown)

    # Delivered again (a redelivery, an overlapping replay): nothing applies twice.
    assert group.apply_batch(envelopes, "KF_TEST", 42) == 0
    assert _count(container, readers_rows, tenant) == 5 * len(shown)


def test_one_runner_keeps_the_group_current_and_parks_a_poison_event_as_its_members(
    container: Container,
) -> None:
    """Followed from the stream: members that stand apart catch up on their own; an event
    that keeps failing in one member is that member's dead letter, and dropping it skips
    it there only."""
    views = [container.views[name] for name in MEMBERS]
    settings = container.settings
    for view in views:
        view.catch_up_from(container.event_logs)
    _reads(container, 3)  # the readers model is behind on these when the group starts
    for view in views:
        if view.name != "readers":
            view.catch_up_from(container.event_logs)

    readers = container.views["readers"].projection
    real_apply = readers.apply
    poisoned: list[int] = []

    def failing(rows: Rows, envelope: Envelope) -> None:
        if envelope.event_type == "Read.Recorded" and envelope.data["route"] == "/poison":
            poisoned.append(envelope.position)
            raise RuntimeError("readers cannot apply this one")
        real_apply(rows, envelope)

    readers.apply = failing  # type: ignore[method-assign]
    tenant = str(uuid.uuid4())
    letters: list[DeadLetter] = []
    consumers: list[str | None] = []

    async def scenario() -> None:
        bus = Bus(settings.nats.url, settings.nats)
        await bus.connect("group")
        await bus.ensure_stream()
        relay = Relay(container.activity, bus, settings.database.url)
        runner = ProjectorRunner(
            ViewGroup(views),
            container.event_logs,
            bus,
            settings.database.url,
            dead_letters=container.dead_letters,
            max_attempts=2,
        )
        assert runner.consumer_name == "projection-group-audit-readers-usage"
        # Left by `kf project readers` before the read models were grouped: stale once the
        # group holds the lock, and dropped (another read model's consumer is not).
        for stale in ("projection-readers", "projection-group-readers-usage", "projection-keys"):
            await bus.js.add_consumer(
                bus.stream, ConsumerConfig(durable_name=stale, ack_policy=AckPolicy.ALL)
            )
        letters_runner = ProjectorRunner(  # alone, so that it lists the group's letters
            container.views["dead_letters"], container.event_logs, bus, settings.database.url
        )
        stop = asyncio.Event()
        tasks = [asyncio.ensure_future(job.run(stop)) for job in (relay, runner, letters_runner)]
        try:
            await asyncio.wait_for(runner.active.wait(), 30)
            for route in ("/v1/search", "/poison", "/v1/search"):
                await asyncio.to_thread(
                    container.activity.record_read,
                    tenant_id=tenant,
                    actor="key:reader",
                    role="viewer",
                    kind=ReadKind.SEARCH,
                    route=route,
                    documents=[str(uuid.uuid4())],
                )
            letter_id = None
            for _ in range(600):
                letter_id = next(
                    (
                        letter
                        for letter in container.dead_letters_view.stopped_projections()
                        if letter.component == "projection:readers"
                    ),
                    None,
                )
                if letter_id is not None:
                    break
                await asyncio.sleep(0.05)
            assert letter_id is not None, "the poison event was not parked"
            letter = container.dead_letters.get(tenant_id=tenant, letter_id=letter_id.letter_id)
            letters.append(letter)
            container.dead_letters.drop(
                tenant_id=tenant, letter_id=letter.id, actor="key:operator", reason="test"
            )
            head = container.event_logs["activity"].head()
            for _ in range(600):
                if all(v.refresh_positions()["activity"] >= head for v in views):
                    break
                await asyncio.sleep(0.05)
            # Past the dropped letter the runner catches up from the store and only then
            # follows the stream again, with its consumer made anew: wait for that.
            for _ in range(600):
                names = [c.name for c in await bus.js.consumers_info(bus.stream)]
                if runner.consumer_name in names:
                    break
                await asyncio.sleep(0.05)
            consumers.extend(names)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
            await bus.close()

    asyncio.run(scenario())
    readers.apply = real_apply  # type: ignore[method-assign]
    assert sorted(c or "" for c in consumers) == [
        "projection-dead_letters",
        "projection-group-audit-readers-usage",
        "projection-keys",
    ]
    [letter] = letters
    assert letter.component == "projection:readers" and poisoned
    assert letter.position == poisoned[0]
    assert container.dead_letters.state(letter.id) is DeadLetterState.DROPPED
    # The other members applied the poison event; readers went past it, and has the rest.
    audit = "SELECT count(*) FROM audit_events WHERE tenant_id = %s AND action = 'Read.Recorded'"
    assert _count(container, audit, tenant) == 3
    assert (
        _count(container, "SELECT count(*) FROM document_reads WHERE tenant_id = %s", tenant) == 2
    )
    head = container.event_logs["activity"].head()
    assert {v.name: v.refresh_positions()["activity"] for v in views} == dict.fromkeys(
        MEMBERS, head
    )


def test_a_group_takes_all_its_read_models_locks_or_none(container: Container) -> None:
    """Waiting for a member kept elsewhere, the group holds none of the others' locks (they
    would be kept by no one); it takes them all once that member is free."""
    url = container.settings.database.url
    keys = [f"kf.projection.{name}" for name in MEMBERS]

    async def scenario() -> None:
        elsewhere, group, probe = AdvisoryLocks(url), AdvisoryLocks(url), AdvisoryLocks(url)
        stop = asyncio.Event()
        try:
            assert await elsewhere.hold("kf.projection.readers", stop)  # `kf project readers`
            taking = asyncio.ensure_future(group.hold_all(keys, stop))
            await asyncio.sleep(1.5)
            assert not taking.done()
            for key in ("kf.projection.audit", "kf.projection.usage"):
                assert await asyncio.wait_for(probe.hold(key, stop), 5)  # free meanwhile
                await probe.release(key)
            await elsewhere.release("kf.projection.readers")
            assert await asyncio.wait_for(taking, 10)
            for key in keys:  # now the group's
                conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
                async with conn:
                    cursor = await conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,))
                    assert await cursor.fetchone() == (False,)
        finally:
            stop.set()
            for locks in (elsewhere, group, probe):
                await locks.close()

    asyncio.run(scenario())

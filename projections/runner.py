"""Keeping one read model current: catch up from PostgreSQL, then follow JetStream in order.

Exactly one runner per view is active (a PostgreSQL advisory lock; others wait).
On start, and after any error, the runner:

1. catches up straight from the event store (whatever the stream may have lost
   to retention or never held), through the same ``apply_batch`` as live events;
2. recreates its durable consumer to start right after the stream sequence its
   rows were committed with (or, if that is unknown, from a little before the
   catch-up began; anything seen twice is skipped by position);
3. applies batches in stream order, acking (AckPolicy.ALL) only after the
   transaction holding rows and position has committed.

Because the view's rows, not the consumer's ack state, decide where to resume,
a crash at any point neither skips nor reorders an event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from uuid import UUID

import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from domain.activity import DeadLetterBox, DeadLetterState, ParkedMessage
from infra.bus import HEADER_BATCH, HEADER_CONTEXT, HEADER_POSITION, Bus
from infra.db import AdvisoryLocks
from infra.envelope import Envelope
from infra.eventlog import EventLog
from infra.telemetry import (
    DEAD_LETTERS,
    PROJECTION_ERRORS,
    PROJECTION_LAG,
    PROJECTION_POSITION,
    PROJECTION_STOPPED,
)
from projections.base import ProjectionView
from projections.group import ViewGroup

log = structlog.get_logger(__name__)

# Events published at most this long before a catch-up began are re-read from
# the stream when the exact offset is unknown; duplicates are skipped by position.
_CATCH_UP_MARGIN = timedelta(seconds=60)
# How often a projector stopped on a dead letter looks for an operator's decision.
_DEAD_LETTER_POLL_S = 2.0
# A projector sent only events it does not apply records where it is in the stream at
# most this often (a transaction and a durable commit each time).
_SKIPPED_OFFSET_EVERY_S = 10.0


def _events_in(msg: Msg) -> int:
    """How many events a message carries: one, or a batch message's count."""
    return int((msg.headers or {}).get(HEADER_BATCH, "1"))


class ProjectorRunner:
    def __init__(
        self,
        view: ProjectionView | ViewGroup,
        logs: Mapping[str, EventLog],
        bus: Bus,
        locks: str | AdvisoryLocks,
        batch_size: int = 256,
        linger_s: float = 0.0,
        dead_letters: DeadLetterBox | None = None,
        max_attempts: int = 5,
        stall_s: float = 10.0,
    ) -> None:
        self.view = view
        self.name = view.name
        self._logs = {c: logs[c] for c in view.contexts}
        self._bus = bus
        # A database URL: a lock connection of its own; else the process's shared one.
        self._own_locks = isinstance(locks, str)
        self._locks = AdvisoryLocks(locks) if isinstance(locks, str) else locks
        self._batch_size = batch_size
        # After an event, how long to wait for more before applying: one transaction
        # for the events of a trickle (recorded reads) instead of one each. 0: at once.
        self._linger_s = linger_s
        # An event that fails this many times in a row is parked as a dead letter, and
        # the projector waits on it (without one: it keeps retrying, with backoff).
        self._dead_letters = dead_letters
        self._max_attempts = max_attempts
        self._parked: tuple[UUID, str] | None = None  # a letter (and its component) retried
        # Quiet this long while the event store is ahead: follow again (after a catch-up).
        self._stall_s = stall_s
        self._offset_saved_at = float("-inf")  # loop time the stream offset was recorded
        self.active = asyncio.Event()

    @property
    def consumer_name(self) -> str:
        return f"projection-{self.name}"

    async def run(self, stop: asyncio.Event) -> None:
        # Each read model's lock, whether it runs alone or in a group: one runner at a
        # time keeps it, however the runners are grouped. A group takes all or none.
        keys = [f"kf.projection.{view.name}" for view in self.view.members]
        try:
            if not await self._locks.hold_all(keys, stop):
                return
            try:
                await self._run_active(stop)
            finally:
                for key in keys:
                    await self._locks.release(key)
        finally:
            if self._own_locks:
                await self._locks.close()

    @staticmethod
    def component_of(view: str) -> str:
        return f"projection:{view}"

    async def _run_active(self, stop: asyncio.Event) -> None:
        delay = 0.2
        failures = 0  # in a row, without a catch-up going through
        while not stop.is_set():
            try:
                caught_up_at = await self.catch_up()
                failures = 0
                await self._retry_went_through()
                self.active.set()
                await self._follow(stop, caught_up_at)
            except Exception:
                PROJECTION_ERRORS.labels(self.name).inc()
                log.exception("projection_failed", projection=self.name, retry_in_s=delay)
                failures += 1
                if failures >= self._max_attempts and await self._park_poison(stop, failures):
                    failures, delay = 0, 0.2
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 10.0)
            else:
                delay = 0.2
        self.active.clear()

    async def _park_poison(self, stop: asyncio.Event, attempts: int) -> bool:
        """Find the event that keeps failing, park it as a dead letter and wait for an
        operator: True when they acted (retry: try again; drop: go on past the event),
        False when no single event is at fault (an outage: keep retrying)."""
        box = self._dead_letters
        if box is None:
            return False
        try:
            found = await asyncio.to_thread(self.view.first_failing, self._logs)
            if found is None:
                return False
            failing, envelope, error = found
            component = self.component_of(failing)
            message = ParkedMessage(
                tenant_id=envelope.tenant_id,
                component=component,
                subject=f"{envelope.context}:{envelope.position}",
                context=envelope.context,
                position=envelope.position,
                event_type=envelope.event_type,
                aggregate_id=envelope.aggregate_id,
                attempts=attempts,
                error=f"{type(error).__name__}: {error}",
            )
            letter = await asyncio.to_thread(box.park, message)
        except Exception:
            log.exception("projection_park_failed", projection=self.name)
            return False
        DEAD_LETTERS.labels(component).inc()
        PROJECTION_STOPPED.labels(failing).set(1)
        log.error(
            "projection_stopped",
            projection=failing,
            context=envelope.context,
            position=envelope.position,
            event_type=envelope.event_type,
            dead_letter=str(letter),
            error=repr(error),
        )
        try:
            while not stop.is_set():
                try:
                    state = await asyncio.to_thread(box.state, letter)
                except Exception:
                    log.exception("projection_dead_letter_unreadable", projection=self.name)
                    state = DeadLetterState.PARKED
                if state is DeadLetterState.DROPPED:
                    skipped = await asyncio.to_thread(
                        self.view.skip, envelope.context, envelope.position, failing
                    )
                    log.warning(
                        "projection_dropped_event",
                        projection=failing,
                        context=envelope.context,
                        position=envelope.position,
                        skipped=skipped,
                    )
                    return True
                if state is not DeadLetterState.PARKED:  # a retry (or resolved meanwhile)
                    self._parked = (letter, component)
                    return True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), _DEAD_LETTER_POLL_S)
            return True
        finally:
            PROJECTION_STOPPED.labels(failing).set(0)

    async def _retry_went_through(self) -> None:
        """The event a retry was asked for applied: its dead letter is resolved."""
        parked, self._parked = self._parked, None
        if parked is not None and self._dead_letters is not None:
            letter, component = parked
            try:
                await asyncio.to_thread(self._dead_letters.resolve, letter, component)
            except Exception:
                log.exception("projection_resolve_failed", projection=self.name)
            else:
                log.info("projection_resumed", projection=self.name, dead_letter=str(letter))

    async def catch_up(self) -> datetime:
        """Apply everything the event store holds beyond the view's positions."""
        started = datetime.now(UTC)
        applied = await asyncio.to_thread(self.view.catch_up_from, self._logs, self._batch_size)
        for context, events in applied.items():
            if events:
                log.info(
                    "projection_caught_up", projection=self.name, context=context, events=events
                )
        return started

    def _filter_subject(self) -> str:
        if len(self._logs) == 1:
            return self._bus.context_filter(next(iter(self._logs)))
        return f"{self._bus.prefix}.>"

    async def _start_config(self, caught_up_at: datetime) -> ConsumerConfig:
        stream = self._bus.stream
        offset = await asyncio.to_thread(self.view.stream_offset, stream)
        first, last = await self._bus.stream_bounds()
        config = ConsumerConfig(
            durable_name=self.consumer_name,
            filter_subject=self._filter_subject(),
            ack_policy=AckPolicy.ALL,
            ack_wait=60,
            max_ack_pending=self._batch_size * 4,
        )
        if offset is not None and first <= offset + 1 and offset <= last:
            config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = offset + 1
        else:
            if offset is not None:
                log.warning(
                    "projection_offset_outside_stream",
                    projection=self.name, offset=offset, first=first, last=last,
                )  # fmt: skip
                await asyncio.to_thread(self.view.forget_stream_offset, stream)
            config.deliver_policy = DeliverPolicy.BY_START_TIME
            config.opt_start_time = caught_up_at - _CATCH_UP_MARGIN
        return config

    async def _follow(self, stop: asyncio.Event, caught_up_at: datetime) -> None:
        js = self._bus.js
        config = await self._start_config(caught_up_at)
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(self._bus.stream, self.consumer_name)
        await self._drop_stale_consumers()
        subscription = await js.subscribe(
            config.filter_subject or "",
            durable=self.consumer_name,
            stream=self._bus.stream,
            config=config,
            manual_ack=True,
        )
        log.info(
            "projection_following",
            projection=self.name,
            deliver_policy=str(config.deliver_policy),
            start_seq=config.opt_start_seq,
        )
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()
        try:
            while not stop.is_set():
                try:
                    first = await subscription.next_msg(timeout=1.0)
                except TimeoutError:
                    if loop.time() - quiet_since < self._stall_s:
                        continue
                    if await asyncio.to_thread(self._behind_the_store):
                        # The event store holds what the stream has not brought for a
                        # while (a broker that lost a consumer or messages in a crash, a
                        # relay that is down): catch up from the store, follow anew.
                        log.warning("projection_stalled", projection=self.name)
                        return
                    quiet_since = loop.time()
                    continue
                await self._apply(await self._fill(subscription, first))
                quiet_since = loop.time()
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def _drop_stale_consumers(self) -> None:
        """Delete the consumers other runners kept for these read models (alone, or grouped
        another way): this runner holds their locks, so no other keeps them now, and a
        durable consumer left behind would stay on the stream for good."""
        ours = {view.name for view in self.view.members}
        for info in await self._bus.js.consumers_info(self._bus.stream):
            name = info.name or ""
            if name == self.consumer_name or not name.startswith("projection-"):
                continue
            kept = set(name.removeprefix("projection-").removeprefix("group-").split("-"))
            if kept & ours:
                with contextlib.suppress(NotFoundError):
                    await self._bus.js.delete_consumer(self._bus.stream, name)
                log.info("projection_consumer_dropped", projection=self.name, consumer=name)

    def _behind_the_store(self) -> bool:
        """Whether the event store holds events this read model has not applied."""
        self.view.refresh_positions()
        return any(e.head() > self.view.position(c) for c, e in self._logs.items())

    async def _fill(self, subscription: JetStreamContext.PushSubscription, first: Msg) -> list[Msg]:
        """``first`` and what follows it: what is pending, then, lingering, what arrives
        (up to the batch size in events: a batch message counts for the events it holds)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._linger_s
        batch = [first]
        events = _events_in(first)
        while events < self._batch_size:
            if subscription.pending_msgs > 0:
                batch.append(await subscription.next_msg(timeout=1.0))
            else:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await subscription.next_msg(timeout=remaining))
                except TimeoutError:
                    break
            events += _events_in(batch[-1])
        return batch

    async def _apply(self, batch: list[Msg]) -> None:
        envelopes: list[Envelope] = []
        for msg in batch:
            headers = msg.headers or {}
            context = headers.get(HEADER_CONTEXT)
            position = int(headers.get(HEADER_POSITION, "0"))
            # Cheap skip from headers: not ours, or already applied (of a batch message,
            # the header is its last event's position).
            if context not in self._logs or position <= self.view.position(context):
                continue
            if HEADER_BATCH in headers:
                applied = self.view.position(context)
                envelopes.extend(
                    e for e in Envelope.batch_from_json(msg.data) if e.position > applied
                )
            else:
                envelopes.append(Envelope.from_json(msg.data))
        sequence = batch[-1].metadata.sequence.stream
        now = asyncio.get_running_loop().time()
        if envelopes or now - self._offset_saved_at >= _SKIPPED_OFFSET_EVERY_S:
            await asyncio.to_thread(self.view.apply_batch, envelopes, self._bus.stream, sequence)
            self._offset_saved_at = now
        # else nothing of ours (a projector that follows two contexts is sent every
        # context's events: one per recorded read): no transaction, only the ack. The
        # stream offset is where a restart resumes, a hint (what it delivers again is
        # skipped), so it is recorded with the next batch that applies anything, or
        # within _SKIPPED_OFFSET_EVERY_S.
        await batch[-1].ack()
        for view in self.view.members:
            for context in view.contexts:
                PROJECTION_POSITION.labels(view.name, context).set(view.position(context))

    def update_lag(self) -> dict[str, int]:
        """Each read model's lag per context (in a group, the furthest behind is returned)."""
        heads = {context: event_log.head() for context, event_log in self._logs.items()}
        lags: dict[str, int] = {}
        for view in self.view.members:
            for context in view.contexts:
                lag = max(0, heads[context] - view.position(context))
                PROJECTION_LAG.labels(view.name, context).set(lag)
                lags[context] = max(lag, lags.get(context, 0))
        return lags

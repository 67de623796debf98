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

import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from infra.bus import HEADER_CONTEXT, HEADER_POSITION, Bus
from infra.db import AdvisoryLocks
from infra.envelope import Envelope
from infra.eventlog import EventLog
from infra.telemetry import PROJECTION_ERRORS, PROJECTION_LAG, PROJECTION_POSITION
from projections.base import ProjectionView

log = structlog.get_logger(__name__)

# Events published at most this long before a catch-up began are re-read from
# the stream when the exact offset is unknown; duplicates are skipped by position.
_CATCH_UP_MARGIN = timedelta(seconds=60)


class ProjectorRunner:
    def __init__(
        self,
        view: ProjectionView,
        logs: Mapping[str, EventLog],
        bus: Bus,
        locks: str | AdvisoryLocks,
        batch_size: int = 256,
        linger_s: float = 0.0,
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
        self.active = asyncio.Event()

    @property
    def consumer_name(self) -> str:
        return f"projection-{self.name}"

    async def run(self, stop: asyncio.Event) -> None:
        key = f"kf.projection.{self.name}"
        try:
            if not await self._locks.hold(key, stop):
                return
            try:
                await self._run_active(stop)
            finally:
                await self._locks.release(key)
        finally:
            if self._own_locks:
                await self._locks.close()

    async def _run_active(self, stop: asyncio.Event) -> None:
        delay = 0.2
        while not stop.is_set():
            try:
                caught_up_at = await self.catch_up()
                self.active.set()
                await self._follow(stop, caught_up_at)
            except Exception:
                PROJECTION_ERRORS.labels(self.name).inc()
                log.exception("projection_failed", projection=self.name, retry_in_s=delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 10.0)
            else:
                delay = 0.2
        self.active.clear()

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
        try:
            while not stop.is_set():
                try:
                    first = await subscription.next_msg(timeout=1.0)
                except TimeoutError:
                    continue
                await self._apply(await self._fill(subscription, first))
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def _fill(self, subscription: JetStreamContext.PushSubscription, first: Msg) -> list[Msg]:
        """``first`` and what follows it: what is pending, then, lingering, what arrives."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._linger_s
        batch = [first]
        while len(batch) < self._batch_size:
            if subscription.pending_msgs > 0:
                batch.append(await subscription.next_msg(timeout=1.0))
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await subscription.next_msg(timeout=remaining))
            except TimeoutError:
                break
        return batch

    async def _apply(self, batch: list[Msg]) -> None:
        envelopes = []
        for msg in batch:
            headers = msg.headers or {}
            context = headers.get(HEADER_CONTEXT)
            position = int(headers.get(HEADER_POSITION, "0"))
            # Cheap skip from headers: not ours, or already applied.
            if context not in self._logs or position <= self.view.position(context):
                continue
            envelopes.append(Envelope.from_json(msg.data))
        sequence = batch[-1].metadata.sequence.stream
        await asyncio.to_thread(self.view.apply_batch, envelopes, self._bus.stream, sequence)
        await batch[-1].ack()
        for context in self._logs:
            PROJECTION_POSITION.labels(self.name, context).set(self.view.position(context))

    def update_lag(self) -> dict[str, int]:
        lags = {}
        for context, event_log in self._logs.items():
            lag = max(0, event_log.head() - self.view.position(context))
            PROJECTION_LAG.labels(self.name, context).set(lag)
            lags[context] = lag
        return lags

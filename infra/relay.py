"""The relay: committed events of one context → the JetStream stream, in order.

It tails the context's notification log with the library's LISTEN/NOTIFY
subscription, publishes each event with ``Nats-Msg-Id = <context>:<position>``,
waits for the stream's ack, and only then records its position (in
``relay_tracking``). On start it resumes after the larger of its recorded
position and the newest event of its context the stream already holds, so a
crash between ack and record neither loses nor duplicates an event, even past
the stream's duplicate window. A PostgreSQL advisory lock keeps exactly one
relay active per context; others wait as standbys.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from uuid import UUID

import psycopg
import structlog
from eventsourcing.application import Application
from eventsourcing.persistence import Notification, PersistenceError, Tracking
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresTrackingRecorder
from nats.errors import Error as NatsError

from infra.bus import Bus
from infra.db import AdvisoryLocks
from infra.envelope import Envelope
from infra.eventlog import EventLog
from infra.telemetry import RELAY_LAG, RELAY_POSITION, RELAY_PUBLISHED

log = structlog.get_logger(__name__)

TRACKING_TABLE = "relay_tracking"
_BATCH = 500


def relay_lock_key(context: str) -> str:
    return f"kf.relay.{context}"


class RelayTracking(PostgresTrackingRecorder):
    """Relay positions, committed without waiting for the disk: a relay resumes from the
    newer of its tracked position and the stream's last message, so a position lost in
    a server crash costs nothing (the stream already has those events)."""

    def insert_tracking(self, tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute("SET LOCAL synchronous_commit = off")
            self._insert_tracking(curs, tracking)


def relay_tracking(app: Application[UUID]) -> PostgresTrackingRecorder:
    """Where relays record what the stream has acknowledged (created by ``kf migrate``)."""
    recorder = app.recorder
    assert isinstance(recorder, PostgresApplicationRecorder)
    return RelayTracking(recorder.datastore, tracking_table_name=TRACKING_TABLE)


class SubscriptionEndedError(RuntimeError):
    """The event store's notification subscription stopped (its connection was lost)."""


# What the relay rides through by starting over; anything else (a bug) ends it.
_OUTAGES: tuple[type[BaseException], ...] = (
    psycopg.Error,
    PersistenceError,
    NatsError,
    OSError,
    TimeoutError,
    SubscriptionEndedError,
)


class Relay:
    """``linger_s``: after an event, how long to wait for more before publishing, so that
    a context written one event at a time (recorded reads) goes out in batches: one
    tracking commit per batch instead of per event. 0: at once."""

    def __init__(
        self,
        app: Application[UUID],
        bus: Bus,
        locks: str | AdvisoryLocks,
        linger_s: float = 0.0,
    ) -> None:
        self.context = app.name  # one Application per context, named for it
        self._linger_s = linger_s
        self._app = app
        self._log = EventLog(self.context, app)
        self._bus = bus
        # A database URL: a lock connection of its own; else the process's shared one.
        self._own_locks = isinstance(locks, str)
        self._locks = AdvisoryLocks(locks) if isinstance(locks, str) else locks
        self._tracking = relay_tracking(app)
        self.position = 0
        self.active = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop``. When PostgreSQL (or NATS) goes away the relay starts over
        once it is back: it takes its lock again (the lock went with the connection) and
        resumes from the larger of its tracked position and the stream's last message,
        so nothing is skipped and the stream's duplicate window drops any repeat."""
        key = relay_lock_key(self.context)
        delay = 0.5
        try:
            while not stop.is_set():
                try:
                    if not await self._locks.hold(key, stop):
                        return
                    try:
                        await self._relay(stop)
                    finally:
                        self.active.clear()
                        await self._locks.release(key)
                    delay = 0.5
                except _OUTAGES as exc:  # PostgreSQL or NATS went away: start over
                    if stop.is_set():
                        raise
                    log.error(
                        "relay_restarting", context=self.context, retry_in_s=delay, error=repr(exc)
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                    delay = min(delay * 2, 10.0)
        finally:
            if self._own_locks:
                await self._locks.close()

    async def _resume_position(self) -> int:
        tracked = await asyncio.to_thread(self._tracking.max_tracking_id, self.context) or 0
        in_stream = await self._bus.last_position(self.context) or 0
        return max(tracked, in_stream)

    async def _relay(self, stop: asyncio.Event) -> None:
        await self._bus.ensure_stream()
        self.position = await self._resume_position()
        log.info("relay_started", context=self.context, position=self.position)
        self.active.set()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Notification] = asyncio.Queue(maxsize=_BATCH * 4)
        finished = threading.Event()
        subscription = self._app.recorder.subscribe(gt=self.position)

        def tail() -> None:
            try:
                with subscription:
                    for notification in subscription:
                        asyncio.run_coroutine_threadsafe(queue.put(notification), loop).result()
            except Exception:
                log.exception("relay_subscription_failed", context=self.context)
            finally:
                finished.set()
                loop.call_soon_threadsafe(stop_waiter.set)

        stop_waiter = asyncio.Event()
        tail_thread = threading.Thread(target=tail, name=f"relay-tail-{self.context}", daemon=True)
        tail_thread.start()
        try:
            while not stop.is_set() and not finished.is_set():
                batch = await self._next_batch(queue, stop, stop_waiter)
                if not batch:
                    continue
                await self._locks.check()  # still holding the lock?
                for notification in batch:
                    await self._publish(self._log.envelope(notification), stop)
                await asyncio.to_thread(
                    self._tracking.insert_tracking, Tracking(self.context, self.position)
                )
        finally:
            subscription.stop()
            await asyncio.to_thread(tail_thread.join, 10)
        if finished.is_set() and not stop.is_set():
            raise SubscriptionEndedError(f"relay subscription for {self.context} ended")

    async def _next_batch(
        self,
        queue: asyncio.Queue[Notification],
        stop: asyncio.Event,
        stop_waiter: asyncio.Event,
    ) -> list[Notification]:
        getter = asyncio.ensure_future(queue.get())
        stopper = asyncio.ensure_future(stop.wait())
        ended = asyncio.ensure_future(stop_waiter.wait())
        done, pending = await asyncio.wait(
            {getter, stopper, ended}, return_when=asyncio.FIRST_COMPLETED, timeout=5.0
        )
        for task in pending:
            task.cancel()
        if getter not in done:
            return []
        batch = [getter.result()]
        deadline = asyncio.get_running_loop().time() + self._linger_s
        while len(batch) < _BATCH:
            try:
                batch.append(queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0 or stop.is_set():
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _publish(self, envelope: Envelope, stop: asyncio.Event) -> None:
        delay = 0.1
        while True:
            try:
                await self._bus.publish(envelope)
                break
            except Exception as exc:  # NATS down, stream missing, timeout: retry in order
                if stop.is_set():
                    raise
                log.warning(
                    "relay_publish_retry",
                    context=self.context,
                    position=envelope.position,
                    error=repr(exc),
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                with contextlib.suppress(Exception):
                    await self._bus.ensure_stream()
        self.position = envelope.position
        RELAY_PUBLISHED.labels(self.context).inc()
        RELAY_POSITION.labels(self.context).set(self.position)

    def update_lag(self) -> int:
        lag = max(0, self._log.head() - self.position)
        RELAY_LAG.labels(self.context).set(lag)
        return lag

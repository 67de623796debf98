"""The relay: committed events of one context → the JetStream stream, in order.

It tails the context's notification log (LISTEN/NOTIFY, then a select of
everything new: ``NotificationTail``), publishes each event with
``Nats-Msg-Id = <context>:<position>``, waits for the stream's ack, and only
then records its position (in ``relay_tracking``). On start it resumes after
the larger of its recorded position and the newest event of its context the
stream already holds, so a crash between ack and record neither loses nor
duplicates an event, even past the stream's duplicate window. A PostgreSQL
advisory lock keeps exactly one relay active per context; others wait as
standbys.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable
from uuid import UUID

import psycopg
import structlog
from eventsourcing.application import Application
from eventsourcing.persistence import Notification, PersistenceError, Tracking
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresTrackingRecorder
from nats.errors import Error as NatsError
from psycopg.sql import SQL, Identifier

from infra.bus import Bus
from infra.db import AdvisoryLocks
from infra.envelope import Envelope
from infra.eventlog import EventLog
from infra.telemetry import RELAY_LAG, RELAY_POSITION, RELAY_PUBLISHED

log = structlog.get_logger(__name__)

TRACKING_TABLE = "relay_tracking"
_BATCH = 500
# A batch message holds at most this many events and about this many bytes (NATS
# refuses messages over its max_payload, 1 MB by default).
_MESSAGE_EVENTS = 200
_MESSAGE_BYTES = 256 * 1024


def _messages(envelopes: list[Envelope]) -> list[tuple[list[Envelope], list[bytes]]]:
    """Consecutive envelopes cut into batch messages, each with its envelopes' JSON."""
    messages: list[tuple[list[Envelope], list[bytes]]] = []
    chunk: list[Envelope] = []
    encoded: list[bytes] = []
    size = 0
    for envelope in envelopes:
        body = envelope.to_json()
        if chunk and (len(chunk) >= _MESSAGE_EVENTS or size + len(body) > _MESSAGE_BYTES):
            messages.append((chunk, encoded))
            chunk, encoded, size = [], [], 0
        chunk.append(envelope)
        encoded.append(body)
        size += len(body) + 1
    if chunk:
        messages.append((chunk, encoded))
    return messages


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


def _hand_over(
    loop: asyncio.AbstractEventLoop,
    queue: asyncio.Queue[list[Notification]],
    batch: list[Notification],
    stopped: threading.Event,
) -> None:
    """From the tail's thread: put ``batch`` on the relay's queue, waiting while it is
    full, unless the tail is stopped meanwhile."""
    future = asyncio.run_coroutine_threadsafe(queue.put(batch), loop)
    while not stopped.is_set():
        try:
            future.result(timeout=0.5)
            return
        except concurrent.futures.TimeoutError:
            continue
    future.cancel()


class NotificationTail:
    """A context's newly committed notifications, in batches, from a thread of its own.

    It LISTENs on the context's channel; on a notification it waits ``linger_s`` (so
    that a context written one event at a time, like recorded reads, comes as one
    batch), then selects everything after what it last handed over (500 at a time)
    and hands each list to ``deliver``: one query per batch, where the library's
    subscription runs one per commit and three threads. Notification ids commit in
    order (the recorder locks the table for each insert), so nothing is skipped.
    """

    def __init__(
        self,
        recorder: PostgresApplicationRecorder,
        after: int,
        linger_s: float,
        *,
        deliver: Callable[[list[Notification], threading.Event], None],
        ended: Callable[[], object],
        name: str,
    ) -> None:
        self._recorder = recorder
        self._after = after
        self._linger_s = linger_s
        self._deliver = deliver
        self._ended = ended
        self._stopped = threading.Event()
        self.finished = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            with self._recorder.datastore.get_connection() as conn:
                channel = Identifier(self._recorder.channel_name)
                conn.execute(SQL("LISTEN {0}").format(channel))
                self._pull()  # what was committed before we listened
                while not self._stopped.is_set():
                    if not any(True for _ in conn.notifies(timeout=0.1, stop_after=1)):
                        continue
                    if self._linger_s and self._stopped.wait(self._linger_s):
                        break
                    for _ in conn.notifies(timeout=0.0):  # those the linger collected
                        pass
                    self._pull()
        except BaseException as exc:
            if not self._stopped.is_set():
                self.error = exc
                log.warning("relay_tail_failed", error=repr(exc))
        finally:
            self.finished.set()
            self._ended()

    def _pull(self) -> None:
        while not self._stopped.is_set():
            batch = list(
                self._recorder.select_notifications(
                    start=self._after, limit=_BATCH, inclusive_of_start=False
                )
            )
            if batch:
                self._deliver(batch, self._stopped)
                self._after = batch[-1].id
            if len(batch) < _BATCH:
                return


class Relay:
    """``linger_s``: after an event, how long to wait for more before publishing, so that
    a context written one event at a time (recorded reads) goes out in batches: one
    tracking commit per batch instead of per event. 0: at once.

    ``batch_messages``: publish what was read together as messages of up to
    ``_MESSAGE_EVENTS`` events (``Bus.publish_batch``) rather than one message per
    event: one publish, one ack, one store and one delivery per consumer for many reads.
    Only for a context whose consumers are all projectors (they read both kinds); the
    workers' per-event-type consumers of the documents context need one event each.
    """

    def __init__(
        self,
        app: Application[UUID],
        bus: Bus,
        locks: str | AdvisoryLocks,
        linger_s: float = 0.0,
        *,
        batch_messages: bool = False,
    ) -> None:
        self.context = app.name  # one Application per context, named for it
        self._linger_s = linger_s
        self._batch_messages = batch_messages
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
        queue: asyncio.Queue[list[Notification]] = asyncio.Queue(maxsize=4)
        ended = asyncio.Event()
        recorder = self._app.recorder
        assert isinstance(recorder, PostgresApplicationRecorder)
        tail = NotificationTail(
            recorder,
            self.position,
            self._linger_s,
            deliver=lambda batch, stopped: _hand_over(loop, queue, batch, stopped),
            ended=lambda: loop.call_soon_threadsafe(ended.set),
            name=f"relay-tail-{self.context}",
        )
        tail.start()
        try:
            while not stop.is_set() and not tail.finished.is_set():
                batch = await self._next_batch(queue, stop, ended)
                if not batch:
                    continue
                await self._locks.check()  # still holding the lock?
                envelopes = [self._log.envelope(notification) for notification in batch]
                if self._batch_messages:
                    for chunk, encoded in _messages(envelopes):
                        await self._publish(chunk, stop, encoded)
                else:
                    for envelope in envelopes:
                        await self._publish([envelope], stop)
                await asyncio.to_thread(
                    self._tracking.insert_tracking, Tracking(self.context, self.position)
                )
        finally:
            tail.stop()
            await asyncio.to_thread(tail.join, 10)
        if tail.finished.is_set() and not stop.is_set():
            raise SubscriptionEndedError(
                f"relay subscription for {self.context} ended: {tail.error!r}"
            )

    @staticmethod
    async def _next_batch(
        queue: asyncio.Queue[list[Notification]],
        stop: asyncio.Event,
        ended: asyncio.Event,
    ) -> list[Notification]:
        """What the tail has handed over (waiting up to 5 s for it), up to ``_BATCH``."""
        getter = asyncio.ensure_future(queue.get())
        stopper = asyncio.ensure_future(stop.wait())
        ender = asyncio.ensure_future(ended.wait())
        done, pending = await asyncio.wait(
            {getter, stopper, ender}, return_when=asyncio.FIRST_COMPLETED, timeout=5.0
        )
        for task in pending:
            task.cancel()
        if getter not in done:
            return []
        batch = getter.result()
        while len(batch) < _BATCH and not queue.empty():
            batch.extend(queue.get_nowait())
        return batch

    async def _publish(
        self, envelopes: list[Envelope], stop: asyncio.Event, encoded: list[bytes] | None = None
    ) -> None:
        """One message (of one event, or of the batch ``encoded``), retried until acked."""
        envelope = envelopes[-1]
        delay = 0.1
        while True:
            try:
                if encoded is None:
                    await self._bus.publish(envelope)
                else:
                    await self._bus.publish_batch(envelopes, encoded)
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
        RELAY_PUBLISHED.labels(self.context).inc(len(envelopes))
        RELAY_POSITION.labels(self.context).set(self.position)

    def update_lag(self) -> int:
        lag = max(0, self._log.head() - self.position)
        RELAY_LAG.labels(self.context).set(lag)
        return lag

"""The event bus: one JetStream stream, subjects ``<prefix>.<context>.<tenant>.<Event>``.

PostgreSQL is the source of truth and the replay source; the stream keeps
events by limits (age, bytes), not by interest, so a new consumer can start
from whatever the stream still holds and catch up the rest from PostgreSQL.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import nats
import structlog
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from infra.envelope import Envelope

log = structlog.get_logger(__name__)

_TOKEN_UNSAFE = re.compile(r"[\s.*>]")
HEADER_CONTEXT = "Kf-Context"
HEADER_POSITION = "Kf-Position"
HEADER_EVENT_TYPE = "Kf-Event-Type"
# On a message that carries several events of one context (``publish_batch``): how many.
HEADER_BATCH = "Kf-Batch"


def subject_token(value: str) -> str:
    """A value made safe for one NATS subject token."""
    return _TOKEN_UNSAFE.sub("_", value) or "_"


class StreamSettings(Protocol):
    """What the bus needs to know of its stream (the ``nats`` settings have it)."""

    @property
    def stream(self) -> str: ...
    @property
    def subject_prefix(self) -> str: ...
    @property
    def max_age_days(self) -> float: ...
    @property
    def max_bytes(self) -> int: ...
    @property
    def duplicate_window_s(self) -> float: ...


class Bus:
    def __init__(self, url: str, settings: StreamSettings) -> None:
        self.url = url
        self.settings = settings
        self.stream = settings.stream
        self.prefix = settings.subject_prefix
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None

    async def connect(self, name: str) -> None:
        self._nc = await nats.connect(
            self.url,
            name=name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=5,
        )
        self._js = self._nc.jetstream(timeout=10)

    async def close(self) -> None:
        # close(), not drain(): every publish is awaited to its ack and consumers
        # ack before they return, so nothing is in flight; drain() would wait out
        # its timeout on idle pull subscriptions.
        if self._nc is not None and not self._nc.is_closed:
            # A connection the server dropped fails to flush on close: nothing was
            # left unacknowledged (see above), so there is nothing to lose.
            with contextlib.suppress(ConnectionError, OSError):
                await self._nc.close()
        self._nc = None
        self._js = None

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("bus is not connected")
        return self._js

    @property
    def nc(self) -> NatsClient:
        if self._nc is None:
            raise RuntimeError("bus is not connected")
        return self._nc

    async def ensure_stream(self) -> None:
        config = StreamConfig(
            name=self.stream,
            subjects=[f"{self.prefix}.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            max_age=self.settings.max_age_days * 86400,
            max_bytes=self.settings.max_bytes,
            duplicate_window=self.settings.duplicate_window_s,
        )
        try:
            await self.js.stream_info(self.stream)
        except NotFoundError:
            await self.js.add_stream(config)
            log.info("stream_created", stream=self.stream)
        else:
            await self.js.update_stream(config)

    def subject(self, envelope: Envelope) -> str:
        return ".".join(
            (
                self.prefix,
                envelope.context,
                subject_token(envelope.tenant_id),
                envelope.event_type,
            )
        )

    def context_filter(self, context: str) -> str:
        return f"{self.prefix}.{context}.>"

    def event_filter(self, context: str, event_type: str) -> str:
        return f"{self.prefix}.{context}.*.{event_type}"

    async def publish(self, envelope: Envelope) -> int:
        """Publish and wait for the stream's ack; returns the stream sequence."""
        ack = await self.js.publish(
            self.subject(envelope),
            envelope.to_json(),
            stream=self.stream,
            headers={
                "Nats-Msg-Id": envelope.message_id,
                HEADER_CONTEXT: envelope.context,
                HEADER_POSITION: str(envelope.position),
                HEADER_EVENT_TYPE: envelope.event_type,
            },
        )
        return int(ack.seq)

    def batch_subject(self, context: str) -> str:
        # Three tokens: within the context's filter, outside every event filter.
        return f"{self.prefix}.{context}.batch"

    async def publish_batch(self, envelopes: Sequence[Envelope], encoded: Sequence[bytes]) -> int:
        """Publish consecutive events of one context as one message (``encoded``: each
        envelope's ``to_json``) and wait for the stream's ack; returns its sequence.

        Its position header is the last event's, so what resumes from the stream's
        newest message and what skips by header read it as that position; the message
        id names the whole range, so publishing the same batch again is a duplicate."""
        first, last = envelopes[0], envelopes[-1]
        ack = await self.js.publish(
            self.batch_subject(first.context),
            Envelope.batch_to_json(encoded),
            stream=self.stream,
            headers={
                "Nats-Msg-Id": f"{first.message_id}-{last.position}",
                HEADER_CONTEXT: first.context,
                HEADER_POSITION: str(last.position),
                HEADER_BATCH: str(len(envelopes)),
            },
        )
        return int(ack.seq)

    async def last_position(self, context: str) -> int | None:
        """Position of the newest event of ``context`` the stream holds."""
        try:
            msg = await self.js.get_last_msg(self.stream, self.context_filter(context))
        except NotFoundError:
            return None
        headers = msg.headers or {}
        if HEADER_POSITION in headers:
            return int(headers[HEADER_POSITION])
        return Envelope.from_json(msg.data or b"").position

    async def stream_bounds(self) -> tuple[int, int]:
        """(first, last) sequence the stream holds; (0, 0) when empty."""
        info = await self.js.stream_info(self.stream)
        state = info.state
        return int(state.first_seq), int(state.last_seq)


async def delete_stream(nats_url: str, stream: str) -> None:
    """Remove a stream if it exists: each one reserves its ``max_bytes`` of the server's
    JetStream storage, so a test or benchmark that made one removes it."""
    nc = await nats.connect(nats_url)
    try:
        with contextlib.suppress(NotFoundError):
            await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


@dataclass(frozen=True)
class ConsumerState:
    """What JetStream knows of a durable consumer: how much waits, and who is pulling."""

    name: str
    exists: bool
    pending: int = 0  # messages not yet delivered
    ack_pending: int = 0  # delivered, not yet acknowledged (being worked on)
    redelivered: int = 0
    waiting_pulls: int = 0  # fetches outstanding: one per worker listening now
    last_active: datetime | None = None  # when it last delivered a message


async def consumer_states(
    nats_url: str, stream: str, names: Sequence[str], timeout_s: float = 2.0
) -> list[ConsumerState]:
    """The state of each named consumer of ``stream`` (one short connection)."""
    nc = await nats.connect(
        nats_url, connect_timeout=timeout_s, max_reconnect_attempts=0, allow_reconnect=False
    )
    try:
        js = nc.jetstream(timeout=timeout_s)
        states = []
        for name in names:
            try:
                info = await js.consumer_info(stream, name)
            except NotFoundError:
                states.append(ConsumerState(name, exists=False))
                continue
            delivered = info.delivered
            states.append(
                ConsumerState(
                    name,
                    exists=True,
                    pending=int(info.num_pending or 0),
                    ack_pending=int(info.num_ack_pending or 0),
                    redelivered=int(info.num_redelivered or 0),
                    waiting_pulls=int(info.num_waiting or 0),
                    last_active=_last_active(delivered.last_active if delivered else None),
                )
            )
        return states
    finally:
        await nc.close()


def _last_active(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00")[:32])
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


async def stream_answers(nats_url: str, stream: str, timeout_s: float = 2.0) -> None:
    """Raise unless NATS answers and JetStream knows ``stream``."""
    nc = await nats.connect(
        nats_url, connect_timeout=timeout_s, max_reconnect_attempts=0, allow_reconnect=False
    )
    try:
        await nc.jetstream(timeout=timeout_s).stream_info(stream)
    finally:
        await nc.close()

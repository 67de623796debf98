"""The worker: JetStream durable pull consumers that drive the processing stages.

One consumer per stage (``worker-parse`` on ``Document.Uploaded``,
``worker-chunk`` on ``Document.Parsed``, ``worker-embed`` on
``Document.Chunked``), shared by every worker process, so workers are
stateless competing consumers and scale out. Acks are explicit and sent only
after the stage's command has been recorded; a stage that raises is
redelivered with backoff, at most ``max_deliver`` times, and on the last
attempt the document is failed with a reason rather than left stuck. Long
stages tell the server they are still working so the message is not
redelivered under them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

import structlog
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import BadRequestError, FetchTimeoutError

from domain.document import Stage
from infra.bus import Bus
from infra.envelope import Envelope
from infra.telemetry import STAGE_RETRIES
from processors.stages import DocumentRef, Outcome, Stages

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class StageSpec:
    stage: Stage
    event_type: str
    batch: int


STAGE_SPECS = (
    StageSpec(Stage.PARSE, "Document.Uploaded", 1),
    StageSpec(Stage.CHUNK, "Document.Parsed", 4),
    StageSpec(Stage.EMBED, "Document.Chunked", 16),
)


class Delivery(Protocol):
    """How long a stage may hold a message and how often it is tried (``ingest`` settings)."""

    @property
    def ack_wait_s(self) -> float: ...
    @property
    def max_deliver(self) -> int: ...


def _ref(msg: Msg) -> DocumentRef:
    envelope = Envelope.from_json(msg.data)
    return DocumentRef(tenant_id=envelope.tenant_id, document_id=UUID(envelope.aggregate_id))


class Worker:
    def __init__(self, bus: Bus, stages: Stages, settings: Delivery) -> None:
        self._bus = bus
        self._stages = stages
        self._settings = settings
        self.ready = asyncio.Event()

    def consumer_name(self, stage: Stage) -> str:
        return f"worker-{stage.value}"

    async def run(self, stop: asyncio.Event, stages: Sequence[Stage] = tuple(Stage)) -> None:
        await self._bus.ensure_stream()
        specs = [spec for spec in STAGE_SPECS if spec.stage in stages]
        subscriptions = [await self._subscribe(spec) for spec in specs]
        if Stage.EMBED in stages:
            # Load the model before taking work, so the first document does not
            # wait for it with its message's ack clock running.
            await asyncio.to_thread(lambda: self._stages.embedder)
        self.ready.set()
        log.info("worker_ready", stages=[s.stage.value for s in specs])
        await asyncio.gather(
            *(
                self._consume(spec, sub, stop)
                for spec, sub in zip(specs, subscriptions, strict=True)
            )
        )

    async def _subscribe(self, spec: StageSpec) -> object:
        js = self._bus.js
        config = ConsumerConfig(
            durable_name=self.consumer_name(spec.stage),
            filter_subject=self._bus.event_filter("documents", spec.event_type),
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self._settings.ack_wait_s,
            max_deliver=self._settings.max_deliver,
            deliver_policy=DeliverPolicy.ALL,
            max_ack_pending=1000,
        )
        with contextlib.suppress(BadRequestError):
            # Exists already (another worker created it): bind to it as it is.
            await js.add_consumer(self._bus.stream, config)
        return await js.pull_subscribe_bind(
            durable=self.consumer_name(spec.stage), stream=self._bus.stream
        )

    async def _fetch(self, subscription: object, batch: int) -> list[Msg]:
        fetch = subscription.fetch  # type: ignore[attr-defined]
        try:
            msgs: list[Msg] = await fetch(1, timeout=1.0)
        except (TimeoutError, NatsTimeoutError, FetchTimeoutError):
            return []
        if batch > 1:
            # Whatever else is already waiting joins the batch; never linger for more.
            with contextlib.suppress(TimeoutError, NatsTimeoutError, FetchTimeoutError):
                msgs += await fetch(batch - 1, timeout=0.05)
        return msgs

    async def _consume(self, spec: StageSpec, subscription: object, stop: asyncio.Event) -> None:
        executor = ThreadPoolExecutor(1, thread_name_prefix=f"stage-{spec.stage.value}")
        loop = asyncio.get_running_loop()
        try:
            while not stop.is_set():
                msgs = await self._fetch(subscription, spec.batch)
                if not msgs:
                    continue
                heartbeat = asyncio.ensure_future(self._keep_alive(msgs))
                try:
                    await self._handle(spec, msgs, loop, executor)
                finally:
                    heartbeat.cancel()
        finally:
            executor.shutdown(wait=True, cancel_futures=True)

    async def _keep_alive(self, msgs: list[Msg]) -> None:
        interval = max(1.0, self._settings.ack_wait_s / 3)
        while True:
            await asyncio.sleep(interval)
            for msg in msgs:
                with contextlib.suppress(Exception):
                    await msg.in_progress()

    def _runner(self, spec: StageSpec) -> Callable[[list[DocumentRef]], list[Outcome]]:
        if spec.stage is Stage.PARSE:
            return lambda refs: [self._stages.parse(ref) for ref in refs]
        if spec.stage is Stage.CHUNK:
            return lambda refs: [self._stages.chunk(ref) for ref in refs]
        return self._stages.embed

    async def _handle(
        self,
        spec: StageSpec,
        msgs: list[Msg],
        loop: asyncio.AbstractEventLoop,
        executor: ThreadPoolExecutor,
    ) -> None:
        run = self._runner(spec)
        refs = [_ref(msg) for msg in msgs]
        try:
            await loop.run_in_executor(executor, run, refs)
        except Exception:
            if len(msgs) > 1:
                # Isolate the message that fails so it does not hold back the others.
                for msg, ref in zip(msgs, refs, strict=True):
                    await self._handle_one(spec, msg, ref, run, loop, executor)
                return
            await self._retry_or_give_up(spec, msgs[0], refs[0], loop, executor)
            return
        for msg in msgs:
            await msg.ack()

    async def _handle_one(
        self,
        spec: StageSpec,
        msg: Msg,
        ref: DocumentRef,
        run: Callable[[list[DocumentRef]], list[Outcome]],
        loop: asyncio.AbstractEventLoop,
        executor: ThreadPoolExecutor,
    ) -> None:
        try:
            await loop.run_in_executor(executor, run, [ref])
        except Exception:
            await self._retry_or_give_up(spec, msg, ref, loop, executor)
        else:
            await msg.ack()

    async def _retry_or_give_up(
        self,
        spec: StageSpec,
        msg: Msg,
        ref: DocumentRef,
        loop: asyncio.AbstractEventLoop,
        executor: ThreadPoolExecutor,
    ) -> None:
        attempts = msg.metadata.num_delivered or 1
        log.exception(
            "stage_error",
            stage=spec.stage.value,
            attempt=attempts,
            tenant_id=ref.tenant_id,
            document_id=str(ref.document_id),
        )
        STAGE_RETRIES.labels(spec.stage.value).inc()
        if attempts < self._settings.max_deliver:
            await msg.nak(delay=min(2.0**attempts, 60.0))
            return
        # JetStream will not deliver this message again, so recording the failure
        # is this worker's job now: keep trying while the store is unreachable.
        delay = 0.5
        for _ in range(12):
            try:
                await loop.run_in_executor(
                    executor,
                    self._stages.fail_after_retries,
                    ref,
                    spec.stage,
                    attempts,
                    "see the worker log",
                )
                break
            except Exception:
                log.exception(
                    "stage_give_up_failed", stage=spec.stage.value, document_id=str(ref.document_id)
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        await msg.ack()

"""The worker: JetStream durable pull consumers that drive the processing stages.

One consumer per stage (``worker-parse`` on ``Document.Uploaded``,
``worker-chunk`` on ``Document.Parsed``, ``worker-embed`` on
``Document.Chunked``; and ``worker-<stage>-restored`` on ``Document.Restored``,
for a document restored from the trash mid-processing), shared by every worker
process, so workers are
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
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol
from uuid import UUID

import structlog
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import BadRequestError, FetchTimeoutError

from domain.activity import DeadLetter, DeadLetterBox, ParkedMessage
from domain.document import Stage
from infra.bus import Bus
from infra.envelope import Envelope
from infra.telemetry import DEAD_LETTERS, STAGE_RETRIES
from processors.specs import STAGE_SPECS, StageSpec
from processors.stages import DocumentRef, Outcome, Stages, StageStopped

log = structlog.get_logger(__name__)


class Delivery(Protocol):
    """How long a stage may hold a message and how often it is tried (``ingest`` settings)."""

    @property
    def ack_wait_s(self) -> float: ...
    @property
    def max_deliver(self) -> int: ...


def _component(stage: Stage) -> str:
    return f"worker:{stage.value}"


def _subject(ref: DocumentRef) -> str:
    """What a worker parks: the document (a retry sends it through the stage again)."""
    return f"document:{ref.document_id}"


def _ref(msg: Msg) -> DocumentRef:
    envelope = Envelope.from_json(msg.data)
    return DocumentRef(tenant_id=envelope.tenant_id, document_id=UUID(envelope.aggregate_id))


class Worker:
    def __init__(
        self,
        bus: Bus,
        stages: Stages,
        settings: Delivery,
        dead_letters: DeadLetterBox | None = None,
    ) -> None:
        self._bus = bus
        self._stages = stages
        self._settings = settings
        self._dead_letters = dead_letters
        self.ready = asyncio.Event()
        self._stop: asyncio.Event | None = None

    async def run(self, stop: asyncio.Event, stages: Sequence[Stage] = tuple(Stage)) -> None:
        self._stop = stop
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
            self._last_deliveries(specs, stop),
            *(
                self._consume(spec, sub, stop)
                for spec, sub in zip(specs, subscriptions, strict=True)
            ),
        )

    async def _subscribe(self, spec: StageSpec) -> object:
        js = self._bus.js
        config = ConsumerConfig(
            durable_name=spec.consumer,
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
        return await js.pull_subscribe_bind(durable=spec.consumer, stream=self._bus.stream)

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
                try:
                    msgs = await self._fetch(subscription, spec.batch)
                except Exception as exc:  # NATS gone: the client reconnects; wait for it
                    log.warning("worker_fetch_failed", stage=spec.consumer, error=repr(exc))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 1.0)
                    continue
                if not msgs:
                    continue
                heartbeat = asyncio.ensure_future(self._keep_alive(msgs))
                try:
                    await self._handle(spec, msgs, loop, executor)
                finally:
                    heartbeat.cancel()
        finally:
            executor.shutdown(wait=True, cancel_futures=True)

    async def _give_up(
        self,
        spec: StageSpec,
        ref: DocumentRef,
        envelope: Envelope,
        attempts: int,
        error_name: str,
        error: str,
        loop: asyncio.AbstractEventLoop,
        executor: ThreadPoolExecutor,
    ) -> None:
        """Fail the document at the stage (if it still waits for it) and park it; keep
        trying while the store is unreachable."""

        def give_up() -> None:
            outcome = self._stages.fail_after_retries(ref, spec.stage, attempts, error_name)
            if self._dead_letters is not None and outcome is not Outcome.SKIPPED:
                self._dead_letters.park(
                    ParkedMessage(
                        tenant_id=ref.tenant_id,
                        component=_component(spec.stage),
                        subject=_subject(ref),
                        context=envelope.context,
                        position=envelope.position,
                        event_type=envelope.event_type,
                        aggregate_id=envelope.aggregate_id,
                        attempts=attempts,
                        error=error,
                    )
                )
                DEAD_LETTERS.labels(_component(spec.stage)).inc()

        delay = 0.5
        for _ in range(12):
            try:
                await loop.run_in_executor(executor, give_up)
                return
            except Exception:
                log.exception(
                    "stage_give_up_failed", stage=spec.stage.value, document_id=str(ref.document_id)
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _last_deliveries(self, specs: list[StageSpec], stop: asyncio.Event) -> None:
        """JetStream's advisory that a message used its last delivery without an ack (the
        worker that had it died, or the delivery never reached one): nothing will deliver
        it again, so give up on it here as if its last attempt had failed. One worker
        takes each advisory (a queue group); a document no longer waiting is left alone."""
        by_consumer = {spec.consumer: spec for spec in specs}
        subject = f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{self._bus.stream}.*"
        subscription = await self._bus.nc.subscribe(subject, queue="kf-worker-max-deliveries")
        executor = ThreadPoolExecutor(1, thread_name_prefix="stage-max-deliveries")
        loop = asyncio.get_running_loop()
        try:
            while not stop.is_set():
                try:
                    advisory = await subscription.next_msg(timeout=1.0)
                except TimeoutError:
                    continue
                try:
                    data = json.loads(advisory.data)
                    spec = by_consumer.get(str(data.get("consumer")))
                    if spec is None:
                        continue
                    stored = await self._bus.js.get_msg(self._bus.stream, int(data["stream_seq"]))
                    envelope = Envelope.from_json(stored.data or b"")
                    ref = DocumentRef(envelope.tenant_id, UUID(envelope.aggregate_id))
                    attempts = int(data.get("deliveries") or self._settings.max_deliver)
                    log.warning(
                        "stage_deliveries_exhausted",
                        stage=spec.stage.value,
                        consumer=spec.consumer,
                        document_id=str(ref.document_id),
                        deliveries=attempts,
                    )
                    await self._give_up(
                        spec, ref, envelope, attempts, "no acknowledgement",
                        "no acknowledgement: the last delivery was never answered (a worker "
                        "that died with it, or a delivery lost on the way)",
                        loop, executor,
                    )  # fmt: skip
                except Exception:
                    log.exception("stage_max_deliveries_failed", advisory=advisory.data[:500])
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

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
        return lambda refs: self._stages.embed(refs, self._stopping)

    def _stopping(self) -> bool:
        """Whether the worker is asked to stop (read from a stage's thread)."""
        return self._stop is not None and self._stop.is_set()

    @staticmethod
    async def _hand_back(msgs: list[Msg]) -> None:
        """A stage gave up because the worker stops: its messages go back at once, to be
        delivered again (to the next worker) without counting as a failure's retry."""
        for msg in msgs:
            with contextlib.suppress(Exception):  # else redelivered after the ack wait
                await msg.nak()
        log.info("stage_handed_back", messages=len(msgs))

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
            outcomes = await loop.run_in_executor(executor, run, refs)
        except StageStopped:
            await self._hand_back(msgs)
            return
        except Exception as error:
            if len(msgs) > 1:
                # Isolate the message that fails so it does not hold back the others.
                for msg, ref in zip(msgs, refs, strict=True):
                    await self._handle_one(spec, msg, ref, run, loop, executor)
                return
            await self._retry_or_give_up(spec, msgs[0], refs[0], error, loop, executor)
            return
        await self._went_through(spec, refs, outcomes, loop, executor)
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
            outcomes = await loop.run_in_executor(executor, run, [ref])
        except StageStopped:
            await self._hand_back([msg])
        except Exception as error:
            await self._retry_or_give_up(spec, msg, ref, error, loop, executor)
        else:
            await self._went_through(spec, [ref], outcomes, loop, executor)
            await msg.ack()

    async def _went_through(
        self,
        spec: StageSpec,
        refs: list[DocumentRef],
        outcomes: list[Outcome],
        loop: asyncio.AbstractEventLoop,
        executor: ThreadPoolExecutor,
    ) -> None:
        """A retried document that went through its stage resolves its dead letter."""
        if self._dead_letters is None or spec.event_type != "Document.Retried":
            return
        component = _component(spec.stage)
        for ref, outcome in zip(refs, outcomes, strict=True):
            if outcome is not Outcome.SKIPPED:
                letter = DeadLetter.id_for(component, _subject(ref))
                with contextlib.suppress(Exception):  # the letter can be resolved by hand
                    await loop.run_in_executor(
                        executor, self._dead_letters.resolve, letter, component
                    )

    async def _retry_or_give_up(
        self,
        spec: StageSpec,
        msg: Msg,
        ref: DocumentRef,
        error: Exception,
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
        # (and parking the dead letter) is this worker's job now.
        envelope = Envelope.from_json(msg.data)
        await self._give_up(
            spec, ref, envelope, attempts, type(error).__name__, f"{type(error).__name__}: {error}",
            loop, executor,
        )  # fmt: skip
        await msg.ack()

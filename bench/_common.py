"""What the benchmarks share: starting `kf serve`, running `kf` commands, percentiles."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
BANNER = re.compile(r"Knowledge Foundry is running: (http://\S+)")


def start_serve(
    data_dir: Path, log_path: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str, str]:
    """Start `kf serve` on ``data_dir``; returns the process, its URL and the admin key.

    Rate limits are off: a benchmark measures what the platform can do, and a
    single bench client would exhaust any per-key budget in seconds.
    """
    base_env = env or {**os.environ, "KF_LOG_LEVEL": "warning"}
    base_env = {**base_env, "KF__RATE_LIMITS__ENABLED": "false"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "config.cli",
                "serve",
                "--data-dir",
                str(data_dir),
                "--port",
                "0",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=base_env,
            cwd=ROOT,
        )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        match = BANNER.search(log_path.read_text(errors="replace"))
        if match:
            return process, match.group(1), (data_dir / "admin-key").read_text().strip()
        if process.poll() is not None:
            raise SystemExit(log_path.read_text()[-3000:])
        time.sleep(0.2)
    raise SystemExit("kf serve did not start")


def kf(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, object]:
    """Run a `kf` command on ``data_dir`` and return its last JSON line."""
    done = subprocess.run(
        [sys.executable, "-m", "config.cli", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=env,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def pct(values: list[float], q: float) -> float:
    """The q-quantile of values (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _group(process: psutil.Process, serve_pid: int) -> str:
    try:
        name = process.name()
        if process.pid == serve_pid:
            return "serve"
        if serve_pid in {p.pid for p in process.parents()}:
            return "serve_children"
        if name.startswith("postgres"):
            return "postgres"
        if name.startswith("nats"):
            return "nats"
    except psutil.Error:
        pass
    return "other"


def cpu_by_group(serve_pid: int) -> dict[str, float]:
    """CPU seconds (user + system) spent so far by each group of the machine's processes."""
    spent: dict[str, float] = {}
    for process in psutil.process_iter():
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        group = _group(process, serve_pid)
        spent[group] = spent.get(group, 0.0) + times.user + times.system
    return spent

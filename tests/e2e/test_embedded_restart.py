"""Issue 15, point 1 (embedded default): a NATS that dies under `kf serve` is started again
on the same port with the same store, and every component resumes where it was.

The real `kf serve` on its embedded PostgreSQL and NATS; the NATS child is SIGKILLed a
moment into ingestion, as an operator would see it die.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e.test_serve_cli import Serve, _config

pytestmark = pytest.mark.timeout(900)


def _nats(data_dir: Path) -> psutil.Process:
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if "nats-server" in cmdline and str(data_dir) in cmdline:
            return process
    raise AssertionError("no embedded nats-server")


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    data_dir = tmp_path_factory.mktemp("kf-restart")
    running = Serve(data_dir, data_dir.parent / "serve-restart.log", _config(data_dir))
    yield running
    if running.process.poll() is None:
        assert running.stop() == 0


def test_a_killed_nats_comes_back_on_its_port_and_ingestion_finishes(serve: Serve) -> None:
    data_dir = serve.data_dir
    key = (data_dir / "admin-key").read_text().strip()
    headers = {"Authorization": f"Bearer {key}"}
    port = int((data_dir / "nats" / "port").read_text())
    first = _nats(data_dir)
    assert f"-p {port}" in " ".join(first.cmdline())
    ids = []
    with httpx.Client(base_url=serve.url, headers=headers, timeout=60) as client:
        for i in range(12):
            body = f"Document {i} about restarts: the broker died and came back {i} times."
            uploaded = client.post(
                "/v1/documents", files={"file": (f"restart-{i}.txt", body.encode(), "text/plain")}
            )
            assert uploaded.status_code == 202, uploaded.text
            ids.append(uploaded.json()["id"])
            if i == 3:
                os.kill(first.pid, signal.SIGKILL)  # mid-ingestion
        deadline = time.monotonic() + 240
        statuses: dict[str, str] = {}
        while time.monotonic() < deadline:
            # One request a round: the admin key's rate limit is on, as in production.
            listed = client.get("/v1/documents", params={"limit": 200})
            if listed.status_code == 200:
                known = {d["id"]: d["status"] for d in listed.json()["items"]}
                statuses = {d: known.get(d, "not yet listed") for d in ids}
                if all(s in ("embedded", "failed") for s in statuses.values()):
                    break
            time.sleep(1)
        assert set(statuses.values()) == {"embedded"}, statuses
        second = _nats(data_dir)
        assert second.pid != first.pid
        assert f"-p {port}" in " ".join(second.cmdline())
        assert int((data_dir / "nats" / "port").read_text()) == port
        # Each document was processed once: one Embedded event each, read back from the
        # audit trail the projectors built after the restart too.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            lag = client.get("/v1/projections").json()["components"]
            if all(c["lag"] == 0 for c in lag):
                break
            time.sleep(0.5)
        assert all(c["lag"] == 0 for c in lag), lag
        embedded = client.get(
            "/v1/audit/events", params={"action": "Document.Embedded", "limit": 100}
        ).json()["items"]
        assert sorted(e["resource"]["id"] for e in embedded) == sorted(ids)
        ready = client.get("/health/ready")
        assert ready.status_code == 200, ready.text
    assert "embedded_nats_restarted" in serve.output()

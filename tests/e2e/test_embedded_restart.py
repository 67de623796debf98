"""Issue 15, points 1 and 2 (embedded default): a NATS or a PostgreSQL that dies under
`kf serve` is started again on the same port (socket) with the same store, and every
component resumes where it was.

The real `kf serve` on its embedded PostgreSQL and NATS; the child is SIGKILLed a moment
into ingestion, as an operator would see it die.
"""

from __future__ import annotations

import json
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


def _upload(client: httpx.Client, name: str, body: str) -> httpx.Response:
    return client.post("/v1/documents", files={"file": (name, body.encode(), "text/plain")})


def _all_embedded_once(client: httpx.Client, ids: list[str]) -> None:
    """Every document reaches one final state, embedded; the read models catch up; each
    was embedded exactly once (one Document.Embedded each in the audit trail the
    projectors built, across the restart)."""
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
    deadline = time.monotonic() + 60
    lag: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        answered = client.get("/v1/projections")
        if answered.status_code == 200:
            lag = answered.json()["components"]
            if all(c["lag"] == 0 for c in lag):
                break
        time.sleep(0.5)
    assert lag and all(c["lag"] == 0 for c in lag), lag
    embedded = client.get(
        "/v1/audit/events", params={"action": "Document.Embedded", "limit": 100}
    ).json()["items"]
    mine = [e["resource"]["id"] for e in embedded if e["resource"]["id"] in set(ids)]
    assert sorted(mine) == sorted(ids)
    ready = client.get("/health/ready")
    assert ready.status_code == 200, ready.text


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
            uploaded = _upload(client, f"restart-{i}.txt", body)
            assert uploaded.status_code == 202, uploaded.text
            ids.append(uploaded.json()["id"])
            if i == 3:
                os.kill(first.pid, signal.SIGKILL)  # mid-ingestion
        _all_embedded_once(client, ids)
        second = _nats(data_dir)
        assert second.pid != first.pid
        assert f"-p {port}" in " ".join(second.cmdline())
        assert int((data_dir / "nats" / "port").read_text()) == port
    assert "embedded_nats_restarted" in serve.output()


def _postmaster(data_dir: Path) -> psutil.Process:
    pid = int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
    return psutil.Process(pid)


def test_a_killed_postgres_comes_back_and_commands_meanwhile_get_503(serve: Serve) -> None:
    data_dir = serve.data_dir
    key = (data_dir / "admin-key").read_text().strip()
    headers = {"Authorization": f"Bearer {key}"}
    first = _postmaster(data_dir)
    ids: list[str] = []
    refusals: list[httpx.Response] = []
    with httpx.Client(base_url=serve.url, headers=headers, timeout=60) as client:
        for i in range(12):
            body = f"Ledger {i} of the outage: the database died and came back after {i}."
            deadline = time.monotonic() + 60
            while True:
                uploaded = _upload(client, f"pg-restart-{i}.txt", body)
                if uploaded.status_code != 503 or time.monotonic() > deadline:
                    break
                refusals.append(uploaded)
                time.sleep(min(float(uploaded.headers.get("Retry-After", "1")), 2.0))
            assert uploaded.status_code == 202, uploaded.text
            ids.append(uploaded.json()["id"])
            if i == 3:
                os.kill(first.pid, signal.SIGKILL)  # mid-ingestion
        # Refused commands said why and when to come back; none was half-written (every
        # accepted upload is embedded once, below, and no other document appeared).
        for refused in refusals:
            assert refused.headers.get("Retry-After"), refused.headers
            assert refused.json()["code"] == "database_unavailable", refused.text
        _all_embedded_once(client, ids)
        listed = client.get("/v1/documents", params={"limit": 200}).json()["items"]
        assert sorted(d["id"] for d in listed if d["filename"].startswith("pg-restart-")) == sorted(
            ids
        )
    second = _postmaster(data_dir)
    assert second.pid != first.pid and not first.is_running()
    assert "embedded_postgres_restarted" in serve.output()
    # No request anywhere in kf serve was answered with a server error other than 503.
    answered = [
        json.loads(line) for line in serve.output().splitlines() if '"http_request"' in line
    ]
    assert answered and not [a for a in answered if a["status"] >= 500 and a["status"] != 503]

"""``kf serve`` on its embedded default, and the CLI beside it, as a new user runs them.

Always embedded (that is what is under test), whatever KF_TEST_SERVICES says.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from projections.read_models import names
from tests.harness import shared_model_cache, shared_query_embedder

pytestmark = pytest.mark.timeout(900)
BANNER = re.compile(r"Knowledge Foundry is running: (http://\S+)")


def _clean_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KF")}
    env["KF_DATA_DIR"] = str(data_dir)
    # The session's one ONNX export (tests/integration/test_query_embedding.py tests exporting).
    env["KF_MODEL_CACHE_DIR"] = str(shared_model_cache())
    return env


class Serve:
    def __init__(self, data_dir: Path, log: Path, config: Path) -> None:
        self.data_dir = data_dir
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "config.cli",
                    "serve",
                    "--data-dir",
                    str(data_dir),
                    "--port",
                    "0",
                    "--config",
                    str(config),
                ],
                env=_clean_env(data_dir),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.url = self._wait_for_banner()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def _wait_for_banner(self, timeout: float = 240) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = BANNER.search(self.output())
            if match:
                return match.group(1)
            assert self.process.poll() is None, self.output()[-4000:]
            time.sleep(0.2)
        raise AssertionError(f"no banner:\n{self.output()[-4000:]}")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(60)


def kf(data_dir: Path, *args: str) -> dict[str, object]:
    completed = subprocess.run(
        [sys.executable, "-m", "config.cli", *args, "--data-dir", str(data_dir)],
        env=_clean_env(data_dir),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {"stdout": completed.stdout}


def _servers_for(data_dir: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if str(data_dir) in cmdline and ("postgres" in cmdline or "nats-server" in cmdline):
            found.append(process)
    return found


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kf-home")


def _config(data_dir: Path) -> Path:
    """A settings file: what kf serve's children must read too (they get no arguments)."""
    path = data_dir.parent / "kf.yaml"
    path.write_text(
        "audit:\n"
        f"  checkpoint_dir: {data_dir.parent / 'checkpoints-from-config'}\n"
        "  checkpoint_every_events: 1\n"
    )
    return path


@pytest.fixture(scope="module")
def serve(data_dir: Path) -> Iterator[Serve]:
    shared_query_embedder()  # the export exists before the server looks for it
    running = Serve(data_dir, data_dir.parent / "serve-1.log", _config(data_dir))
    yield running
    if running.process.poll() is None:
        running.stop()


def test_first_start_prints_url_and_an_admin_key_kept_in_an_owner_only_file(
    serve: Serve, data_dir: Path
) -> None:
    key_file = data_dir / "admin-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    assert key in serve.output()
    response = httpx.get(f"{serve.url}/v1/documents", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200 and response.json()["items"] == []
    # Beside the key, a one-time link for the first admin to choose a password.
    (link,) = re.findall(r"http://\S+/ui/set-password#token=kfl_\S+", serve.output())
    assert "Set the password of admin@localhost (admin)" in serve.output()
    token = link.split("#token=")[1]
    password = "the first operator's long phrase"
    chosen = httpx.post(
        f"{serve.url}/v1/auth/password", json={"token": token, "password": password}
    )
    assert chosen.status_code == 200 and chosen.json()["user"]["role"] == "admin", chosen.text
    signed = httpx.post(
        f"{serve.url}/v1/auth/login", json={"email": "admin@localhost", "password": password}
    )
    assert signed.status_code == 200 and "kf_session" in signed.cookies


def test_upload_reaches_embedded_through_the_embedded_servers(serve: Serve, data_dir: Path) -> None:
    key = (data_dir / "admin-key").read_text().strip()
    with httpx.Client(
        base_url=serve.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        accepted = client.post(
            "/v1/documents",
            files={"file": ("hello.md", b"# Hello\n\nEmbedded servers work.", "text/markdown")},
        ).json()
        deadline = time.monotonic() + 240
        status = None
        while time.monotonic() < deadline:
            status = client.get(f"/v1/documents/{accepted['id']}").json().get("status")
            if status == "embedded":
                break
            time.sleep(1.0)  # the default rate limits apply here, as for any client
        assert status == "embedded"
        metrics = client.get("/metrics").text
        assert (
            'kf_stage_duration_seconds_count{stage="embed"}' in metrics
        )  # from the worker process


def test_reads_are_audited_by_child_processes_that_read_the_same_settings(
    serve: Serve, data_dir: Path
) -> None:
    processes = psutil.Process(serve.process.pid).children()
    children = {" ".join(c.cmdline()[3:]): c.nice() for c in processes}
    background = {
        "relay --context activity --nice 10",
        "project dead_letters --group audit,readers,usage --nice 10",
    }
    assert background <= set(children), children
    # They yield the CPU to the API process (projections.background_nice).
    assert {children[c] for c in background} == {psutil.Process(serve.process.pid).nice() + 10}
    key = (data_dir / "admin-key").read_text().strip()
    headers = {"Authorization": f"Bearer {key}"}
    httpx.get(f"{serve.url}/v1/documents", headers=headers)
    checkpoints = data_dir.parent / "checkpoints-from-config"
    deadline = time.monotonic() + 60
    reads: list[object] = []
    while time.monotonic() < deadline:
        reads = httpx.get(
            f"{serve.url}/v1/audit/events", params={"action": "Read.*"}, headers=headers
        ).json()["items"]
        if reads and list(checkpoints.glob("*/*.json")):
            break
        time.sleep(0.5)
    assert reads, "no read reached the audit trail"
    # The child projector signs checkpoints where the file given to kf serve says.
    assert list(checkpoints.glob("*/*.json")), sorted(str(p) for p in checkpoints.rglob("*"))


def test_cli_manages_tenants_and_keys_beside_the_running_server(
    serve: Serve, data_dir: Path
) -> None:
    tenant = kf(data_dir, "tenants", "create", "acme")
    assert tenant["name"] == "acme"
    issued = kf(
        data_dir, "keys", "issue", "--tenant", "acme", "--role", "viewer", "--name", "reader"
    )
    key = str(issued["key"])
    with httpx.Client(base_url=serve.url, headers={"Authorization": f"Bearer {key}"}) as client:
        assert (
            client.get("/v1/documents").json()["items"] == []
        )  # acme sees none of default's documents
        assert client.post("/v1/documents", files={"file": ("x.txt", b"no")}).status_code == 403
        listed = kf(data_dir, "keys", "list", "--tenant", "acme")
        assert listed["key_id"] == issued["key_id"] and listed["revoked_at"] is None
        assert key.split("_", 2)[2] not in json.dumps(listed)
        kf(data_dir, "keys", "revoke", "--tenant", "acme", str(issued["key_id"]))
        assert client.get("/v1/documents").status_code == 401
        assert kf(data_dir, "keys", "list", "--tenant", "acme")["revoked_at"] is not None
        assert kf(data_dir, "keys", "list", "--tenant", "acme", "--active") == {"stdout": ""}
    status = kf(data_dir, "projections", "status")["stdout"]
    assert "catalog" in str(status) and "relay-documents" in str(status)


def test_rebuild_index_through_the_running_server(serve: Serve, data_dir: Path) -> None:
    result = kf(data_dir, "rebuild-index", "--projection", "all")
    assert result["state"] == "done", result
    assert result["matches_live"] is True
    assert result["events"] >= 4 and result["chunks"] >= 1
    assert {name: r["matches_live"] for name, r in result["results"].items()} == dict.fromkeys(
        names(), True
    )
    one = kf(data_dir, "rebuild-index", "--projection", "keys")
    assert one["state"] == "done" and one["projections"] == ["keys"] and one["matches_live"]
    unknown = subprocess.run(
        [sys.executable, "-m", "config.cli", "rebuild-index", "--projection", "nothing",
         "--data-dir", str(data_dir)],
        env=_clean_env(data_dir), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert unknown.returncode == 2 and "catalog" in unknown.stderr, unknown.stderr
    key = (data_dir / "admin-key").read_text().strip()
    hits = httpx.get(
        f"{serve.url}/v1/search",
        params={"q": "embedded servers", "mode": "hybrid"},
        headers={"Authorization": f"Bearer {key}"},
    ).json()
    assert [r["filename"] for r in hits["results"]] == ["hello.md"]


def test_stop_is_clean_and_a_restart_keeps_everything(serve: Serve, data_dir: Path) -> None:
    children = psutil.Process(serve.process.pid).children(recursive=True)
    assert serve.stop() == 0
    time.sleep(1)
    assert _servers_for(data_dir) == []
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    offline = kf(data_dir, "rebuild-index", "--projection", "search")  # no server: in-process
    assert offline["state"] == "done" and offline["matches_live"] is True, offline
    again = Serve(data_dir, data_dir.parent / "serve-2.log", _config(data_dir))
    try:
        assert "Admin API key:                in" in again.output()
        assert "as admin@localhost" in again.output()  # the password was set: no new link
        assert "set-password" not in again.output()
        key = (data_dir / "admin-key").read_text().strip()
        listed = httpx.get(
            f"{again.url}/v1/documents", headers={"Authorization": f"Bearer {key}"}
        ).json()
        assert [d["filename"] for d in listed["items"]] == ["hello.md"]
        hits = httpx.get(
            f"{again.url}/v1/search",
            params={"q": "embedded servers", "mode": "keyword"},
            headers={"Authorization": f"Bearer {key}"},
        ).json()
        assert [r["filename"] for r in hits["results"]] == ["hello.md"]  # the rebuilt shard
    finally:
        assert again.stop() == 0

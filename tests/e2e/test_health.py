"""Health that tells the truth: live while the process serves, ready only when what it
needs answers, with the reasons when not (against the real PostgreSQL, NATS and index)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.harness import RunningSystem

ROOT = Path(__file__).resolve().parents[2]


def _ready(system: RunningSystem) -> httpx.Response:
    return httpx.get(f"{system.base_url}/health/ready", timeout=30)


@pytest.fixture
def app_state(system: RunningSystem) -> Iterator[object]:
    assert system.server is not None
    state = system.server.config.app.state  # type: ignore[attr-defined]
    saved = dict(state.readiness)
    yield state
    state.readiness = saved


def test_live_and_ready_when_everything_answers(system: RunningSystem) -> None:
    assert httpx.get(f"{system.base_url}/health/live").json() == {"status": "live"}
    deadline = time.monotonic() + 60  # a worker that has just started is not listening yet
    ready = _ready(system)
    while ready.status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
        ready = _ready(system)
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["status"] == "ready" and body["reasons"] == []
    assert set(body["checks"]) == {"postgres", "nats", "index", "projections", "workers"}
    assert all(check["ok"] for check in body["checks"].values())
    metrics = httpx.get(f"{system.base_url}/metrics").text
    assert 'kf_dependency_up{dependency="nats"} 1.0' in metrics


def test_not_ready_names_the_dependency_and_why(system: RunningSystem, app_state: object) -> None:
    # The same checks the process runs, pointed at a NATS and a PostgreSQL that are not there.
    from config.root import Container, Endpoints

    gone = Container.__new__(Container)
    gone.settings = system.settings
    gone.endpoints = Endpoints("postgresql://postgres@127.0.0.1:1/none", "nats://127.0.0.1:1")
    broken = Container.readiness_checks(gone, "write")
    state = app_state
    state.readiness = {**state.readiness, **broken}  # type: ignore[attr-defined]
    refused = _ready(system)
    assert refused.status_code == 503
    body = refused.json()
    assert body["status"] == "not_ready"
    failing = {reason.split(":", 1)[0] for reason in body["reasons"]}
    assert failing == {"postgres", "nats", "workers"}
    assert body["checks"]["index"]["ok"] and body["checks"]["projections"]["ok"]
    assert all(body["checks"][name]["reason"] for name in failing)
    metrics = httpx.get(f"{system.base_url}/metrics").text
    assert 'kf_dependency_up{dependency="postgres"} 0.0' in metrics
    assert httpx.get(f"{system.base_url}/health/live").status_code == 200


def test_kubernetes_probes_and_the_alert_use_them() -> None:
    manifests = list(yaml.safe_load_all((ROOT / "deploy/k8s/knowledge-foundry.yaml").read_text()))
    api = next(
        m
        for m in manifests
        if m and m["metadata"]["name"] == "kf-api" and m["kind"] == "Deployment"
    )
    (container,) = api["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    rules = yaml.safe_load((ROOT / "deploy/prometheus/rules.yaml").read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    assert "kf_dependency_up" in alerts["KfDependencyDown"]["expr"]

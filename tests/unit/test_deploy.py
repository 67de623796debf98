"""The multi-process deployment files: every role that searches reaches the Qdrant server.

Structural checks always run; ``docker compose config`` validates the compose
file where a compose implementation exists (skipped, with the reason, where
not: the CI machine has the docker client but no engine and no compose).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
SEARCHING_ROLES = {"api", "read-api", "write-api", "project"}
SECRETS = {
    "KF_DB_PASSWORD": "db-password",
    "KF_DB_READER_PASSWORD": "reader-password",
    "KF_JWT_SECRET": "x" * 48,
}


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def _role(service: dict[str, Any]) -> str | None:
    command = service.get("command")
    return str(command[0]) if isinstance(command, list) and command else None


def test_compose_runs_a_qdrant_server_that_every_searching_role_is_pointed_at() -> None:
    services = _compose()["services"]
    assert "qdrant" in services
    roles = {name: _role(s) for name, s in services.items() if _role(s)}
    assert SEARCHING_ROLES - {"api"} <= set(roles.values())
    for name, service in services.items():
        role = _role(service)
        if role in SEARCHING_ROLES:
            assert service["environment"]["KF_QDRANT_URL"] == "http://qdrant:6333", name
            assert "qdrant" in service["depends_on"], name


def test_compose_roles_start_after_the_schema_is_migrated() -> None:
    services = _compose()["services"]
    assert services["migrate"]["command"] == ["migrate"]
    for name, service in services.items():
        role = _role(service)
        if role is None or role == "migrate" or name in ("postgres", "nats", "redis", "qdrant"):
            continue
        assert service["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }, name


def test_kubernetes_runs_qdrant_and_gives_every_role_its_url() -> None:
    documents = [
        d for d in yaml.safe_load_all((DEPLOY / "k8s" / "knowledge-foundry.yaml").read_text()) if d
    ]
    by_kind: dict[tuple[str, str], dict[str, Any]] = {
        (d["kind"], d["metadata"]["name"]): d for d in documents
    }
    assert by_kind[("ConfigMap", "kf-config")]["data"]["KF_QDRANT_URL"] == "http://kf-qdrant:6333"
    assert ("StatefulSet", "kf-qdrant") in by_kind and ("Service", "kf-qdrant") in by_kind
    for name in ("kf-api", "kf-project", "kf-relay", "kf-worker"):
        (container,) = by_kind[("Deployment", name)]["spec"]["template"]["spec"]["containers"]
        assert {"configMapRef": {"name": "kf-config"}} in container["envFrom"], name


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy is not None else None


def test_docker_compose_accepts_the_file() -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("no docker compose here: the docker client has no compose plugin")
    env = {**os.environ, **SECRETS}
    done = subprocess.run(
        [*command, "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    unset = {k: v for k, v in env.items() if k != "KF_JWT_SECRET"}
    refused = subprocess.run(
        [*command, "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        env=unset,
        check=False,
        timeout=120,
    )
    assert refused.returncode != 0 and "KF_JWT_SECRET" in refused.stderr


# ------------------------------------------------------------------ grafana

DASHBOARD = DEPLOY / "grafana" / "knowledge-foundry.json"


def _exported_series() -> set[str]:
    """Every series name the app exports (counters' _total, histograms' _bucket/_count/_sum)."""
    from prometheus_client.metrics import MetricWrapperBase

    from infra import telemetry

    names: set[str] = set()
    for value in vars(telemetry).values():
        if isinstance(value, MetricWrapperBase):
            name, kind = value._name, value._type
            if kind == "counter":
                names |= {name, f"{name}_total"}
            elif kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
            else:
                names.add(name)
    return names


def test_the_grafana_dashboard_is_valid_and_queries_only_metrics_the_app_exports() -> None:
    import json
    import re

    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in ("cost", "tokens", "budget", "latency", "ingestion", "projection lag"):
        assert topic in titles, topic
    exported = _exported_series()
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used = set(re.findall(r"\bkf_[a-z_]+", target["expr"]))
            assert used and used <= exported, (panel["title"], used - exported)
    assert len({p["id"] for p in panels}) == len(panels)


def test_every_alert_rule_queries_only_metrics_the_app_exports() -> None:
    import re

    import yaml

    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules.yaml").read_text())
    alerts = {r["alert"]: r for group in rules["groups"] for r in group["rules"]}
    assert {"KfDependencyDown", "KfDeadLetters", "KfProjectionStopped"} <= set(alerts)
    exported = _exported_series()
    for name, rule in alerts.items():
        used = set(re.findall(r"\bkf_[a-z_]+", rule["expr"]))
        assert used and used <= exported, (name, used - exported)

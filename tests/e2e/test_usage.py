"""Usage over HTTP: who reads what, figures that add up, CSV, and refusals with codes.

Questions are answered by a local OpenAI-protocol server (``test-priced`` has a
price, ``test-unpriced`` has none) and by the extractive provider (priced at 0).
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest

from domain.access import Role
from tests.e2e.qa_fixtures import corpus, llm_server, system
from tests.harness import RunningSystem
from tests.http import assert_error

__all__ = ["corpus", "llm_server", "system"]  # fixtures used by name


def _key(system: RunningSystem, role: Role) -> tuple[str, str]:
    result, token = system.container.access.issue_api_key(
        tenant_id=system.tenant_id, actor="test", name=f"usage {role.value}", role=role
    )
    return f"key:{result.id}", token


def _ask(client: httpx.Client, question: str, model: str) -> None:
    conversation = client.post("/v1/conversations", json={"title": "usage"}).json()["id"]
    response = client.post(
        f"/v1/conversations/{conversation}/questions", json={"question": question, "model": model}
    )
    assert response.status_code == 200, response.text


def _caught_up(system: RunningSystem) -> None:
    view = system.container.views["usage"]
    for context, log in system.container.event_logs.items():
        if context in view.contexts:
            assert view.wait_for(context, log.head(), 30), context


@pytest.fixture(scope="module")
def used(system: RunningSystem, corpus: dict[str, str]) -> dict[str, Any]:
    """A viewer searches twice and asks two questions; an admin asks one."""
    viewer_actor, viewer = _key(system, Role.VIEWER)
    with system.client(viewer) as client:
        for mode in ("hybrid", "keyword"):
            response = client.get("/v1/search", params={"q": "tomatoes sun", "mode": mode})
            assert response.status_code == 200, response.text
        _ask(client, "How much sun do tomatoes need?", "test-priced")
        _ask(client, "When should the beds be watered?", "test-unpriced")
    with system.client() as admin:
        _ask(admin, "What improves the soil?", "extractive")
    _caught_up(system)
    return {"viewer": viewer, "viewer_actor": viewer_actor}


def _group(report: dict[str, Any], **match: str | None) -> dict[str, Any]:
    (found,) = [g for g in report["groups"] if all(g["group"][k] == v for k, v in match.items())]
    return found


def test_an_analyst_reads_the_tenants_usage_by_model_and_it_adds_up(
    system: RunningSystem, used: dict[str, Any]
) -> None:
    _, token = _key(system, Role.ANALYST)
    with system.client(token) as analyst:
        response = analyst.get("/v1/usage", params={"group_by": "day,model"})
        assert response.status_code == 200, response.text
        report = response.json()
        assert_error(analyst.get("/v1/documents"), 403, "forbidden")  # usage, nothing else
    assert report["scope"] == "tenant" and report["group_by"] == ["day", "model"]
    total = report["total"]
    assert total["questions"] == total["answers"] == 3 and total["failures"] == 0
    priced = _group(report, model="test-priced")
    # The fake server reports 42 prompt and 7 completion tokens; $1 and $2 per million.
    assert priced["input_tokens"] == 42 and priced["output_tokens"] == 7
    assert Decimal(priced["cost_charged_usd"]) == Decimal("0.000056")
    assert Decimal(priced["cost_current_usd"]) == Decimal("0.000056")
    assert priced["latency_ms_p50"] > 0
    unpriced = _group(report, model="test-unpriced")
    assert unpriced["answers"] == 1 and unpriced["unpriced_answers"] == 1
    assert unpriced["unpriced_now"] == 1 and Decimal(unpriced["cost_charged_usd"]) == 0
    assert _group(report, model="extractive")["unpriced_answers"] == 0
    searches = _group(report, model=None)["searches"]
    assert searches["hybrid"] >= 1 and searches["keyword"] >= 1
    # Ingestion: the two documents of the corpus, their pages, chunks and embedding tokens.
    assert total["documents"] == 2 and total["chunks"] > 0 and total["pages"] > 0
    embedded = [
        e.token_count
        for e in _document_events(system)
        if type(e).__qualname__ == "Document.Embedded"
    ]
    assert total["embedding_tokens"] == sum(embedded) > 0
    for name in ("questions", "answers", "input_tokens", "output_tokens", "documents", "bytes"):
        assert sum(g[name] for g in report["groups"]) == total[name], name
    assert sum(Decimal(g["cost_charged_usd"]) for g in report["groups"]) == Decimal(
        total["cost_charged_usd"]
    )


def _document_events(system: RunningSystem) -> list[Any]:
    app = system.container.documents
    return [
        app.mapper.to_domain_event(n)
        for n in app.recorder.select_notifications(start=1, limit=10_000)
    ]


def test_a_viewer_sees_only_its_own_use(system: RunningSystem, used: dict[str, Any]) -> None:
    with system.client(used["viewer"]) as viewer:
        report = viewer.get("/v1/usage", params={"group_by": "key"}).json()
    assert report["scope"] == "own"
    assert [g["group"]["key"] for g in report["groups"]] == [used["viewer_actor"]]
    total = report["total"]
    assert total["answers"] == 2 and total["documents"] == 0
    assert total["searches"]["hybrid"] == 1 and total["searches"]["keyword"] == 1


def test_csv_streams_the_same_groups(system: RunningSystem, used: dict[str, Any]) -> None:
    with system.client() as admin:
        as_json = admin.get("/v1/usage", params={"group_by": "model,provider"}).json()
        response = admin.get("/v1/usage", params={"group_by": "model,provider", "format": "csv"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == len(as_json["groups"])
    for row, group in zip(rows, as_json["groups"], strict=True):
        assert (row["model"] or None, row["provider"] or None) == (
            group["group"]["model"],
            group["group"]["provider"],
        )
        assert int(row["answers"]) == group["answers"]
        assert Decimal(row["cost_charged_usd"]) == Decimal(group["cost_charged_usd"])
        assert int(row["searches_hybrid"]) == group["searches"]["hybrid"]


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"group_by": "colour"}, "invalid_group_by"),
        ({"group_by": "day,month"}, "invalid_group_by"),
        ({"group_by": "model,model"}, "invalid_group_by"),
        ({"from": "2026-12-02T00:00:00Z", "to": "2026-12-01T00:00:00Z"}, "invalid_window"),
        ({"from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "invalid_window"),
        ({"from": "yesterday"}, "invalid_request"),
        ({"format": "xml"}, "invalid_request"),
    ],
)
def test_bad_parameters_are_422_with_a_code(
    system: RunningSystem, params: dict[str, str], code: str
) -> None:
    with system.client() as admin:
        assert_error(admin.get("/v1/usage", params=params), 422, code)


def test_an_auditor_may_not_read_usage(system: RunningSystem) -> None:
    _, token = _key(system, Role.AUDITOR)
    with system.client(token) as auditor:
        assert_error(auditor.get("/v1/usage"), 403, "forbidden")
    assert uuid.UUID(system.tenant_id)


def _kf(system: RunningSystem, *args: str) -> subprocess.CompletedProcess[str]:
    settings = system.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("KF")}
    env.update({"KF_DATABASE_URL": settings.database.url, "KF_DATA_DIR": str(settings.data_dir)})
    return subprocess.run(
        [sys.executable, "-m", "config.cli", "usage", "report", "--tenant", "default", *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_kf_usage_report_prints_the_same_figures(
    system: RunningSystem, used: dict[str, Any]
) -> None:
    with system.client() as admin:
        report = admin.get("/v1/usage", params={"group_by": "model"}).json()
    done = _kf(system, "--group-by", "model", "--format", "csv")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert {r["model"] or None: int(r["answers"]) for r in rows} == {
        g["group"]["model"]: g["answers"] for g in report["groups"]
    }
    done = _kf(system, "--group-by", "model")
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("tenant default: ") and lines[1].split()[:3] == [
        "model",
        "questions",
        "answers",
    ]
    total = lines[-1].split()
    assert total[0] == "TOTAL" and total[1:3] == ["3", "3"]
    assert any(line.startswith("test-priced ") for line in lines)
    done = _kf(system, "--group-by", "colour")
    assert done.returncode == 2 and "Unknown group_by colour" in done.stderr
    done = _kf(system, "--from", "last tuesday")
    assert done.returncode == 2 and "not an ISO 8601 time" in done.stderr


# ----------------------------------------------------------------- the price book


def test_the_price_book_opens_with_the_configured_prices_and_only_admins_change_it(
    system: RunningSystem, used: dict[str, Any]
) -> None:
    _, analyst_token = _key(system, Role.ANALYST)
    with system.client(analyst_token) as analyst:
        book = analyst.get("/v1/prices").json()
        assert_error(
            analyst.put("/v1/prices/*/test-priced", json=_price("5", "6")), 403, "forbidden"
        )
    assert book["version"] >= 1
    (priced,) = [p for p in book["prices"] if p["model"] == "test-priced"]
    assert priced["provider"] == "*" and priced["input_per_million"] == "1"
    assert priced["effective_from"].startswith("1970-01-01")
    with system.client(used["viewer"]) as viewer:
        assert_error(viewer.get("/v1/prices"), 403, "forbidden")
        assert_error(viewer.put("/v1/prices/*/x", json=_price("1", "1")), 403, "forbidden")
    with system.client() as admin:
        for body, code in [
            (_price("-1", "1"), "invalid_price"),
            (_price("1", "1", effective_from="2026-01-01T00:00:00"), "invalid_price"),
            ({**_price("1", "1"), "currency": "EUR"}, "invalid_request"),
            ({"input_per_million": "1"}, "invalid_request"),
        ]:
            assert_error(admin.put("/v1/prices/*/test-priced", json=body), 422, code)
        assert_error(
            admin.put("/v1/prices/*/has space", json=_price("1", "1")), 422, "invalid_price"
        )
        assert admin.get("/v1/prices").json()["version"] == book["version"]  # nothing was set
        assert_error(
            admin.get("/v1/prices", params={"version": 999}), 404, "price_book_version_not_found"
        )


def _price(inp: str, out: str, **more: Any) -> dict[str, Any]:
    return {"input_per_million": inp, "output_per_million": out, **more}


def test_a_new_price_charges_answers_from_then_on_and_reprices_the_current_figure(
    system: RunningSystem, used: dict[str, Any]
) -> None:
    with system.client() as admin:
        before = admin.get("/v1/usage", params={"group_by": "model"}).json()
        response = admin.put(
            "/v1/prices/local/test-priced",  # this provider's price beats any provider's
            json=_price("10", "20", cached_input_per_million="5", reason="new contract"),
        )
        assert response.status_code == 200, response.text
        version = response.json()["version"]
        _ask(admin, "How much sun do tomatoes need?", "test-priced")
        old_book = admin.get("/v1/prices", params={"version": version - 1}).json()
        new_book = admin.get("/v1/prices", params={"version": version}).json()
    assert (
        old_book["version"] == version - 1
        and len(new_book["prices"]) == len(old_book["prices"]) + 1
    )
    _caught_up(system)
    answered = [
        e for e in _conversation_events(system) if type(e).__qualname__.endswith("AnswerGenerated")
    ][-1]
    assert answered.price_book_version == version
    assert answered.price["provider"] == "local" and answered.price["input_per_million"] == "10"
    assert Decimal(answered.cost_usd) == Decimal("0.00056")  # 42 in at $10, 7 out at $20
    with system.client() as admin:
        after = admin.get("/v1/usage", params={"group_by": "model"}).json()
    was, now = _group(before, model="test-priced"), _group(after, model="test-priced")
    # The earlier answer keeps its charge; the current figure prices both at $10/$20.
    assert Decimal(now["cost_charged_usd"]) == Decimal(was["cost_charged_usd"]) + Decimal("0.00056")
    assert Decimal(now["cost_current_usd"]) == 2 * Decimal("0.00056")


def _conversation_events(system: RunningSystem) -> list[Any]:
    app = system.container.conversations
    return [
        app.mapper.to_domain_event(n)
        for n in app.recorder.select_notifications(start=1, limit=100_000)
    ]


# ------------------------------------------------------------------- re-pricing


def test_repricing_prices_every_answer_at_another_version_and_twice_gives_the_same(
    system: RunningSystem, used: dict[str, Any]
) -> None:
    _, analyst_token = _key(system, Role.ANALYST)
    runs = []
    with system.client(analyst_token) as analyst:
        for _ in range(2):
            accepted = analyst.post(
                "/v1/usage/repricings", json={"price_book_version": 1, "reason": "what if"}
            )
            assert accepted.status_code == 202, accepted.text
            body = accepted.json()
            run = analyst.get(
                f"/v1/usage/repricings/{body['id']}", params={"min_position": body["position"]}
            )
            assert run.status_code == 200, run.text
            runs.append(run.json())
        report = analyst.get("/v1/usage", params={"group_by": "model", "price_book": 1}).json()
        assert_error(analyst.get("/v1/usage", params={"price_book": 99}), 409, "not_repriced")
        assert_error(
            analyst.post("/v1/usage/repricings", json={"price_book_version": 99}),
            404,
            "price_book_version_not_found",
        )
        assert_error(
            analyst.get(f"/v1/usage/repricings/{uuid.uuid4()}"), 404, "repricing_not_found"
        )
    with system.client(used["viewer"]) as viewer:
        assert_error(
            viewer.post("/v1/usage/repricings", json={"price_book_version": 1}), 403, "forbidden"
        )
    first, second = runs
    assert first["id"] != second["id"] and first["actor"].startswith("key:")
    figures = ("answers", "unpriced", "cost_charged_usd", "cost_repriced_usd")
    assert {f: first[f] for f in figures} == {f: second[f] for f in figures}
    # Version 1 prices test-priced at $1/$2 per million (42 in, 7 out: $0.000056 an answer);
    # test-unpriced has no price there; the extractive model costs 0.
    priced = _group(report, model="test-priced")
    assert Decimal(priced["cost_repriced_usd"]) == priced["answers"] * Decimal("0.000056")
    assert _group(report, model="test-unpriced")["unpriced_repriced"] == 1
    assert report["total"]["not_repriced"] == 0
    assert report["repricing"]["id"] == second["id"]
    assert Decimal(report["total"]["cost_repriced_usd"]) == Decimal(first["cost_repriced_usd"])
    assert Decimal(report["total"]["cost_charged_usd"]) == Decimal(first["cost_charged_usd"])
    assert first["unpriced"] == 1 and first["answers"] == report["total"]["answers"]


def test_kf_usage_reprice_records_a_run_and_the_report_shows_it(
    system: RunningSystem, used: dict[str, Any]
) -> None:
    settings = system.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("KF")}
    env.update({"KF_DATABASE_URL": settings.database.url, "KF_DATA_DIR": str(settings.data_dir)})
    done = subprocess.run(
        [sys.executable, "-m", "config.cli", "usage", "reprice", "--tenant", "default",
         "--price-book", "1", "--reason", "from the CLI"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    run = json.loads(done.stdout)
    assert run["price_book_version"] == 1 and run["unpriced"] == 1
    with system.client() as admin:
        api = admin.get(f"/v1/usage/repricings/{run['id']}").json()
    assert api["reason"] == "from the CLI" and api["cost_repriced_usd"] == run["cost_repriced_usd"]
    done = _kf(system, "--group-by", "model", "--price-book", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "repriced $" in done.stdout.splitlines()[1]
    done = _kf(system, "--price-book", "99")
    assert done.returncode == 1 and "no re-pricing run" in done.stderr


def test_the_metrics_count_tokens_and_cost_by_tenant_provider_and_model(
    system: RunningSystem, used: dict[str, Any]
) -> None:
    metrics = httpx.get(f"{system.base_url}/metrics").text
    tenant = system.tenant_id
    tokens = [
        line
        for line in metrics.splitlines()
        if line.startswith("kf_answer_tokens_total{")
        and f'tenant="{tenant}"' in line
        and 'model="test-priced"' in line
    ]
    assert {('direction="input"' in line) for line in tokens} == {True, False}
    assert any(
        line.startswith("kf_answer_cost_usd_total{") and 'model="test-priced"' in line
        for line in metrics.splitlines()
    )
    assert any(
        line.startswith("kf_answers_unpriced_total{") and 'model="test-unpriced"' in line
        for line in metrics.splitlines()
    )
    assert "kf_answer_duration_seconds_bucket{" in metrics

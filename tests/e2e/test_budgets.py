"""Budgets end to end: set by admins, enforced before the provider is asked, under load.

Questions go to a local OpenAI-protocol server that reports the most a request could
use (every prompt byte a token, every allowed output token used), so what a question
really spends is as close to what it holds as it gets.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import httpx
import pytest

from domain.access import Role
from domain.usage import within_limit
from tests.e2e.qa_fixtures import corpus, llm_server, system
from tests.fakes.llm_servers import FakeServer
from tests.harness import RunningSystem
from tests.http import assert_error

__all__ = ["corpus", "llm_server", "system"]  # fixtures used by name


def _key(system: RunningSystem, role: Role) -> tuple[str, str]:
    result, token = system.container.access.issue_api_key(
        tenant_id=system.tenant_id, actor="test", name=f"budget {role.value}", role=role
    )
    return f"key:{result.id}", token


def _usage_events(system: RunningSystem, kind: str) -> list[Any]:
    app = system.container.usage
    events = (
        app.mapper.to_domain_event(n)
        for n in app.recorder.select_notifications(start=1, limit=1_000_000)
    )
    return [e for e in events if type(e).__qualname__ == kind]


@pytest.fixture
def worst_case(llm_server: FakeServer) -> Iterator[FakeServer]:
    llm_server.script.worst_case_usage = True
    yield llm_server
    llm_server.script.worst_case_usage = False


def _ask(client: httpx.Client, model: str = "test-priced") -> httpx.Response:
    return client.post(
        "/v1/chat/completions",
        json={
            "model": model,
            "messages": [{"role": "user", "content": "How much sun do tomatoes need?"}],
            "max_tokens": 400,
        },
    )


def test_admins_set_and_remove_budgets_analysts_read_them_and_bad_ones_are_refused(
    system: RunningSystem,
) -> None:
    _, analyst = _key(system, Role.ANALYST)
    viewer_actor, viewer = _key(system, Role.VIEWER)
    path = f"/v1/budgets/{viewer_actor}/tokens/month"
    with system.client() as admin:
        changed = admin.put(path, json={"amount": "1000000", "hard": False, "reason": "pilot"})
        assert changed.status_code == 200, changed.text
        for bad_path, body, code in [
            ("/v1/budgets/everyone/tokens/day", {"amount": "1"}, "invalid_budget"),
            ("/v1/budgets/tenant/tokens/day", {"amount": "-1"}, "invalid_budget"),
            ("/v1/budgets/tenant/tokens/day", {"amount": "1.5"}, "invalid_budget"),
            ("/v1/budgets/tenant/tokens/week", {"amount": "1"}, "invalid_request"),
            ("/v1/budgets/tenant/bytes/day", {"amount": "1"}, "invalid_budget"),
            ("/v1/budgets/tenant/tokens/total", {"amount": "1"}, "invalid_budget"),
            ("/v1/budgets/tenant/colour/day", {"amount": "1"}, "invalid_request"),
        ]:
            assert_error(admin.put(bad_path, json=body), 422, code)
    with system.client(analyst) as reader:
        listed = reader.get("/v1/budgets").json()
        assert_error(reader.put(path, json={"amount": "1"}), 403, "forbidden")
    with system.client(viewer) as client:
        assert_error(client.get("/v1/budgets"), 403, "forbidden")
    (mine,) = [b for b in listed if b["scope"] == viewer_actor]
    assert mine["metric"] == "tokens" and mine["period"] == "month" and mine["hard"] is False
    assert mine["amount"] == "1000000" and mine["used"] == "0"
    assert mine["resets_at"] > mine["period_start"]
    with system.client() as admin:
        assert admin.delete(path).json()["changed"] is True
        assert admin.delete(path).json()["changed"] is False
        assert all(b["scope"] != viewer_actor for b in admin.get("/v1/budgets").json())


def test_fifty_concurrent_questions_never_overspend_a_hard_cost_budget(
    system: RunningSystem, corpus: dict[str, str], worst_case: FakeServer
) -> None:
    actor, token = _key(system, Role.VIEWER)
    limit = Decimal("0.01")  # a few questions' worth at $1/$2 per million tokens
    with system.client() as admin:
        response = admin.put(f"/v1/budgets/{actor}/cost_usd/day", json={"amount": str(limit)})
        assert response.status_code == 200, response.text
    clients = [system.client(token) for _ in range(10)]
    try:
        with ThreadPoolExecutor(50) as pool:
            responses = list(pool.map(lambda i: _ask(clients[i % 10]), range(50)))
    finally:
        for client in clients:
            client.close()
    answered = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(answered) + len(refused) == 50, [r.text for r in responses][:3]
    assert answered and refused
    for response in refused:
        error = response.json()["error"]
        assert error["code"] == "budget_exceeded" and "resets at" in error["message"]
        assert response.headers["retry-after"]
    # What the answers were charged, from the record: within the limit.
    spent = sum((Decimal(e.cost_usd) for e in _answers_of(system, actor)), Decimal(0))
    assert Decimal(0) < spent <= limit
    # Every refusal is an event with the inputs of its decision; replayed, they refuse.
    refusals = [e for e in _usage_events(system, "BudgetRefusal.Recorded") if e.actor == actor]
    assert len(refusals) == len(refused)
    for event in refusals:
        assert event.budget == f"{actor}/cost_usd/day" and Decimal(event.limit) == limit
        inputs = [Decimal(v) for v in (event.limit, event.used, event.reserved, event.estimate)]
        assert not within_limit(*inputs)
    # One alert per threshold crossed in the period, however many questions crossed it:
    # 100% when the first question was refused, 80% if the answers' use got there.
    raised = _usage_events(system, "BudgetAlert.Raised")
    alerts = [e for e in raised if e.budget.startswith(actor)]
    expected = [80, 100] if spent >= limit * Decimal("0.8") else [100]
    assert sorted(e.threshold for e in alerts) == expected


def _answers_of(system: RunningSystem, actor: str) -> list[Any]:
    app = system.container.conversations
    events = [
        app.mapper.to_domain_event(n)
        for n in app.recorder.select_notifications(start=1, limit=1_000_000)
    ]
    asked_by = {
        (e.originator_id, e.turn): e.actor
        for e in events
        if type(e).__qualname__ == "Conversation.QuestionAsked"
    }
    return [
        e
        for e in events
        if type(e).__qualname__ == "Conversation.AnswerGenerated"
        and asked_by.get((e.originator_id, e.turn)) == actor
    ]


def test_a_soft_budget_answers_and_warns_once_and_the_counter_matches_the_record(
    system: RunningSystem, corpus: dict[str, str], worst_case: FakeServer
) -> None:
    actor, token = _key(system, Role.VIEWER)
    with system.client() as admin:
        admin.put(f"/v1/budgets/{actor}/tokens/day", json={"amount": "1500", "hard": False})
    with system.client(token) as client:
        for _ in range(3):  # each about 450 tokens and more: past 80% and then 100%
            assert _ask(client).status_code == 200
    alerts = [e for e in _usage_events(system, "BudgetAlert.Raised") if e.budget.startswith(actor)]
    assert sorted(e.threshold for e in alerts) == [80, 100]
    # Once the usage read model has the answers, reconciling changes nothing.
    head = system.container.conversations.head_position()
    assert system.container.views["usage"].wait_for("conversations", head, 30)
    drifts = system.container.budget_guard.reconcile()
    mine = {c: d for c, d in drifts.items() if f"|{actor}/tokens/day|" in c}
    assert mine and set(mine.values()) == {0}
    assert uuid.UUID(actor.removeprefix("key:"))


# ----------------------------------------------------------------- quotas


def _content_of(responses: list[httpx.Response], document_id: str) -> bytes:
    (sent,) = [r.extensions["sent"] for r in responses if r.status_code == 202
               and r.json()["id"] == document_id]  # fmt: skip
    return bytes(sent)


def _stored(system: RunningSystem, metric: str) -> int:
    catalog = system.container.views["catalog"]
    assert catalog.wait_for("documents", system.container.documents.head_position(), 30)
    used, _ = catalog.quota_use(system.tenant_id, metric)  # type: ignore[attr-defined]
    return int(used)


def test_quotas_on_documents_and_bytes_hold_under_concurrent_uploads(
    system: RunningSystem, corpus: dict[str, str]
) -> None:
    documents = _stored(system, "documents")
    with system.client() as admin:
        admin.put("/v1/budgets/tenant/documents/total", json={"amount": str(documents + 3)})
        assert_error(
            admin.put("/v1/budgets/key:00000000-0000-0000-0000-000000000000/bytes/total",
                      json={"amount": "1"}),
            422, "invalid_budget",
        )  # fmt: skip

        def upload(i: int) -> httpx.Response:
            with system.client() as client:
                response = client.post("/v1/documents", files={"file": (f"q{i}.txt", _texts[i])})
                response.extensions["sent"] = _texts[i]
                return response

        _texts = {i: f"quota {i} {uuid.uuid4()}".encode() for i in range(12)}

        with ThreadPoolExecutor(10) as pool:
            responses = list(pool.map(upload, range(10)))
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [202] * 3 + [409] * 7, [r.text for r in responses]
        refused = next(r for r in responses if r.status_code == 409).json()
        assert refused["code"] == "quota_exceeded"
        assert refused["details"]["limit"] == str(documents + 3)
        accepted = [r for r in responses if r.status_code == 202]
        # At the quota: bad bytes are still told what is wrong with them, and bytes
        # already stored are the same document again (nothing more is stored).
        assert_error(admin.post("/v1/documents", files={"file": ("e.txt", b"")}), 422,
                     "empty_file")  # fmt: skip
        first = accepted[0].json()["id"]
        again = admin.post(
            "/v1/documents", files={"file": ("again.txt", _content_of(responses, first))}
        )
        assert again.status_code == 200 and again.json()["id"] == first
        # Deleting frees a place.
        assert admin.delete(f"/v1/documents/{first}").status_code == 202
        assert upload(10).status_code == 202
        assert upload(11).status_code == 409
        admin.delete("/v1/budgets/tenant/documents/total")

        stored = _stored(system, "bytes")
        admin.put("/v1/budgets/tenant/bytes/total", json={"amount": str(stored + 100)})
        small = admin.post("/v1/documents", files={"file": ("s.txt", b"x" * 60)})
        assert small.status_code == 202, small.text
        duplicate = admin.post("/v1/documents", files={"file": ("s2.txt", b"x" * 60)})
        assert duplicate.status_code == 200 and duplicate.json()["duplicate"] is True
        big = admin.post("/v1/documents", files={"file": ("b.txt", b"y" * 60)})
        assert_error(big, 413, "quota_exceeded")
        admin.delete("/v1/budgets/tenant/bytes/total")
    refusals = [e for e in _usage_events(system, "BudgetRefusal.Recorded") if "/total" in e.budget]
    assert len(refusals) == 7 + 1 + 1
    assert {e.budget for e in refusals} == {"tenant/documents/total", "tenant/bytes/total"}

"""Budget alerts reach people: a signed webhook and an email, once each; a dead webhook is
retried, recorded as failed, and never holds up a question."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from config.settings import Settings
from domain.access import Role
from infra.embedding import SentenceTransformerEmbedder
from tests.fakes.receivers import SmtpReceiver, WebhookReceiver
from tests.harness import RunningSystem

SECRET = "whsec-test-" + "x" * 24


@pytest.fixture(scope="module")
def receivers() -> Iterator[tuple[WebhookReceiver, WebhookReceiver, SmtpReceiver]]:
    good, dead, smtp = WebhookReceiver(200), WebhookReceiver(500), SmtpReceiver()
    yield good, dead, smtp
    for receiver in (good, dead, smtp):
        receiver.close()


@pytest.fixture(scope="module")
def system(
    settings_factory: Callable[..., Settings],
    embedder: SentenceTransformerEmbedder,
    receivers: tuple[WebhookReceiver, WebhookReceiver, SmtpReceiver],
) -> Iterator[RunningSystem]:
    good, dead, smtp = receivers
    settings = settings_factory(
        alerts={
            "webhooks": [{"url": good.url, "secret": SECRET}, {"url": dead.url, "secret": "s"}],
            "email": {"smtp_host": "127.0.0.1", "smtp_port": smtp.port,
                      "sender": "kf@example.test", "recipients": ["ops@example.test"]},
            "max_attempts": 3,
            "backoff_s": 0.05,
            "poll_s": 0.1,
        }
    )  # fmt: skip
    with RunningSystem(settings, embedder) as running:
        yield running


def _alert_events(system: RunningSystem) -> list[Any]:
    app = system.container.usage
    return [
        app.mapper.to_domain_event(n)
        for n in app.recorder.select_notifications(start=1, limit=100_000)
        if n.topic.endswith(("BudgetAlert.Raised", "BudgetAlert.Delivered",
                             "BudgetAlert.DeliveryFailed"))
    ]  # fmt: skip


def _wait(check: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_each_alert_is_delivered_once_per_channel_and_a_dead_webhook_is_recorded_failed(
    system: RunningSystem, receivers: tuple[WebhookReceiver, WebhookReceiver, SmtpReceiver]
) -> None:
    good, dead, smtp = receivers
    result, token = system.container.access.issue_api_key(
        tenant_id=system.tenant_id, actor="test", name="alerted", role=Role.VIEWER
    )
    actor = f"key:{result.id}"
    with system.client() as admin:
        response = admin.put(
            f"/v1/budgets/{actor}/tokens/day", json={"amount": "10", "hard": False}
        )
        assert response.status_code == 200, response.text
    with system.client(token) as client:
        started = time.perf_counter()
        for _ in range(2):  # the first crosses 80% and 100%; the second crosses nothing new
            conversation = client.post("/v1/conversations", json={}).json()["id"]
            answered = client.post(
                f"/v1/conversations/{conversation}/questions",
                json={"question": "What does the garden need?"},
            )
            assert answered.status_code == 200, answered.text
        # The dead webhook's retries happen beside the questions, never inside them.
        assert time.perf_counter() - started < 20

    def settled() -> bool:
        events = _alert_events(system)
        return sum(type(e).__qualname__ != "BudgetAlert.Raised" for e in events) == 2 * 3

    _wait(settled)
    events = _alert_events(system)
    raised = [e for e in events if type(e).__qualname__ == "BudgetAlert.Raised"]
    assert sorted(e.threshold for e in raised) == [80, 100]
    ids = {str(e.originator_id) for e in raised}
    # The good webhook: one signed POST per alert.
    posts = good.received.all()
    assert sorted(json.loads(p["body"])["alert_id"] for p in posts) == sorted(ids)
    for post in posts:
        stamp, _, mac = post["headers"]["X-KF-Signature"].partition(",v1=")
        timestamp = stamp.removeprefix("t=")
        expected = hmac.new(
            SECRET.encode(), f"{timestamp}.".encode() + post["body"], hashlib.sha256
        ).hexdigest()
        assert hmac.compare_digest(mac, expected)
        body = json.loads(post["body"])
        assert body["budget"] == f"{actor}/tokens/day" and body["limit"] == "10"
    # Email: one message per alert.
    messages = smtp.messages()
    assert sorted(m["X-KF-Alert-Id"] for m in messages) == sorted(ids)
    assert all("tokens/day at" in m["Subject"] for m in messages)
    # The dead webhook: tried max_attempts times per alert, then recorded as failed.
    assert len(dead.received.all()) == 2 * 3
    outcomes = {
        (str(e.originator_id), e.channel): type(e).__qualname__.split(".")[1]
        for e in events
        if type(e).__qualname__ != "BudgetAlert.Raised"
    }
    for alert_id in ids:
        assert outcomes[(alert_id, f"webhook:{good.url}")] == "Delivered"
        assert outcomes[(alert_id, "email:ops@example.test")] == "Delivered"
        assert outcomes[(alert_id, f"webhook:{dead.url}")] == "DeliveryFailed"
    failed = [e for e in events if type(e).__qualname__ == "BudgetAlert.DeliveryFailed"]
    assert all(e.attempts == 3 and "500" in e.error for e in failed)


def test_a_notifier_that_runs_again_sends_nothing_twice(
    system: RunningSystem, receivers: tuple[WebhookReceiver, WebhookReceiver, SmtpReceiver]
) -> None:
    good, dead, smtp = receivers
    before = (len(good.received.all()), len(dead.received.all()), len(smtp.messages()))
    # A second notifier from the start of the log (its tracking lost): every alert is
    # read again, and every channel already has its outcome recorded.
    notifier = system.container.notifier()
    notifier._tracking = _Forgetful()  # type: ignore[assignment]
    assert notifier.deliver_pending() > 0
    after = (len(good.received.all()), len(dead.received.all()), len(smtp.messages()))
    assert after == before
    assert uuid.UUID(system.tenant_id)


class _Forgetful:
    """Tracking that remembers nothing: a notifier that lost its position."""

    def max_tracking_id(self, name: str) -> int:
        return 0

    def insert_tracking(self, tracking: Any) -> None:
        pass

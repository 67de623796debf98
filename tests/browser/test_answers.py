"""What a person sees of an answer that does not simply arrive: a provider that fails (the
reason, and a Retry that asks again), a Stop, and a reload in the middle of an answer (the
page shows the outcome the platform recorded, never a turn that silently vanished).

The chat's default model is served by a local server speaking the OpenAI protocol, whose
script decides what each request gets."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.web import DESKTOP, create_user, sign_in
from tests.fakes.llm_servers import ANSWER_WORDS, FakeServer, start
from tests.harness import RunningSystem

pytestmark = pytest.mark.timeout(1200)

PERSON = "noor@example.org"
QUESTION = "When does the Brisk Point ferry leave?"
ANSWER = "".join(ANSWER_WORDS)  # what the local server answers
ContextFactory = Callable[..., BrowserContext]


@pytest.fixture(scope="module")
def llm_server() -> Iterator[FakeServer]:
    server = start("openai")
    yield server
    server.close()


@pytest.fixture(scope="module")
def web_settings(llm_server: FakeServer) -> dict[str, Any]:
    return {
        "llm": {
            "providers": [
                {
                    "name": "local",
                    "kind": "openai_compatible",
                    "base_url": f"{llm_server.url}/v1",
                    "timeout_s": 10,
                }
            ],
            "routes": [{"pattern": "test-*", "provider": "local"}],
            "default_model": "test-model",
            "retry_max_attempts": 1,
        }
    }


@pytest.fixture(scope="module")
def ferry(web_system: RunningSystem) -> RunningSystem:
    """A person who may ask, and a document the questions find."""
    create_user(web_system.base_url, web_system.admin_key, PERSON, "editor")
    with web_system.client() as client:
        uploaded = client.post(
            "/v1/documents",
            files={
                "file": (
                    "ferry.txt",
                    b"The Brisk Point ferry leaves the north pier at seven every morning.",
                )
            },
        ).json()
        final = web_system.wait_final(client, [uploaded["id"]], timeout=120)
    assert final[uploaded["id"]]["status"] == "embedded", final
    head = web_system.container.documents.head_position()
    assert web_system.container.search_view.wait_for("documents", head, 60)
    return web_system


@pytest.fixture
def page(
    ferry: RunningSystem, new_context: ContextFactory, llm_server: FakeServer
) -> Iterator[Page]:
    context = new_context(viewport=DESKTOP, base_url=ferry.base_url)
    sign_in(context, ferry.base_url, PERSON)
    opened = context.new_page()
    opened.goto("/ui/")
    yield opened
    llm_server.script.set("ok")
    llm_server.script.stream_delay_s = 0.0


def ask(page: Page, question: str) -> None:
    field = page.get_by_label("Ask a question about your documents")
    field.fill(question)
    field.press("Enter")


def transcript(system: RunningSystem, page: Page) -> list[dict[str, Any]]:
    """The conversation the page shows, as the API records it."""
    match = re.search(r"/ui/chat/([0-9a-f-]{36})$", page.url)
    assert match, page.url
    response = httpx.get(
        f"{system.base_url}/v1/conversations/{match[1]}",
        headers={"Authorization": f"Bearer {system.admin_key}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    turns: list[dict[str, Any]] = response.json()["turns"]
    return turns


def settled_transcript(system: RunningSystem, page: Page, turns: int) -> list[dict[str, Any]]:
    """The transcript once its ``turns`` turns all have an outcome."""
    deadline = time.monotonic() + 30
    while True:
        recorded = transcript(system, page)
        if len(recorded) == turns and all(t["status"] != "pending" for t in recorded):
            return recorded
        assert time.monotonic() < deadline, recorded
        time.sleep(0.2)


def test_a_failed_answer_says_why_and_retry_asks_again(
    ferry: RunningSystem, page: Page, llm_server: FakeServer
) -> None:
    llm_server.script.set("500")
    ask(page, QUESTION)
    failed = page.get_by_role("log").get_by_role("article").last
    expect(failed).to_have_attribute("aria-busy", "false")
    notice = failed.get_by_role("alert")
    expect(notice).to_be_visible()
    reason = notice.inner_text()
    assert "500" in reason or "provider" in reason.lower(), reason

    llm_server.script.set("ok")
    failed.get_by_role("button", name="Retry").click()
    answers = page.get_by_role("log").get_by_role("article")
    expect(answers).to_have_count(2)
    answered = answers.last
    expect(answered).to_have_attribute("aria-busy", "false")
    expect(answered).to_contain_text("The answer is in passage")
    expect(answered).to_contain_text("test-model")
    expect(answered.get_by_role("alert")).to_have_count(0)

    recorded = settled_transcript(ferry, page, 2)
    assert [t["status"] for t in recorded] == ["failed", "answered"], recorded
    assert recorded[0]["question"] == recorded[1]["question"] == QUESTION
    # A reload shows the same: the failure with its reason and a Retry, then the answer.
    page.reload()
    answers = page.get_by_role("log").get_by_role("article")
    expect(answers).to_have_count(2)
    expect(answers.first.get_by_role("alert")).to_be_visible()
    expect(answers.first.get_by_role("button", name="Retry")).to_be_visible()
    expect(answers.last).to_contain_text("The answer is in passage")


def test_a_reload_mid_answer_shows_the_recorded_outcome(
    ferry: RunningSystem, page: Page, llm_server: FakeServer
) -> None:
    llm_server.script.stream_delay_s = 0.5  # seven deltas: about 3.5 s
    ask(page, QUESTION)
    answering = page.get_by_role("log").get_by_role("article").last
    expect(answering).to_contain_text("The answer")  # streaming has begun
    expect(answering).to_have_attribute("aria-busy", "true")
    page.reload()

    # The question is still there, and the turn ends in what was recorded.
    log = page.get_by_role("log")
    expect(log).to_contain_text(QUESTION)
    outcome = log.get_by_role("article").last
    expect(outcome).to_have_attribute("aria-busy", "false", timeout=30_000)
    [turn] = settled_transcript(ferry, page, 1)
    if turn["status"] == "failed":  # the server saw the page go: the answer was cut off
        assert turn["failure"]["code"] == "client_disconnected", turn
        expect(outcome.get_by_role("alert")).to_contain_text("interrupted")
        expect(outcome.get_by_role("button", name="Retry")).to_be_visible()
    else:  # the last delta was sent before the server noticed: the whole answer
        assert turn["status"] == "answered" and turn["answer"] == ANSWER, turn
        expect(outcome).to_contain_text("The answer is in passage")


def test_stop_ends_the_answer_and_it_is_recorded_as_interrupted(
    ferry: RunningSystem, page: Page, llm_server: FakeServer
) -> None:
    llm_server.script.stream_delay_s = 1.0
    ask(page, QUESTION)
    answering = page.get_by_role("log").get_by_role("article").last
    expect(answering).to_contain_text("The answer")
    page.get_by_role("button", name="Stop").click()
    expect(answering).to_have_attribute("aria-busy", "false")
    expect(answering).to_contain_text("Stopped.")
    expect(answering.get_by_role("button", name="Retry")).to_be_visible()

    [turn] = settled_transcript(ferry, page, 1)
    assert turn["status"] == "failed" and turn["failure"]["code"] == "client_disconnected", turn
    page.reload()
    outcome = page.get_by_role("log").get_by_role("article").last
    expect(outcome.get_by_role("alert")).to_contain_text("interrupted")

"""The conversations projection on real PostgreSQL: replays change nothing, disorder is refused."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.root import Container
from infra.envelope import Envelope
from projections.base import OutOfOrderError
from projections.conversations import ConversationsView
from tests.read_models import envelopes, reset, rows
from tests.redelivery import deliver_with_repeats

TENANT = str(uuid.uuid4())


def _answer(turn: int) -> dict[str, Any]:
    return {
        "answer": f"answer {turn} [1]",
        "citations": [
            {
                "n": 1, "chunk_id": "c", "document_id": str(uuid.uuid4()), "filename": "a.txt",
                "page": None, "chunk_index": 0, "score": 0.5,
            }
        ],
        "retrieval": {"mode": "hybrid", "k": 5, "positions": {"documents": 3}},
        "prompt_template": "kf-answer-v1",
        "provider": "extractive",
        "model": "extractive",
        "parameters": {"max_output_tokens": 512},
        "usage": {"input_tokens": 10, "output_tokens": 3},
        "cost_usd": "0.00001200",
        "latency_ms": 12.5,
        "attempts": [],
    }  # fmt: skip


@pytest.fixture(scope="module")
def container(make_container: Callable[..., Container]) -> Iterator[Container]:
    built = make_container()
    app = built.conversations
    question = {"model": "extractive", "mode": "hybrid", "k": 5, "flags": [], "history_turns": 0}
    for i in range(3):
        conversation = app.start_conversation(tenant_id=TENANT, actor=f"key:{i}", title=f"c{i}").id
        for turn in (1, 2):
            app.ask(
                app.get_conversation(TENANT, conversation), actor=f"key:{i}",
                question=f"q{i}.{turn}", prompt=b"[]", quotes=[], **question,
            )  # fmt: skip
            if (i + turn) % 3 == 0:
                app.record_failure(
                    tenant_id=TENANT, conversation_id=conversation, turn=turn, actor="system",
                    code="provider_unavailable", reason="down", attempts=["local:500"],
                )  # fmt: skip
            else:
                app.record_answer(
                    tenant_id=TENANT, conversation_id=conversation, turn=turn, actor="system",
                    **_answer(turn),
                )  # fmt: skip
    app.start_and_ask(
        tenant_id=TENANT, actor="key:chat", title="chat", origin="chat_completions",
        question="pending?", prompt=b"[]", quotes=[], **question,
    )  # fmt: skip
    yield built


def _view(container: Container) -> ConversationsView:
    view = container.views["conversations"]
    assert isinstance(view, ConversationsView)
    return view


def _envelopes(container: Container) -> list[Envelope]:
    return envelopes(container, "conversations")


def _rows(view: ConversationsView) -> list[list[dict[str, Any]]]:
    found = rows(view)
    return [found["conversations"], found["conversation_turns"]]


def test_feeding_the_same_events_twice_changes_nothing(container: Container) -> None:
    view = _view(container)
    reset(view)
    envelopes = _envelopes(container)
    assert view.apply_batch(envelopes) == len(envelopes)
    once = _rows(view)
    assert view.apply_batch(envelopes) == 0
    assert view.apply_batch(envelopes[:5]) == 0
    assert _rows(view) == once
    conversations, turns = once
    assert sorted(c["origin"] for c in conversations) == [
        "chat_completions", "conversations", "conversations", "conversations",
    ]  # fmt: skip
    assert sorted(t["status"] for t in turns) == ["answered"] * 4 + ["failed"] * 2 + ["pending"]
    answered = next(t for t in turns if t["status"] == "answered")
    assert answered["citations"][0]["chunk_index"] == 0 and answered["cost_usd"] is not None
    assert view.max_tracking_id("conversations") == envelopes[-1].position


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_any_redelivery_pattern_yields_the_same_rows(
    container: Container, data: st.DataObject
) -> None:
    view = _view(container)
    envelopes = _envelopes(container)
    reset(view)
    view.apply_batch(envelopes)
    expected = _rows(view)
    reset(view)
    deliver_with_repeats(view, envelopes, data)
    assert _rows(view) == expected


def test_an_answer_before_its_question_is_refused_and_nothing_is_written(
    container: Container,
) -> None:
    view = _view(container)
    envelopes = _envelopes(container)
    reset(view)
    started, answered = envelopes[0], envelopes[2]
    assert (started.event_type, answered.event_type) == (
        "Conversation.Started",
        "Conversation.AnswerGenerated",
    )
    with pytest.raises(OutOfOrderError):
        view.apply_batch([started, answered])  # its QuestionAsked was never applied
    assert _rows(view) == [[], []]
    assert (view.max_tracking_id("conversations") or 0) == 0

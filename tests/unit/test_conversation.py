"""The Conversation aggregate: one recorded outcome per question, replayable, idempotent."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from eventsourcing.domain import Aggregate
from hypothesis import given
from hypothesis import strategies as st

from domain.access import Principal, Role
from domain.conversation import Conversation, InvalidConversationError, QuestionPendingError


def _answer(turn: int) -> dict[str, Any]:
    return {
        "answer": f"answer {turn} [1]",
        "citations": [{"n": 1, "chunk_id": "c", "document_id": "d", "score": 0.5}],
        "retrieval": {"mode": "hybrid", "k": 5},
        "prompt_template": "kf-answer-v1",
        "provider": "extractive",
        "model": "extractive",
        "parameters": {"max_output_tokens": 512},
        "usage": {"input_tokens": 10, "output_tokens": 3},
        "cost_usd": "0",
        "latency_ms": 1.0,
        "attempts": [],
    }


def _replay(conversation: Conversation, events: list[Aggregate.Event]) -> Conversation:
    replayed: Conversation | None = None
    for event in events:
        replayed = event.mutate(replayed)  # type: ignore[assignment]
    assert replayed is not None
    return replayed


def test_a_question_is_answered_once_and_a_retry_appends_nothing() -> None:
    conversation = Conversation.start(tenant_id="t", actor="key:a", title="Budget")
    turn = conversation.ask(
        actor="key:a", question="What was spent?", model="extractive", mode="hybrid", k=5, flags=[]
    )
    assert turn == 1
    with pytest.raises(QuestionPendingError):
        conversation.ask(actor="key:a", question="x", model="m", mode="hybrid", k=5, flags=[])
    assert conversation.record_answer(actor="system", turn=1, **_answer(1))
    assert not conversation.record_answer(actor="system", turn=1, **_answer(1))
    assert not conversation.record_failure(
        actor="system", turn=1, code="x", reason="late", attempts=[]
    )
    assert conversation.history() == [("What was spent?", "answer 1 [1]")]


def test_a_failed_answer_ends_the_turn_without_history() -> None:
    conversation = Conversation.start(tenant_id="t", actor="key:a")
    conversation.ask(actor="key:a", question="q", model="m", mode="vector", k=3, flags=["x"])
    assert conversation.record_failure(
        actor="system", turn=1, code="provider_unavailable", reason="down", attempts=["a:500"]
    )
    assert conversation.pending_turn is None and conversation.history() == []
    assert (
        conversation.ask(actor="key:a", question="again", model="m", mode="vector", k=3, flags=[])
        == 2
    )


def test_titles_are_bounded_and_printable() -> None:
    with pytest.raises(InvalidConversationError):
        Conversation.start(tenant_id="t", actor="a", title="x" * 201)
    with pytest.raises(InvalidConversationError):
        Conversation.start(tenant_id="t", actor="a", title="bad\x00title")


@given(outcomes=st.lists(st.sampled_from(["answer", "fail", "retry"]), max_size=8))
def test_replaying_the_events_rebuilds_the_same_state(outcomes: list[str]) -> None:
    conversation = Conversation.start(tenant_id="t", actor="key:a", title="replay")
    events: list[Aggregate.Event] = list(conversation.collect_events())
    for outcome in outcomes:
        turn = conversation.ask(
            actor="key:a", question=f"q{len(conversation.turns)}", model="m", mode="hybrid",
            k=5, flags=[],
        )  # fmt: skip
        if outcome == "fail":
            conversation.record_failure(actor="s", turn=turn, code="c", reason="r", attempts=[])
        else:
            conversation.record_answer(actor="s", turn=turn, **_answer(turn))
            if outcome == "retry":
                assert not conversation.record_answer(actor="s", turn=turn, **_answer(turn))
        events.extend(conversation.collect_events())
    replayed = _replay(conversation, events)
    assert replayed.turns == conversation.turns
    assert replayed.history() == conversation.history()
    assert replayed.version == conversation.version == len(events)


def test_events_recorded_before_version_2_are_read_with_the_new_fields() -> None:
    """v1 Started had no origin, v1 QuestionAsked no prompt digest: upcasting fills them in."""
    from eventsourcing.persistence import (
        DatetimeAsISO,
        JSONTranscoder,
        Mapper,
        StoredEvent,
        UUIDAsHex,
    )

    transcoder = JSONTranscoder()
    transcoder.register(UUIDAsHex())
    transcoder.register(DatetimeAsISO())
    mapper: Mapper[Any] = Mapper(transcoder=transcoder)
    conversation = Conversation.start(tenant_id="t", actor="key:a", title="old")
    conversation.ask(actor="key:a", question="q", model="m", mode="hybrid", k=5, flags=[])
    stored = [mapper.to_stored_event(e) for e in conversation.collect_events()]
    old = []
    for event, dropped in zip(
        stored, (["origin"], ["prompt_sha256", "history_turns"]), strict=True
    ):
        state = json.loads(event.state)
        assert state.pop("class_version") == 2
        for name in dropped:
            del state[name]
        old.append(StoredEvent(event.originator_id, event.originator_version, event.topic,
                               json.dumps(state).encode()))  # fmt: skip
    started, asked = (mapper.to_domain_event(e) for e in old)
    assert started.origin == "conversations"  # type: ignore[attr-defined]
    assert asked.prompt_sha256 is None and asked.history_turns == 0  # type: ignore[attr-defined]
    replayed = _replay(conversation, [started, asked])  # type: ignore[list-item]
    assert replayed.origin == "conversations" and replayed.started_by == "key:a"
    assert replayed.pending_turn == 1


def test_only_its_starter_or_an_admin_may_see_a_conversation() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    conversation = Conversation.start(tenant_id="t", actor=f"key:{a}")
    assert conversation.visible_to(Principal(tenant_id="t", role=Role.VIEWER, key_id=a))
    assert not conversation.visible_to(Principal(tenant_id="t", role=Role.EDITOR, key_id=b))
    assert conversation.visible_to(Principal(tenant_id="t", role=Role.ADMIN, key_id=b))
    with pytest.raises(InvalidConversationError):
        Conversation.start(tenant_id="t", actor="a", origin="elsewhere")

"""A projector sent events it does not apply acks them without a transaction, and records
its stream offset only with the next batch it applies or once the interval has passed."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast
from uuid import uuid4

import pytest

from infra.bus import HEADER_BATCH, HEADER_CONTEXT, HEADER_POSITION
from infra.envelope import Envelope
from projections import runner as runner_module
from projections.runner import ProjectorRunner


class _View:
    """What the runner asks of a view: its positions, and batches applied with an offset."""

    name = "stub"
    contexts = ("documents",)

    def __init__(self) -> None:
        self.positions = {"documents": 0}
        self.applied: list[tuple[list[int], str, int]] = []

    @property
    def members(self) -> tuple[_View, ...]:
        return (self,)

    def position(self, context: str) -> int:
        return self.positions[context]

    def apply_batch(self, envelopes: list[Envelope], stream: str, sequence: int) -> None:
        self.applied.append(([e.position for e in envelopes], stream, sequence))
        for envelope in envelopes:
            self.positions[envelope.context] = envelope.position


def _envelope(position: int) -> Envelope:
    return Envelope(
        context="documents",
        position=position,
        event_type="Document.Uploaded",
        topic="domain.documents:Document.Uploaded",
        aggregate_id=str(uuid4()),
        aggregate_version=1,
        tenant_id=str(uuid4()),
        actor="key:test",
        timestamp="2026-12-04T00:00:00+00:00",
        data={},
    )


class _Msg:
    def __init__(self, context: str, position: int, sequence: int) -> None:
        self.headers = {HEADER_CONTEXT: context, HEADER_POSITION: str(position)}
        self.metadata = SimpleNamespace(sequence=SimpleNamespace(stream=sequence))
        self.data = (
            _envelope(position).to_json() if context == "documents" else b"not ours: never parsed"
        )
        self.acked = False

    async def ack(self) -> None:
        self.acked = True


def _runner(view: _View) -> ProjectorRunner:
    bus: Any = SimpleNamespace(stream="KF_TEST")
    logs: Any = {"documents": object(), "activity": object()}
    return ProjectorRunner(view, logs, bus, locks=SimpleNamespace())  # type: ignore[arg-type]


def test_batches_of_only_other_contexts_are_acked_without_a_transaction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    view = _View()
    runner = _runner(view)
    clock = {"now": 1000.0}

    async def apply(batch: list[_Msg]) -> None:
        await runner._apply(cast("list[Any]", batch))

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        monkeypatch.setattr(loop, "time", lambda: clock["now"])
        first = [_Msg("activity", 1, 1), _Msg("activity", 2, 2)]
        await apply(first)  # never recorded yet: the offset is written once
        assert view.applied == [([], "KF_TEST", 2)]
        second = [_Msg("activity", 3, 3)]
        clock["now"] += runner_module._SKIPPED_OFFSET_EVERY_S - 1
        await apply(second)  # within the interval: acked, no transaction
        assert len(view.applied) == 1
        ours = [_Msg("activity", 4, 4), _Msg("documents", 1, 5), _Msg("activity", 5, 6)]
        await apply(ours)  # something to apply: applied with the offset
        assert view.applied[-1] == ([1], "KF_TEST", 6)
        again = [_Msg("documents", 1, 7)]  # a redelivery: already applied, skipped
        clock["now"] += 1
        await apply(again)
        assert len(view.applied) == 2
        clock["now"] += runner_module._SKIPPED_OFFSET_EVERY_S
        later = [_Msg("activity", 6, 8)]
        await apply(later)  # the interval has passed: the offset is recorded
        assert view.applied[-1] == ([], "KF_TEST", 8)
        for batch in (first, second, ours, again, later):
            assert batch[-1].acked

    asyncio.run(scenario())


class _BatchMsg(_Msg):
    """A relay's batch message: several events, headed by the last one's position."""

    def __init__(self, positions: list[int], sequence: int) -> None:
        super().__init__("documents", positions[-1], sequence)
        self.headers[HEADER_BATCH] = str(len(positions))
        self.data = Envelope.batch_to_json([_envelope(p).to_json() for p in positions])


def test_a_batch_message_applies_each_event_once_even_when_delivered_again() -> None:
    view = _View()
    runner = _runner(view)

    async def scenario() -> None:
        await runner._apply(cast("list[Any]", [_BatchMsg([1, 2, 3], 1)]))
        assert view.applied == [([1, 2, 3], "KF_TEST", 1)]
        # Delivered again with a message holding what follows: only the new events.
        again = [_BatchMsg([1, 2, 3], 1), _BatchMsg([4, 5], 2)]
        await runner._apply(cast("list[Any]", again))
        assert view.applied[-1] == ([4, 5], "KF_TEST", 2)
        # A view that applied part of a batch (from the event store, say) takes the rest.
        view.positions["documents"] = 7
        await runner._apply(cast("list[Any]", [_BatchMsg([6, 7, 8, 9], 3)]))
        assert view.applied[-1] == ([8, 9], "KF_TEST", 3)
        assert runner_module._events_in(cast("Any", _BatchMsg([6, 7, 8, 9], 3))) == 4
        assert runner_module._events_in(cast("Any", _Msg("documents", 1, 4))) == 1

    asyncio.run(scenario())

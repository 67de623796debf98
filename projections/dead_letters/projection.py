"""Dead letters as rows: one per letter, its state following ``DeadLetter.*`` events."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from domain.activity import DeadLetter, DeadLetterState
from infra.envelope import Envelope
from projections.base import Projection, handles
from projections.rows import Rows

LETTERS = "dead_letters"


class DeadLettersProjection(Projection):
    name = "dead_letters"
    tables = {LETTERS: ("tenant_id", "letter_id")}

    @handles(DeadLetter.Parked)
    def _parked(self, rows: Rows, envelope: Envelope) -> None:
        data = envelope.data
        rows.insert(
            LETTERS,
            {
                "tenant_id": envelope.tenant_id,
                "letter_id": UUID(envelope.aggregate_id),
                "component": data["component"],
                "subject": data["subject"],
                "context": data["context"],
                "event_position": data["position"],
                "event_type": data["event_type"],
                "aggregate_id": data["aggregate_id"],
                "attempts": data["attempts"],
                "error": data["error"],
                "state": DeadLetterState.PARKED.value,
                "parked_at": envelope.occurred_at,
                "updated_at": envelope.occurred_at,
                "updated_by": envelope.actor,
                "reason": "",
                "position": envelope.position,
            },
        )

    @handles(DeadLetter.Reparked)
    def _reparked(self, rows: Rows, envelope: Envelope) -> None:
        key = self._key(envelope)
        current = rows.select(LETTERS, key)
        attempts = (current[0]["attempts"] if current else 0) + envelope.data["attempts"]
        self._update(
            rows,
            envelope,
            DeadLetterState.PARKED,
            {"attempts": attempts, "error": envelope.data["error"], "reason": ""},
        )

    @handles(DeadLetter.RetryRequested)
    def _retrying(self, rows: Rows, envelope: Envelope) -> None:
        self._update(rows, envelope, DeadLetterState.RETRYING, {"reason": envelope.data["reason"]})

    @handles(DeadLetter.Resolved)
    def _resolved(self, rows: Rows, envelope: Envelope) -> None:
        self._update(rows, envelope, DeadLetterState.RESOLVED, {})

    @handles(DeadLetter.Dropped)
    def _dropped(self, rows: Rows, envelope: Envelope) -> None:
        self._update(rows, envelope, DeadLetterState.DROPPED, {"reason": envelope.data["reason"]})

    @staticmethod
    def _key(envelope: Envelope) -> dict[str, Any]:
        return {"tenant_id": envelope.tenant_id, "letter_id": UUID(envelope.aggregate_id)}

    def _update(
        self, rows: Rows, envelope: Envelope, state: DeadLetterState, values: dict[str, Any]
    ) -> None:
        rows.update(
            LETTERS,
            self._key(envelope),
            {
                **values,
                "state": state.value,
                "updated_at": envelope.occurred_at,
                "updated_by": envelope.actor,
                "position": envelope.position,
            },
        )

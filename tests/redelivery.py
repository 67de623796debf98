"""Feeding a read model its events the way JetStream may redeliver them."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st

from infra.envelope import Envelope
from projections.base import ProjectionView


def deliver_with_repeats(
    view: ProjectionView, envelopes: Sequence[Envelope], data: st.DataObject
) -> None:
    """Every envelope, in batches that may each repeat any earlier part (a redelivery)."""
    delivered = 0
    while delivered < len(envelopes):
        replay_from = data.draw(st.integers(0, delivered))
        take = data.draw(st.integers(1, len(envelopes) - delivered))
        view.apply_batch(envelopes[replay_from : delivered + take])
        delivered += take

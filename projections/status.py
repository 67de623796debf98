"""Where each relay and read model stands against the event store's head."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from eventsourcing.persistence import TrackingRecorder

from infra.eventlog import EventLog
from projections.base import ProjectionView


@dataclass(frozen=True)
class ContextPosition:
    context: str
    position: int
    head: int

    @property
    def lag(self) -> int:
        return max(0, self.head - self.position)


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    kind: str  # "relay" or "projection"
    contexts: list[ContextPosition]

    @property
    def lag(self) -> int:
        return sum(c.lag for c in self.contexts)


def collect_status(
    views: Sequence[ProjectionView],
    logs: Mapping[str, EventLog],
    relay_tracking: TrackingRecorder,
) -> list[ComponentStatus]:
    heads = {context: log.head() for context, log in logs.items()}
    statuses = [
        ComponentStatus(
            name=f"relay-{context}",
            kind="relay",
            contexts=[
                ContextPosition(
                    context, relay_tracking.max_tracking_id(context) or 0, heads[context]
                )
            ],
        )
        for context in logs
    ]
    for view in views:
        statuses.append(
            ComponentStatus(
                name=view.name,
                kind="projection",
                contexts=[
                    ContextPosition(c, view.max_tracking_id(c) or 0, heads.get(c, 0))
                    for c in view.contexts
                ],
            )
        )
    return statuses

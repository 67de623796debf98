"""Reading a context's notification log as envelopes, straight from PostgreSQL.

The relay publishes these envelopes; projectors catch up with them when the
stream no longer holds what they need; rebuilds replay them. One builder, so
an event looks the same whichever way it reaches a read model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import Notification

from infra.envelope import Envelope


class EventLog:
    def __init__(self, context: str, app: Application[UUID]) -> None:
        self.context = context
        self._app = app

    def envelope(self, notification: Notification) -> Envelope:
        event = self._app.mapper.to_domain_event(notification)
        return Envelope.from_event(
            self.context,
            notification.id,
            notification.topic,
            event,
            stored_sha256=hashlib.sha256(notification.state).hexdigest(),
        )

    def read(self, after: int, limit: int) -> Sequence[Envelope]:
        notifications = self._app.recorder.select_notifications(
            start=after, limit=limit, inclusive_of_start=False
        )
        return [self.envelope(n) for n in notifications]

    def read_all(self, after: int, batch: int = 500) -> Iterator[Sequence[Envelope]]:
        """Batches of everything after ``after``, up to the head as it is now."""
        head = self.head()
        while after < head:
            envelopes = self.read(after, batch)
            if not envelopes:
                return
            yield envelopes
            after = envelopes[-1].position

    def head(self) -> int:
        return self._app.recorder.max_notification_id() or 0

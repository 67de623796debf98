"""Delivering budget alerts: each ``BudgetAlert.Raised`` to every channel, once.

The notifier follows the usage context's events from the event store (its position
in ``notifier_tracking``), and for each alert raised tries every configured channel
(webhooks, email) up to ``max_attempts`` times with a doubling backoff. What came of
it is recorded on the alert: ``Delivered`` (with the receiver's answer) or
``DeliveryFailed`` (with the last error), per channel. An alert already delivered to a
channel is not sent there again, so a notifier that restarts mid-way carries on
without sending twice what it had recorded. It runs beside the API, never in a
question's path: a dead webhook delays only other alerts, never a question.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import structlog
from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresTrackingRecorder

from commands.base import ConcurrencyConflictError
from commands.usage import UsageApp
from domain.usage import BudgetAlert
from infra.db import SessionLock
from infra.envelope import Envelope
from infra.eventlog import EventLog
from infra.notify import Channel

log = structlog.get_logger(__name__)

TRACKING_TABLE = "notifier_tracking"
RAISED = "BudgetAlert.Raised"


class Notifier:
    def __init__(
        self,
        usage: UsageApp,
        channels: Sequence[Channel],
        tracking: PostgresTrackingRecorder,
        lock: SessionLock,
        *,
        max_attempts: int = 5,
        backoff_s: float = 1.0,
        poll_s: float = 1.0,
    ) -> None:
        self._usage = usage
        self._log = EventLog("usage", usage)
        self._channels = list(channels)
        self._tracking = tracking
        self._lock = lock  # one notifier at a time, whatever runs it
        self._max_attempts = max_attempts
        self._backoff_s = backoff_s
        self._poll_s = poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alert-notifier", daemon=True)

    def start(self) -> None:
        if self._channels:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    if not self._lock.try_acquire() or not self.deliver_pending():
                        self._stop.wait(self._poll_s)
                except Exception:
                    log.exception("alert_notifier_failed")
                    self._lock.release()
                    self._stop.wait(self._poll_s)
        finally:
            self._lock.release()

    def deliver_pending(self, limit: int = 100) -> int:
        """Deliver the alerts raised after the tracked position; how many events were read."""
        after = self._tracking.max_tracking_id("usage") or 0
        envelopes = self._log.read(after, limit)
        for envelope in envelopes:
            if envelope.event_type == RAISED:
                self._deliver(envelope)
            self._tracking.insert_tracking(Tracking("usage", envelope.position))
        return len(envelopes)

    @staticmethod
    def message(envelope: Envelope) -> dict[str, Any]:
        data = envelope.data
        return {
            "alert_id": envelope.aggregate_id,
            "tenant_id": envelope.tenant_id,
            "budget": data["budget"],
            "threshold": data["threshold"],
            "period_start": data["period_start"],
            "limit": data["limit"],
            "used": data["used"],
            "raised_at": envelope.timestamp,
        }

    def _deliver(self, envelope: Envelope) -> None:
        alert_id = UUID(envelope.aggregate_id)
        message = self.message(envelope)
        for channel in self._channels:
            alert: BudgetAlert = self._usage.repository.get(alert_id)
            if channel.name in alert.done:
                continue  # recorded before a restart: not again
            attempts, error, answer = 0, "", ""
            delay = self._backoff_s
            while attempts < self._max_attempts and not self._stop.is_set():
                attempts += 1
                try:
                    answer = channel.send(message)
                    error = ""
                    break
                except Exception as exc:  # a dead receiver: retried, then recorded
                    error = repr(exc)
                    log.warning("alert_delivery_retry", channel=channel.name,
                                attempt=attempts, error=error)  # fmt: skip
                    if attempts < self._max_attempts:
                        self._stop.wait(delay)
                        delay *= 2
            if error and self._stop.is_set() and attempts < self._max_attempts:
                return  # stopping: the next notifier tries again
            if error:
                alert.record_failure(channel=channel.name, attempts=attempts, error=error)
            else:
                alert.record_delivery(channel=channel.name, attempts=attempts, detail=answer)
            with contextlib.suppress(ConcurrencyConflictError):  # recorded meanwhile elsewhere
                self._usage.record(alert)
            log.info("alert_delivery", channel=channel.name, delivered=not error,
                     attempts=attempts, budget=message["budget"])  # fmt: skip

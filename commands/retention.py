"""Retention: the trash emptied, and what a tenant keeps no longer than it chose, erased.

Every run erases, each as an event like a manual erasure (actor
``system:retention``, cause ``trash`` or ``retention``):

- documents deleted more than ``deleted_days`` ago (the trash; default 30);
- documents uploaded more than ``documents_days`` ago, where the tenant set it;
- conversations idle for more than ``conversations_days``, where the tenant set it.

Documents under legal hold are skipped (and counted). Which documents and
conversations are due is asked of the read side through ``RetentionCandidates``
(the catalog and the conversations read models); each erasure is decided again
on the aggregate, so a candidate restored, held or erased meanwhile is left as
it is. ``RetentionRunner`` runs it periodically in ``kf serve``, one process at a
time (an advisory lock).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol
from uuid import UUID

import structlog

from commands.conversations import ConversationsApp
from commands.documents import DocumentsApp
from domain.document import DocumentNotFoundError, LegalHoldError
from domain.errors import ConflictError
from infra.db import SessionLock

log = structlog.get_logger(__name__)

ACTOR = "system:retention"


@dataclass(frozen=True)
class Policy:
    """One tenant's retention (days; None: kept until someone deletes or erases it)."""

    deleted_days: int
    documents_days: int | None = None
    conversations_days: int | None = None


class RetentionCandidates(Protocol):
    """The port onto the read side: what is due, by tenant."""

    def tenants(self) -> Sequence[str]: ...

    def deleted_before(self, tenant_id: str, cutoff: datetime) -> Sequence[UUID]: ...

    def uploaded_before(self, tenant_id: str, cutoff: datetime) -> Sequence[UUID]: ...

    def conversations_idle_since(self, tenant_id: str, cutoff: datetime) -> Sequence[UUID]: ...


@dataclass
class RetentionReport:
    trash_erased: list[str] = field(default_factory=list)
    documents_erased: list[str] = field(default_factory=list)
    conversations_erased: list[str] = field(default_factory=list)
    held_skipped: list[str] = field(default_factory=list)
    dry_run: bool = False

    def summary(self) -> dict[str, object]:
        return {
            "trash_erased": len(self.trash_erased),
            "documents_erased": len(self.documents_erased),
            "conversations_erased": len(self.conversations_erased),
            "held_skipped": len(self.held_skipped),
            "dry_run": self.dry_run,
        }


class Retention:
    def __init__(
        self,
        documents: DocumentsApp,
        conversations: ConversationsApp,
        candidates: RetentionCandidates,
        policy_for: Callable[[str], Policy],
    ) -> None:
        self._documents = documents
        self._conversations = conversations
        self._candidates = candidates
        self._policy_for = policy_for

    def run(
        self, now: datetime, *, tenant_id: str | None = None, dry_run: bool = False
    ) -> RetentionReport:
        report = RetentionReport(dry_run=dry_run)
        tenants = [tenant_id] if tenant_id is not None else list(self._candidates.tenants())
        for tenant in tenants:
            policy = self._policy_for(tenant)
            cutoff = now - timedelta(days=policy.deleted_days)
            for document_id in self._candidates.deleted_before(tenant, cutoff):
                self._erase_document(tenant, document_id, "trash", report.trash_erased, report)
            if policy.documents_days is not None:
                cutoff = now - timedelta(days=policy.documents_days)
                for document_id in self._candidates.uploaded_before(tenant, cutoff):
                    self._erase_document(
                        tenant, document_id, "retention", report.documents_erased, report
                    )
            if policy.conversations_days is not None:
                cutoff = now - timedelta(days=policy.conversations_days)
                for conversation_id in self._candidates.conversations_idle_since(tenant, cutoff):
                    if not dry_run:
                        self._conversations.erase_conversation(
                            tenant_id=tenant,
                            actor=ACTOR,
                            conversation_id=conversation_id,
                            cause="retention",
                        )
                    report.conversations_erased.append(str(conversation_id))
        log.info("retention_run", **report.summary())
        return report

    def _erase_document(
        self,
        tenant_id: str,
        document_id: UUID,
        cause: str,
        erased: list[str],
        report: RetentionReport,
    ) -> None:
        try:
            document = self._documents.get_document(tenant_id, document_id)
        except DocumentNotFoundError:
            return
        if document.is_erased:
            return
        if document.held:
            report.held_skipped.append(str(document_id))
            return
        if cause == "trash" and not document.is_deleted:
            return  # restored meanwhile
        if report.dry_run:
            erased.append(str(document_id))
            return
        try:
            result = self._documents.erase_document(
                tenant_id=tenant_id, actor=ACTOR, document_id=document_id, cause=cause
            )
        except LegalHoldError:
            report.held_skipped.append(str(document_id))  # held meanwhile
            return
        except ConflictError:
            log.warning("retention_conflict", document_id=str(document_id))
            return  # changed meanwhile: the next run decides again
        if result.changed:
            erased.append(str(document_id))


class RetentionRunner:
    """Runs retention every ``every_s`` in a thread, in one process at a time: the first time
    soon after start (``first_after_s``, at most ``every_s``), so that a process restarted more
    often than ``every_s`` still runs it."""

    def __init__(
        self,
        retention: Retention,
        lock: SessionLock,
        every_s: float,
        clock: Callable[[], datetime],
        first_after_s: float = 60.0,
    ) -> None:
        self._retention = retention
        self._lock = lock
        self._every_s = every_s
        self._first_after_s = min(first_after_s, every_s)
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        self._lock.release()

    def _run(self) -> None:
        wait = self._first_after_s
        while not self._stop.wait(wait):
            wait = self._every_s
            try:
                if self._lock.try_acquire():
                    self._retention.run(self._clock())
            except Exception:
                log.exception("retention_failed")
                self._lock.release()

"""The activity context: what was shown to whom, and which requests were refused.

Reads are recorded, not only writes. Each read of content (a search, a
document, a transcript, a recorded prompt, the audit trail) is one ``Read``
aggregate with one event: no stream that every reader appends to, so
recording never makes readers wait on each other. An event carries ids and
digests, never content: which documents and chunks were shown, and the
SHA-256 of the query, whose text is kept apart (a blob that only auditors
read, each such reading itself a ``Read``).

A ``Refusal`` records a request turned away (no or a bad credential, a role
that does not allow the route), with how many refusals of the same client
were not recorded since the previous one (they are throttled, so a flood
cannot fill the disk, but never uncounted).

A ``Retention`` records that access records (reads and refusals) older than a
cutoff leave the tenant's read models (the audit trail and who-saw): access
records are kept ``audit.access_retention_days``, not for ever. The events
themselves stay in the event store, so every chain still verifies.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import uuid4

from eventsourcing.domain import Aggregate

from domain.errors import ValidationError

MAX_SHOWN = 1000  # ids per read: keeps every event far below 64 KB
# Where refusals that name no tenant (no credential, an unknown one) are recorded.
NO_TENANT = "00000000-0000-0000-0000-000000000000"
# The events that record access (and that retention drops from read models).
ACCESS_EVENTS = ("Read.Recorded", "Refusal.Recorded")
MAX_RETENTION_DAYS = 36_500


class ReadKind(StrEnum):
    SEARCH = "search"
    DOCUMENT = "document"
    HISTORY = "history"
    TRANSCRIPT = "transcript"
    PROMPT = "prompt"
    PROVENANCE = "provenance"
    FILE = "file"
    AUDIT_QUERY = "audit_query"
    AUDIT_EXPORT = "audit_export"
    QUERY_TEXT = "query_text"
    READERS = "readers"

    @property
    def shows_content(self) -> bool:
        """Whether a read of this kind shows what documents say (not only about them)."""
        return self in _SHOWING


_SHOWING = frozenset(
    {
        ReadKind.SEARCH,
        ReadKind.DOCUMENT,
        ReadKind.TRANSCRIPT,
        ReadKind.PROMPT,
        ReadKind.PROVENANCE,
        ReadKind.FILE,
    }
)


class Read(Aggregate):
    class Event(Aggregate.Event):
        tenant_id: str
        actor: str

    class Recorded(Event, Aggregate.Created):
        kind: str
        route: str
        role: str
        query_sha256: str | None
        documents: list[str]
        chunks: list[str]
        mode: str | None  # v2: a search's retrieval mode (None for other reads and before v2)

        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["mode"] = None

    def __init__(
        self,
        tenant_id: str,
        kind: str,
        route: str,
        documents: list[str],
        chunks: list[str],
    ) -> None:
        self.tenant_id = tenant_id
        self.kind = ReadKind(kind)
        self.route = route
        self.documents = documents
        self.chunks = chunks

    @classmethod
    def record(
        cls,
        *,
        tenant_id: str,
        actor: str,
        role: str,
        kind: ReadKind,
        route: str,
        query_sha256: str | None = None,
        documents: list[str] | None = None,
        chunks: list[str] | None = None,
        mode: str | None = None,
    ) -> Read:
        shown_documents = list(dict.fromkeys(documents or []))
        shown_chunks = list(dict.fromkeys(chunks or []))
        if len(shown_documents) > MAX_SHOWN or len(shown_chunks) > MAX_SHOWN:
            raise InvalidReadError(f"A read records at most {MAX_SHOWN} documents and chunks.")
        return cls._create(
            cls.Recorded,
            id=uuid4(),
            tenant_id=tenant_id,
            actor=actor,
            role=role,
            kind=kind.value,
            route=route,
            query_sha256=query_sha256,
            documents=shown_documents,
            chunks=shown_chunks,
            mode=mode,
        )


class Refusal(Aggregate):
    class Event(Aggregate.Event):
        tenant_id: str  # NO_TENANT when no credential named a tenant
        actor: str  # who the credential claimed to be (never the secret)

    class Recorded(Event, Aggregate.Created):
        reason: str
        status: int
        route: str
        client: str
        suppressed: int  # this client's refusals not recorded since its previous one

    def __init__(self, tenant_id: str, reason: str) -> None:
        self.tenant_id = tenant_id
        self.reason = reason

    @classmethod
    def record(
        cls,
        *,
        tenant_id: str,
        claimed: str,
        reason: str,
        status: int,
        route: str,
        client: str,
        suppressed: int = 0,
    ) -> Refusal:
        return cls._create(
            cls.Recorded,
            id=uuid4(),
            tenant_id=tenant_id,
            actor=claimed,
            reason=reason,
            status=status,
            route=route,
            client=client,
            suppressed=suppressed,
        )


class Retention(Aggregate):
    class Event(Aggregate.Event):
        tenant_id: str
        actor: str

    class Applied(Event, Aggregate.Created):
        cutoff: str  # ISO 8601: access records from before it leave the read models
        retention_days: int
        reason: str

    def __init__(self, tenant_id: str, cutoff: str, retention_days: int) -> None:
        self.tenant_id = tenant_id
        self.cutoff = cutoff
        self.retention_days = retention_days

    @classmethod
    def record(
        cls, *, tenant_id: str, actor: str, now: datetime, retention_days: int, reason: str = ""
    ) -> Retention:
        if not 1 <= retention_days <= MAX_RETENTION_DAYS:
            raise InvalidRetentionError(
                f"Retention is 1 to {MAX_RETENTION_DAYS} days, not {retention_days}."
            )
        if now.tzinfo is None:
            raise InvalidRetentionError("The time retention counts from needs a time zone.")
        if len(reason) > 500:
            raise InvalidRetentionError("The reason is at most 500 characters.")
        return cls._create(
            cls.Applied,
            id=uuid4(),
            tenant_id=tenant_id,
            actor=actor,
            cutoff=(now - timedelta(days=retention_days)).isoformat(),
            retention_days=retention_days,
            reason=reason,
        )


class InvalidRetentionError(ValidationError):
    code = "invalid_retention"


class InvalidReadError(ValidationError):
    code = "invalid_read"

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

A ``DeadLetter`` records a message a component gave up on after its attempts (a
worker's stage, a read model's projector): parked, not redelivered for ever, with what
an operator did about it (retried, dropped) and whether a retry went through.

A ``Retention`` records that access records (reads and refusals) older than a
cutoff leave the tenant's read models (the audit trail and who-saw): access
records are kept ``audit.access_retention_days``, not for ever. The events
themselves stay in the event store, so every chain still verifies.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from eventsourcing.domain import Aggregate

from domain.errors import DomainError, ValidationError

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


class DeadLetterState(StrEnum):
    PARKED = "parked"  # given up on: waiting for an operator
    RETRYING = "retrying"  # an operator asked for another go
    RESOLVED = "resolved"  # the retry went through
    DROPPED = "dropped"  # an operator gave it up for good


MAX_ERROR = 1000  # characters of the error kept with a dead letter


@dataclass(frozen=True)
class ParkedMessage:
    """What a component gave up on: the event (context, position, type, aggregate) that
    kept failing in it, for which subject, after how many attempts and with what error."""

    tenant_id: str
    component: str  # "worker:parse", "projection:catalog"
    subject: str  # what is parked: "documents:42" (an event), "document:<id>"
    context: str  # of the event that failed
    position: int
    event_type: str
    aggregate_id: str
    attempts: int
    error: str


class DeadLetter(Aggregate):
    """A message that kept failing in one component, parked after its attempts.

    One per component and subject: for a projector the event (its context and position),
    for a worker the document; so parking the same thing twice records nothing new, and
    a retry that fails again parks it again (``Reparked``). A projector waits on its
    dead letter (it must apply in order); a worker fails the document and goes on, and
    a retry sends the document through the stage again."""

    class Event(Aggregate.Event):
        tenant_id: str
        actor: str

    class Parked(Event, Aggregate.Created):
        component: str  # "worker:parse", "projection:catalog"
        subject: str  # what is parked: "documents:42" (an event), "document:<id>"
        context: str  # of the event that failed
        position: int
        event_type: str
        aggregate_id: str
        attempts: int
        error: str

    class Reparked(Event):
        attempts: int
        error: str

        def apply(self, aggregate: Any) -> None:
            letter: DeadLetter = aggregate
            letter.state = DeadLetterState.PARKED
            letter.attempts += self.attempts
            letter.error = self.error

    class RetryRequested(Event):
        reason: str

        def apply(self, aggregate: Any) -> None:
            letter: DeadLetter = aggregate
            letter.state = DeadLetterState.RETRYING

    class Resolved(Event):
        def apply(self, aggregate: Any) -> None:
            letter: DeadLetter = aggregate
            letter.state = DeadLetterState.RESOLVED

    class Dropped(Event):
        reason: str

        def apply(self, aggregate: Any) -> None:
            letter: DeadLetter = aggregate
            letter.state = DeadLetterState.DROPPED

    def __init__(
        self,
        tenant_id: str,
        component: str,
        subject: str,
        context: str,
        position: int,
        event_type: str,
        aggregate_id: str,
        attempts: int,
        error: str,
    ) -> None:
        self.tenant_id = tenant_id
        self.component = component
        self.subject = subject
        self.context = context
        self.position = position
        self.event_type = event_type
        self.aggregate_id = aggregate_id
        self.attempts = attempts
        self.error = error
        self.state = DeadLetterState.PARKED

    @staticmethod
    def id_for(component: str, subject: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"kf:dead-letter:{component}:{subject}")

    @classmethod
    def park(cls, message: ParkedMessage, *, actor: str) -> DeadLetter:
        return cls._create(
            cls.Parked,
            id=cls.id_for(message.component, message.subject),
            tenant_id=message.tenant_id,
            actor=actor,
            component=message.component,
            subject=message.subject,
            context=message.context,
            position=message.position,
            event_type=message.event_type,
            aggregate_id=message.aggregate_id,
            attempts=message.attempts,
            error=message.error[:MAX_ERROR],
        )

    @property
    def is_projection(self) -> bool:
        return self.component.startswith("projection:")

    def park_again(self, *, actor: str, attempts: int, error: str) -> bool:
        """A retry that failed as well (or the subject failing again after it was resolved
        or dropped); False if it is parked already (nothing new)."""
        if self.state is DeadLetterState.PARKED:
            return False
        self.trigger_event(
            self.Reparked,
            tenant_id=self.tenant_id,
            actor=actor,
            attempts=attempts,
            error=error[:MAX_ERROR],
        )
        return True

    def request_retry(self, *, actor: str, reason: str = "") -> bool:
        """Another go; False if one is asked for already."""
        _check_reason(reason)
        if self.state is DeadLetterState.RETRYING:
            return False
        if self.state is not DeadLetterState.PARKED:
            raise DeadLetterStateError(f"A {self.state.value} dead letter cannot be retried.")
        self.trigger_event(
            self.RetryRequested, tenant_id=self.tenant_id, actor=actor, reason=reason
        )
        return True

    def resolve(self, *, actor: str) -> bool:
        """The retry went through; False unless a retry was asked for."""
        if self.state is not DeadLetterState.RETRYING:
            return False
        self.trigger_event(self.Resolved, tenant_id=self.tenant_id, actor=actor)
        return True

    def drop(self, *, actor: str, reason: str = "") -> bool:
        """Give it up for good (a projector then goes on past it); False if dropped already."""
        _check_reason(reason)
        if self.state is DeadLetterState.DROPPED:
            return False
        if self.state is DeadLetterState.RESOLVED:
            raise DeadLetterStateError("A resolved dead letter cannot be dropped.")
        self.trigger_event(self.Dropped, tenant_id=self.tenant_id, actor=actor, reason=reason)
        return True


class DeadLetterBox(Protocol):
    """Where components park what they gave up on (the composition root provides it)."""

    def park(self, message: ParkedMessage) -> UUID:
        """Record the dead letter (or park a retried one again); its id."""
        ...

    def state(self, letter_id: UUID) -> DeadLetterState | None:
        """Where it stands now (None: no such letter)."""
        ...

    def resolve(self, letter_id: UUID, component: str) -> bool:
        """Its retry went through; False unless a retry was asked for."""
        ...


def _check_reason(reason: str) -> None:
    if len(reason) > 500:
        raise InvalidDeadLetterActionError("The reason is at most 500 characters.")


class DeadLetterStateError(DomainError):
    code = "dead_letter_state"


class InvalidDeadLetterActionError(ValidationError):
    code = "invalid_dead_letter_action"


class InvalidRetentionError(ValidationError):
    code = "invalid_retention"


class InvalidReadError(ValidationError):
    code = "invalid_read"

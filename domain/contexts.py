"""The bounded contexts, the aggregates each records, and the events they record.

This is what read models may follow: a projection names event classes from
here (or every event of every context), and one that names anything else fails
when its class is defined, that is when the program starts. An envelope's
``event_type`` is the event class's qualified name (``Document.Uploaded``).
"""

from __future__ import annotations

from collections.abc import Mapping

from eventsourcing.domain import Aggregate, DomainEvent

from domain.access import ApiKey, Session, Tenant, User
from domain.activity import DeadLetter, Read, Refusal, Retention
from domain.conversation import Conversation
from domain.document import Document
from domain.usage import BudgetAlert, BudgetRefusal, Budgets, PriceBook, Repricing

EventClass = type[DomainEvent]

CONTEXTS: Mapping[str, tuple[type[Aggregate], ...]] = {
    "documents": (Document,),
    "access": (Tenant, ApiKey, User, Session),
    "conversations": (Conversation,),
    "activity": (Read, Refusal, Retention, DeadLetter),
    "usage": (PriceBook, Repricing, Budgets, BudgetRefusal, BudgetAlert),
}


def event_type(event_class: type) -> str:
    """What envelopes call events of this class (its qualified name)."""
    return event_class.__qualname__


def recorded_events(aggregate: type[Aggregate]) -> tuple[EventClass, ...]:
    """The event classes an aggregate records: its nested events that nothing extends.

    The library gives every aggregate a ``Created`` class; an aggregate that
    names its own creation event (``Document.Uploaded``) never records that one.
    """
    nested = [
        value
        for value in vars(aggregate).values()
        if isinstance(value, type) and issubclass(value, DomainEvent)
    ]
    leaves = [c for c in nested if not any(o is not c and issubclass(o, c) for o in nested)]
    creations = [c for c in leaves if issubclass(c, Aggregate.Created)]
    if len(creations) > 1:
        leaves = [c for c in leaves if not (c.__name__ == "Created" and c in creations)]
    return tuple(leaves)


EVENTS: Mapping[str, Mapping[str, EventClass]] = {
    context: {
        event_type(event): event for aggregate in aggregates for event in recorded_events(aggregate)
    }
    for context, aggregates in CONTEXTS.items()
}

_CONTEXT_OF: Mapping[EventClass, str] = {
    event: context for context, events in EVENTS.items() for event in events.values()
}


def context_of(event_class: type) -> str | None:
    """The context that records ``event_class`` (None: not an event any context records)."""
    return _CONTEXT_OF.get(event_class)

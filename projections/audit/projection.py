"""What every event of every context becomes in the audit trail: who did what, to what, when.

One entry per event (``EVERY_EVENT``): the action (the event's type), the
resource (the aggregate's type, id and version), the context and position,
when, the actor and the role it acted with, where the command came from when
the event says so, and a summary of the change: the names of every field the
event carries, with the values of those that are neither content nor secrets.
Document text, file names, titles, questions, answers, failure messages and
secret digests are named, never shown. An actor's role is the one its key was
issued with (``audit_actors``, kept from ``ApiKey.Issued``; a person's, the role
they were invited with, from ``User.Invited``), looked up when the
trail is read: the projector sees each context in order but not the contexts
relative to each other (a rebuild replays them one after another), so no entry
may depend on whether the key's issue was applied before the entry's event.

Access records (reads and refusals) are kept as long as the tenant's
retention says: a ``Retention.Applied`` event drops the tenant's older ones
from the trail (its own entry stays, saying who did it and why). The events
stay in the event store, so every chain still verifies; ``verify`` knows the
entries retention dropped from the ones that are missing.

Entries are hash-chained per tenant and context (``chain.py``): each entry
keeps its index in its chain, the previous entry's hash and its own, and
``audit_chain_heads`` where each chain stands. Within a context the projector
applies events in order, so chains are the same however often they are built.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from domain.activity import ACCESS_EVENTS
from infra.envelope import Envelope
from projections.audit.chain import GENESIS, Record, link
from projections.base import EVERY_EVENT, Projection, handles
from projections.rows import Rows

ENTRIES = "audit_events"
ACTORS = "audit_actors"
HEADS = "audit_chain_heads"
ENTRY_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://knowledge-foundry/audit-entries")

# Fields whose values an audit entry shows; every other field is only named.
SHOWN = frozenset(
    {
        # documents
        "media_type", "declared_type", "size_bytes", "content_sha256", "page_count",
        "char_count", "parser", "chunk_count", "chunk_tokens", "overlap_tokens", "tokenizer",
        "model", "dimension", "stage", "code",
        # access (people: their role and sessions; never an address, a hash or a link)
        "name", "role", "expires_at", "origin", "previous", "user_id", "user_agent",
        "link_expires_at",
        # conversations
        "turn", "mode", "k", "history_turns", "provider", "prompt_template",
        "usage", "cost_usd", "latency_ms",
        # activity (reads name what they showed by id: see the readers read model)
        "kind", "route", "query_sha256", "reason", "status", "client", "suppressed",
        "cutoff", "retention_days",
        # erasure, the trash and legal hold (a hold's reason is a matter reference)
        "cause", "status_before", "turns",
    }
)  # fmt: skip


def entry_id(envelope: Envelope) -> uuid.UUID:
    """An entry's id, the same whenever its event is applied (replays, rebuilds)."""
    return uuid.uuid5(ENTRY_NAMESPACE, envelope.message_id)


def summary(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "fields": sorted(data),
        "values": {field: data[field] for field in sorted(data) if field in SHOWN},
    }


class AuditProjection(Projection):
    name = "audit"
    tables = {
        ENTRIES: ("tenant_id", "entry_id"),
        ACTORS: ("tenant_id", "actor"),
        HEADS: ("tenant_id", "context"),
    }

    def __init__(self, *, variant: str = "") -> None:
        super().__init__(variant=variant)
        # The batch's chain heads: (tenant, context) -> head row, and which were stored.
        self._heads: dict[tuple[str, str], dict[str, Any]] = {}
        self._stored: set[tuple[str, str]] = set()

    def before_batch(self, rows: Rows, envelopes: Sequence[Envelope]) -> None:
        self._heads, self._stored = {}, set()
        for tenant_id, context in sorted({(e.tenant_id, e.context) for e in envelopes}):
            found = rows.select(HEADS, {"tenant_id": tenant_id, "context": context})
            if found:
                self._heads[(tenant_id, context)] = found[0]
                self._stored.add((tenant_id, context))

    def after_batch(self, rows: Rows) -> None:
        for key, head in self._heads.items():
            tenant_id, context = key
            values = {k: head[k] for k in ("entries", "head", "position", "aggregate_id")}
            if key in self._stored:
                rows.update(HEADS, {"tenant_id": tenant_id, "context": context}, values)
            else:
                rows.insert(HEADS, {"tenant_id": tenant_id, "context": context, **values})

    def _chain(self, envelope: Envelope) -> tuple[int, str, str]:
        """The entry's index in its chain, the previous entry's hash and its own."""
        key = (envelope.tenant_id, envelope.context)
        head = self._heads.get(key)
        index = (head["entries"] if head else 0) + 1
        previous = head["head"] if head else GENESIS
        entry_hash = link(previous, Record.of(envelope))
        self._heads[key] = {
            "entries": index,
            "head": entry_hash,
            "position": envelope.position,
            "aggregate_id": uuid.UUID(envelope.aggregate_id),
        }
        return index, previous, entry_hash

    def apply(self, rows: Rows, envelope: Envelope) -> None:
        super().apply(rows, envelope)  # every event is an entry, this one too
        if envelope.event_type == "Retention.Applied":
            drop_access_records(rows, ENTRIES, envelope)

    @handles(EVERY_EVENT)
    def _recorded(self, rows: Rows, envelope: Envelope) -> None:
        data = envelope.data
        if envelope.event_type in ("ApiKey.Issued", "User.Invited"):
            kind = "key" if envelope.event_type == "ApiKey.Issued" else "user"
            rows.insert(
                ACTORS,
                {
                    "tenant_id": envelope.tenant_id,
                    "actor": f"{kind}:{envelope.aggregate_id}",
                    "role": data["role"],
                    "position": envelope.position,
                },
            )
        resource_type, _, _ = envelope.event_type.partition(".")
        cause = envelope.metadata
        index, previous, entry_hash = self._chain(envelope)
        rows.insert_batched(
            ENTRIES,
            {
                "tenant_id": envelope.tenant_id,
                "entry_id": entry_id(envelope),
                "context": envelope.context,
                "position": envelope.position,
                "occurred_at": envelope.occurred_at,
                "actor": envelope.actor,
                "action": envelope.event_type,
                "resource_type": resource_type,
                "resource_id": uuid.UUID(envelope.aggregate_id),
                "resource_version": envelope.aggregate_version,
                "request_id": cause.get("request_id"),
                "client_address": cause.get("client_address")
                or cause.get("process")
                or _client(data.get("origin")),
                "user_agent": cause.get("user_agent"),
                "changes": summary(data),
                "chain_index": index,
                "previous_hash": previous,
                "entry_hash": entry_hash,
            },
        )


def drop_access_records(rows: Rows, table: str, envelope: Envelope) -> int:
    """Apply a ``Retention.Applied``: drop the tenant's access records (rows of ``table``
    from the activity context with an ``action`` column) that occurred before its cutoff."""
    cutoff = datetime.fromisoformat(envelope.data["cutoff"])
    return sum(
        rows.delete_before(
            table,
            {"tenant_id": envelope.tenant_id, "context": "activity", "action": action},
            "occurred_at",
            cutoff,
        )
        for action in ACCESS_EVENTS
    )


def _client(origin: Any) -> str | None:
    """Where a command came from, as events recorded before metadata say it (key events)."""
    return str(origin) if origin else None

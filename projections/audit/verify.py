"""Checking the audit trail: recompute every chain from the event store and compare.

Three witnesses are compared. The event store (what is recorded now) gives
each entry's hash, recomputed from the stored bytes. The audit read model
recorded each entry's hash when the event was first projected, which names the
first entry that no longer matches: an event whose bytes changed, one that is
gone, two that swapped places. The signed checkpoints, outside PostgreSQL,
say how long each chain was and where it ended when they were written: they
catch what the read model cannot (the newest events deleted after a
checkpoint covered them, or a rewrite of the read model to match a rewritten
log). Entries newer than a tenant's newest checkpoint are reported as not yet
covered, with their count. Access records that a tenant's retention dropped
from the trail (``Retention.Applied``) are counted as such, not as missing:
their events stay in the event store and their chains are recomputed in full.

``verify`` works on plain iterables, so the same check runs against a live
database (``kf audit verify``) and against an exported bundle with no
database (``kf audit verify --bundle``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from psycopg.sql import SQL, Identifier

from domain.activity import ACCESS_EVENTS
from projections.audit.chain import GENESIS, Record, link
from projections.audit.checkpoints import SignedCheckpoint


@dataclass(frozen=True)
class StoredEvent:
    """An event as its context's events table holds it."""

    context: str
    position: int
    aggregate_id: str
    aggregate_version: int
    topic: str
    state: bytes

    def tenant_id(self) -> str | None:
        try:
            tenant = json.loads(self.state).get("tenant_id")
        except (ValueError, AttributeError, UnicodeDecodeError):
            return None  # bytes that no longer decode: the trail says whose it was
        return str(tenant) if tenant else None

    def event_type(self) -> str:
        return self.topic.partition(":")[2] or self.topic

    def occurred_at(self) -> datetime | None:
        try:
            stamp = json.loads(self.state)["timestamp"]
            return datetime.fromisoformat(stamp["_data_"] if isinstance(stamp, dict) else stamp)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return None

    def record(self) -> Record:
        return Record.stored(
            self.context,
            self.position,
            self.aggregate_id,
            self.aggregate_version,
            self.topic,
            self.state,
        )


@dataclass(frozen=True)
class TrailEntry:
    """What the audit read model recorded of an event when it was projected."""

    context: str
    position: int
    tenant_id: str
    aggregate_id: str
    entry_hash: str | None  # None: projected before the trail kept hashes


@dataclass(frozen=True)
class Finding:
    kind: str  # changed | missing | missing_from_trail | truncated | checkpoint_mismatch | ...
    tenant_id: str | None
    context: str | None
    position: int | None
    aggregate_id: str | None
    detail: str

    def __str__(self) -> str:
        where = ", ".join(
            f"{name} {value}"
            for name, value in (
                ("tenant", self.tenant_id),
                ("context", self.context),
                ("position", self.position),
                ("aggregate", self.aggregate_id),
            )
            if value is not None
        )
        return f"{self.kind}: {where}: {self.detail}"


@dataclass
class Chain:
    length: int = 0
    head: str = GENESIS
    broken_at: int | None = None  # the chain index of its first finding
    # chain index -> (hash, position, aggregate) at the indices checkpoints name
    marks: dict[int, tuple[str, int, str]] = field(default_factory=dict)


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    uncovered: dict[tuple[str, str], int] = field(default_factory=dict)
    entries: int = 0
    checkpoints: int = 0
    unprojected: int = 0
    retained_away: int = 0  # access records retention dropped from the trail

    @property
    def ok(self) -> bool:
        return not self.findings

    def summary(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "checkpoints": self.checkpoints,
            "findings": [str(f) for f in self.findings],
            "not_yet_covered": {
                f"{tenant}/{context}": n for (tenant, context), n in sorted(self.uncovered.items())
            },
            "not_yet_projected": self.unprojected,
            "dropped_by_retention": self.retained_away,
        }


def _merge(
    events: Iterable[StoredEvent], trail: Iterable[TrailEntry]
) -> Iterator[tuple[StoredEvent | None, TrailEntry | None]]:
    """Both streams (each in position order) side by side, by position."""
    ev_iter, tr_iter = iter(events), iter(trail)
    event, entry = next(ev_iter, None), next(tr_iter, None)
    while event is not None or entry is not None:
        if entry is None or (event is not None and event.position < entry.position):
            yield event, None
            event = next(ev_iter, None)
        elif event is None or entry.position < event.position:
            yield None, entry
            entry = next(tr_iter, None)
        else:
            yield event, entry
            event, entry = next(ev_iter, None), next(tr_iter, None)


RETENTION_TOPIC = "domain.activity:Retention.Applied"


def retention_cutoffs(events: Iterable[StoredEvent]) -> dict[str, datetime]:
    """Each tenant's latest retention cutoff, from its ``Retention.Applied`` events."""
    cutoffs: dict[str, datetime] = {}
    for event in events:
        if event.topic != RETENTION_TOPIC:
            continue
        tenant_id = event.tenant_id()
        try:
            cutoff = datetime.fromisoformat(json.loads(event.state)["cutoff"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            continue  # an unreadable event is reported by the chain check itself
        if tenant_id is not None and (tenant_id not in cutoffs or cutoff > cutoffs[tenant_id]):
            cutoffs[tenant_id] = cutoff
    return cutoffs


def _retained_away(event: StoredEvent, owner: str, retention: Mapping[str, datetime]) -> bool:
    """Whether retention dropped this event's trail entry (an old enough access record)."""
    cutoff = retention.get(owner)
    if cutoff is None or event.context != "activity" or event.event_type() not in ACCESS_EVENTS:
        return False
    occurred = event.occurred_at()
    return occurred is not None and occurred < cutoff


def verify(
    contexts: Mapping[str, tuple[Iterable[StoredEvent], Iterable[TrailEntry], int]],
    checkpoints: Mapping[str, Sequence[SignedCheckpoint]],
    public_key: Ed25519PublicKey | None,
    *,
    tenant: str | None = None,
    retention: Mapping[str, datetime] | None = None,
) -> Report:
    """Check every chain (or ``tenant``'s). ``contexts`` maps a context to its stored
    events and trail entries, both in position order, and the trail's position;
    ``retention`` each tenant's retention cutoff (``retention_cutoffs``)."""
    report = Report()
    retention = retention or {}
    wanted: dict[tuple[str, str], set[int]] = {}
    for tenant_id, found in checkpoints.items():
        for signed in found:
            for head in signed.checkpoint.heads:
                wanted.setdefault((tenant_id, head.context), set()).add(head.entries)
    chains: dict[tuple[str, str], Chain] = {}

    def break_chain(chain: Chain, finding: Finding) -> None:
        if chain.broken_at is None:
            chain.broken_at = chain.length
            report.findings.append(finding)

    for context, (events, trail, projected) in contexts.items():
        for event, entry in _merge(events, trail):
            owner = (event.tenant_id() if event else None) or (entry.tenant_id if entry else None)
            if owner is None or (tenant is not None and owner != tenant):
                if owner is None and event is not None:
                    report.findings.append(
                        Finding("unreadable", None, context, event.position, event.aggregate_id,
                                "the stored event does not decode and the trail does not know it")
                    )  # fmt: skip
                continue
            chain = chains.setdefault((owner, context), Chain())
            if event is None:
                assert entry is not None
                break_chain(
                    chain,
                    Finding("missing", owner, context, entry.position, entry.aggregate_id,
                            "the event the trail recorded here is gone from the event store"),
                )  # fmt: skip
                continue
            chain.length += 1
            chain.head = link(chain.head, event.record())
            report.entries += 1
            if chain.length in wanted.get((owner, context), ()):
                chain.marks[chain.length] = (chain.head, event.position, event.aggregate_id)
            if entry is None:
                if _retained_away(event, owner, retention):
                    report.retained_away += 1
                elif event.position <= projected:
                    break_chain(
                        chain,
                        Finding("missing_from_trail", owner, context, event.position,
                                event.aggregate_id, "the audit trail has no entry for this event"),
                    )  # fmt: skip
                else:
                    report.unprojected += 1
            elif entry.entry_hash is not None and entry.entry_hash != chain.head:
                break_chain(
                    chain,
                    Finding("changed", owner, context, event.position, event.aggregate_id,
                            "this event's stored bytes or place in its chain differ from what"
                            " the trail recorded"),
                )  # fmt: skip
    _check_checkpoints(report, chains, checkpoints, public_key, tenant)
    return report


def _check_checkpoints(
    report: Report,
    chains: dict[tuple[str, str], Chain],
    checkpoints: Mapping[str, Sequence[SignedCheckpoint]],
    public_key: Ed25519PublicKey | None,
    tenant: str | None,
) -> None:
    covered: dict[tuple[str, str], int] = {}
    for tenant_id, found in sorted(checkpoints.items()):
        if tenant is not None and tenant_id != tenant:
            continue
        for signed in found:
            report.checkpoints += 1
            checkpoint = signed.checkpoint
            if (
                public_key is None
                or not signed.valid(public_key)
                or checkpoint.tenant_id != tenant_id
            ):
                report.findings.append(
                    Finding("bad_signature", tenant_id, None, None, None,
                            f"checkpoint {signed.path.name} is not signed by the audit key")
                )  # fmt: skip
                continue
            for head in checkpoint.heads:
                key = (tenant_id, head.context)
                chain = chains.setdefault(key, Chain())
                covered[key] = max(covered.get(key, 0), head.entries)
                if chain.broken_at is not None and chain.broken_at < head.entries:
                    continue  # already reported: the first break explains this one
                if chain.length < head.entries:
                    report.findings.append(
                        Finding("truncated", tenant_id, head.context, head.position,
                                head.aggregate_id,
                                f"checkpoint {checkpoint.sequence} covered {head.entries} entries"
                                f" ending here; the event store now holds {chain.length}:"
                                f" entries {chain.length + 1}..{head.entries} are gone")
                    )  # fmt: skip
                    chain.broken_at = chain.length
                    continue
                recomputed, position, aggregate = chain.marks[head.entries]
                if recomputed != head.head:
                    report.findings.append(
                        Finding("checkpoint_mismatch", tenant_id, head.context, position,
                                aggregate,
                                f"checkpoint {checkpoint.sequence} signed another chain up to"
                                f" here: an entry at or before it was changed, removed or moved")
                    )  # fmt: skip
                    chain.broken_at = head.entries
    for key, chain in chains.items():
        if tenant is None or key[0] == tenant:
            report.uncovered[key] = max(0, chain.length - covered.get(key, 0))


# ------------------------------------------------------------------ database


def _stored_events(
    conn: psycopg.Connection[Any], context: str, topic: str | None = None
) -> Iterator[StoredEvent]:
    query = SQL(
        "SELECT notification_id, originator_id, originator_version, topic, state FROM {} {}"
        " ORDER BY notification_id"
    ).format(Identifier(f"{context}_events"), SQL("") if topic is None else SQL("WHERE topic = %s"))
    name = f"verify_{context}_events" + ("" if topic is None else "_topic")
    with conn.cursor(name=name) as cursor:
        cursor.itersize = 2000
        cursor.execute(query, () if topic is None else (topic,))
        for row in cursor:
            yield StoredEvent(context, int(row[0]), str(row[1]), int(row[2]), row[3], bytes(row[4]))


def _trail(conn: psycopg.Connection[Any], context: str) -> Iterator[TrailEntry]:
    with conn.cursor(name=f"verify_{context}_trail") as cursor:
        cursor.itersize = 2000
        cursor.execute(
            "SELECT position, tenant_id, resource_id, entry_hash FROM audit_events"
            " WHERE context = %s ORDER BY position",
            (context,),
        )
        for row in cursor:
            yield TrailEntry(context, int(row[0]), row[1], str(row[2]), row[3])


def verify_database(
    database_url: str,
    contexts: Sequence[str],
    checkpoints: Mapping[str, Sequence[SignedCheckpoint]],
    public_key: Ed25519PublicKey | None,
    *,
    tenant: str | None = None,
    tracking_table: str = "audit_tracking",
) -> Report:
    """``verify`` against the event store and the audit read model, in constant memory."""
    with (
        psycopg.connect(database_url) as events_conn,
        psycopg.connect(database_url) as trail_conn,
    ):
        positions = {
            row[0]: int(row[1] or 0)
            for row in trail_conn.execute(
                SQL("SELECT application_name, notification_id FROM {}").format(
                    Identifier(tracking_table)
                )
            ).fetchall()
        }
        trail_conn.commit()
        retention = (
            retention_cutoffs(_stored_events(events_conn, "activity", RETENTION_TOPIC))
            if "activity" in contexts
            else {}
        )
        streams = {
            context: (
                _stored_events(events_conn, context),
                _trail(trail_conn, context),
                positions.get(context, 0),
            )
            for context in contexts
        }
        return verify(streams, checkpoints, public_key, tenant=tenant, retention=retention)

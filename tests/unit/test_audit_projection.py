"""The audit trail's projection in memory: every event exactly once, chains intact.

Commands of several contexts and tenants are interleaved at random, and their
events are delivered the way the bus may deliver them (batches repeating
earlier parts, the contexts in any relative order): every event becomes
exactly one entry, each chain links its tenant's events of one context in
order, and the result is the same however the events arrived.
"""

from __future__ import annotations

import hashlib
import itertools
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.access import ApiKey, Role, new_key_token
from domain.activity import Read, ReadKind
from domain.conversation import Conversation
from domain.document import Document
from infra.envelope import Envelope
from projections.audit.chain import GENESIS, Record, link
from projections.audit.projection import AuditProjection
from projections.memory import MemoryView

TENANTS = ("tenant-a", "tenant-b")


def _envelope(context: str, position: int, event: Any) -> Envelope:
    topic = f"{type(event).__module__}:{type(event).__qualname__}"
    stored = hashlib.sha256(f"{context}:{position}:{topic}".encode()).hexdigest()
    return Envelope.from_event(context, position, topic, event, stored_sha256=stored)


def _command(kind: str, tenant: str) -> tuple[str, list[Any]]:
    """One command's events, by kind, for a tenant."""
    if kind == "upload":
        document = Document.upload(
            document_id=uuid4(), tenant_id=tenant, actor="key:x", filename="a.txt",
            media_type="text/plain", declared_type=None, size_bytes=1, content_sha256="c",
        )  # fmt: skip
        document.delete(actor="key:x")
        return "documents", document.collect_events()
    if kind == "key":
        key = ApiKey.issue(
            token=new_key_token(), tenant_id=tenant, actor="key:x", name="k",
            role=Role.VIEWER, expires_at=None, now=datetime.now(UTC),
        )  # fmt: skip
        return "access", key.collect_events()
    if kind == "read":
        read = Read.record(
            tenant_id=tenant, actor="key:x", role="viewer", kind=ReadKind.SEARCH,
            route="/v1/search", documents=[str(uuid4())], chunks=[str(uuid4())],
        )  # fmt: skip
        return "activity", read.collect_events()
    conversation = Conversation.start(tenant_id=tenant, actor="key:x", title="t")
    return "conversations", conversation.collect_events()


commands = st.lists(
    st.tuples(st.sampled_from(["upload", "key", "read", "talk"]), st.sampled_from(TENANTS)),
    min_size=1,
    max_size=25,
)


def _log(sequence: list[tuple[str, str]]) -> list[Envelope]:
    positions: dict[str, int] = {}
    written = []
    for kind, tenant in sequence:
        context, events = _command(kind, tenant)
        for event in events:
            positions[context] = positions.get(context, 0) + 1
            written.append(_envelope(context, positions[context], event))
    return written


def _deliver(view: MemoryView, envelopes: list[Envelope], data: st.DataObject) -> None:
    """Contexts interleaved at random (each in its own order), batches that repeat."""
    contexts = list(dict.fromkeys(e.context for e in envelopes))
    by_context = {c: [e for e in envelopes if e.context == c] for c in contexts}
    sent = dict.fromkeys(contexts, 0)
    delivered: list[Envelope] = []
    while any(sent[c] < len(by_context[c]) for c in contexts):
        open_contexts = [c for c in contexts if sent[c] < len(by_context[c])]
        context = data.draw(st.sampled_from(open_contexts))
        take = data.draw(st.integers(1, len(by_context[context]) - sent[context]))
        before = len(delivered)
        delivered.extend(by_context[context][sent[context] : sent[context] + take])
        sent[context] += take
        again = data.draw(st.integers(0, before))  # earlier messages sent again with them
        view.apply_batch(delivered[before - again :])


@settings(max_examples=120, deadline=None)
@given(commands, st.data())
def test_every_event_is_exactly_one_entry_and_each_chain_is_intact(
    sequence: list[tuple[str, str]], data: st.DataObject
) -> None:
    written = _log(sequence)
    view = MemoryView(AuditProjection())
    _deliver(view, written, data)
    entries = view.table("audit_events")
    assert sorted((e["context"], e["position"]) for e in entries) == sorted(
        (e.context, e.position) for e in written
    )
    for (tenant, context), group in itertools.groupby(
        sorted(written, key=lambda e: (e.tenant_id, e.context, e.position)),
        key=lambda e: (e.tenant_id, e.context),
    ):
        expected = GENESIS
        chain = sorted(
            (x for x in entries if (x["tenant_id"], x["context"]) == (tenant, context)),
            key=lambda x: x["chain_index"],
        )
        for index, (envelope, entry) in enumerate(zip(group, chain, strict=True), start=1):
            assert entry["chain_index"] == index and entry["position"] == envelope.position
            assert entry["previous_hash"] == expected
            expected = link(expected, Record.of(envelope))
            assert entry["entry_hash"] == expected
    in_order = MemoryView(AuditProjection())
    in_order.apply_batch(written)
    assert view.table("audit_events") == in_order.table("audit_events")
    assert view.table("audit_chain_heads") == in_order.table("audit_chain_heads")

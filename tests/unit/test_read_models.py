"""Read models as slices, and projection logic in memory (no PostgreSQL).

What every slice declares is checked here once for all of them; the catalog,
keys and conversations projections are exercised on ``MemoryView`` with
events made by the real aggregates.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commands.access import AccessApp
from commands.activity import ActivityApp
from commands.conversations import ConversationsApp
from commands.documents import DocumentsApp
from commands.usage import UsageApp
from domain.access import ApiKey, Role, new_key_token
from domain.contexts import CONTEXTS, EVENTS, context_of
from domain.conversation import Conversation
from domain.document import Document, Stage
from infra.envelope import Envelope
from projections.base import (
    EVERY_EVENT,
    OutOfOrderError,
    Projection,
    UnknownEventError,
    handles,
)
from projections.catalog import CatalogProjection
from projections.conversations import ConversationsProjection
from projections.keys import KeysProjection
from projections.memory import MemoryView
from projections.read_models import READ_MODELS, by_name, names
from projections.rows import DuplicateRowError, Rows

TENANT = "tenant-a"


# ------------------------------------------------------------------ envelopes


class Log:
    """Events of aggregates, numbered as a context's notification log would number them."""

    def __init__(self) -> None:
        self.positions: dict[str, int] = {}

    def envelopes(self, context: str, *aggregates: Any) -> list[Envelope]:
        out = []
        for aggregate in aggregates:
            for event in aggregate.collect_events():
                position = self.positions.get(context, 0) + 1
                self.positions[context] = position
                topic = f"{type(event).__module__}:{type(event).__qualname__}"
                out.append(Envelope.from_event(context, position, topic, event))
        return out


def _document(name: str) -> Document:
    return Document.upload(
        document_id=uuid4(),
        tenant_id=TENANT,
        actor="key:x",
        filename=name,
        media_type="text/plain",
        declared_type=None,
        size_bytes=10,
        content_sha256=name,
    )


def _advance(document: Document, step: str) -> None:
    if step == "parsed":
        document.record_parsed(
            actor="w", pages_sha256="p", page_count=2, char_count=20, parser="t", warnings=["w"]
        )
    elif step == "chunked":
        document.record_chunked(
            actor="w",
            chunks_sha256="c",
            chunk_count=3,
            chunk_tokens=200,
            overlap_tokens=40,
            tokenizer="t",
        )
    elif step == "embedded":
        document.record_embedded(
            actor="w",
            embeddings_sha256="e",
            chunks_sha256=document.chunks_sha256 or "c",
            chunk_count=document.chunk_count or 0,
            model="m",
            dimension=384,
        )
    elif step == "failed":
        document.record_failed(actor="w", stage=Stage.CHUNK, code="x", reason="because")
    else:
        document.delete(actor="key:x")


def _key(name: str = "k", role: Role = Role.VIEWER, expires_at: datetime | None = None) -> ApiKey:
    return ApiKey.issue(
        token=new_key_token(),
        tenant_id=TENANT,
        actor="key:admin",
        name=name,
        role=role,
        expires_at=expires_at,
        now=datetime.now(UTC),
    )


STEPS = st.lists(st.sampled_from(["parsed", "chunked", "embedded", "failed", "deleted"]))


# -------------------------------------------------------------------- slices


def test_every_read_model_declares_what_it_follows_writes_and_serves() -> None:
    migrations = {f.name for f in resources.files("migrations").iterdir()}
    assert len(set(names())) == len(READ_MODELS)
    for model in READ_MODELS:
        assert model.migrations and set(model.migrations) <= migrations, model.name
        assert model.tables, model.name
        assert all(key for key in model.tables.values()), model.name
        assert model.contexts and set(model.contexts) <= set(CONTEXTS), model.name
        known = {event for context in model.contexts for event in EVENTS[context]}
        assert set(model.events) <= known, model.name
        assert by_name(model.name) is model
    served = {model.name for model in READ_MODELS if model.router is not None}
    assert served == {
        "catalog", "search", "keys", "conversations", "audit", "readers", "usage", "dead_letters"
    }  # fmt: skip
    with pytest.raises(KeyError, match="known: catalog"):
        by_name("nothing")


def test_the_contexts_name_exactly_the_events_their_aggregates_record() -> None:
    assert {c: sorted(e) for c, e in EVENTS.items()} == {
        "documents": sorted(
            f"Document.{n}"
            for n in (
                "Uploaded",
                "Parsed",
                "Chunked",
                "Embedded",
                "Failed",
                "Deleted",
                "Restored",
                "Retried",
                "Held",
                "Released",
                "Erased",
            )
        ),
        "access": sorted(
            [
                "ApiKey.Issued",
                "ApiKey.Revoked",
                "Tenant.Created",
                *(
                    f"User.{n}"
                    for n in (
                        "Invited",
                        "LinkIssued",
                        "PasswordSet",
                        "RoleChanged",
                        "Disabled",
                        "Enabled",
                    )
                ),
                "Session.Started",
                "Session.Ended",
            ]
        ),
        "conversations": [
            "Conversation.AnswerFailed",
            "Conversation.AnswerGenerated",
            "Conversation.Erased",
            "Conversation.QuestionAsked",
            "Conversation.Started",
        ],
        "activity": sorted(
            [
                "Read.Recorded",
                "Refusal.Recorded",
                "Retention.Applied",
                *(
                    f"DeadLetter.{n}"
                    for n in ("Parked", "Reparked", "RetryRequested", "Resolved", "Dropped")
                ),
            ]
        ),
        "usage": sorted(
            [
                "PriceBook.Opened",
                "PriceBook.PriceSet",
                "Repricing.Requested",
                "Budgets.Opened",
                "Budgets.LimitSet",
                "Budgets.LimitRemoved",
                "BudgetRefusal.Recorded",
                "BudgetAlert.Raised",
                "BudgetAlert.Delivered",
                "BudgetAlert.DeliveryFailed",
            ]
        ),
    }
    assert context_of(Document.Created) is None  # the library's, never recorded
    applications = {
        DocumentsApp.context, AccessApp.context, ConversationsApp.context, ActivityApp.context,
        UsageApp.context,
    }  # fmt: skip
    assert applications == set(CONTEXTS)


def test_a_handler_for_something_that_is_not_a_recorded_event_fails_when_defined() -> None:
    class NotAnEvent:
        pass

    with pytest.raises(UnknownEventError, match="NotAnEvent"):

        class Wrong(Projection):
            name = "wrong"

            @handles(NotAnEvent)
            def _nothing(self, rows: Rows, envelope: Envelope) -> None: ...

    with pytest.raises(UnknownEventError, match=r"Document\.Uploaded"):

        class ByName(Projection):  # a name is not enough: the class is the contract
            name = "by_name"

            @handles("Document.Uploaded")  # type: ignore[arg-type]
            def _uploaded(self, rows: Rows, envelope: Envelope) -> None: ...

    with pytest.raises(UnknownEventError, match=r"Document\.Created"):

        class NeverRecorded(Projection):
            name = "never"

            @handles(Document.Created)
            def _created(self, rows: Rows, envelope: Envelope) -> None: ...


class Everything(Projection):
    """A catch-all projection, as an audit trail is: a row per event of every context."""

    name = "everything"
    tables = {"seen": ("context", "position")}

    @handles(EVERY_EVENT)
    def _any(self, rows: Rows, envelope: Envelope) -> None:
        rows.insert(
            "seen",
            {"context": envelope.context, "position": envelope.position, "how": "any"},
        )

    @handles(ApiKey.Revoked)
    def _revoked(self, rows: Rows, envelope: Envelope) -> None:
        rows.insert(
            "seen",
            {"context": envelope.context, "position": envelope.position, "how": "revoked"},
        )


def test_the_catch_all_follows_every_context_and_a_specific_handler_wins() -> None:
    assert Everything.contexts == tuple(CONTEXTS)
    assert Everything.follows_everything and Everything.events == ("ApiKey.Revoked",)
    log = Log()
    document = _document("a.txt")
    _advance(document, "parsed")
    key = _key()
    key.revoke(actor="key:admin")
    conversation = Conversation.start(tenant_id=TENANT, actor="key:x", title="t")
    envelopes = [
        *log.envelopes("documents", document),
        *log.envelopes("access", key),
        *log.envelopes("conversations", conversation),
    ]
    view = MemoryView(Everything())
    assert view.apply_batch(envelopes) == 5
    assert [(r["context"], r["position"], r["how"]) for r in view.table("seen")] == [
        ("access", 1, "any"),
        ("access", 2, "revoked"),
        ("conversations", 1, "any"),
        ("documents", 1, "any"),
        ("documents", 2, "any"),
    ]
    assert view.positions == {
        "documents": 2, "access": 2, "conversations": 1, "activity": 0, "usage": 0,
    }  # fmt: skip
    assert view.apply_batch(envelopes) == 0


def test_events_a_projection_ignores_still_advance_its_position() -> None:
    log = Log()
    key = _key(role=Role.ADMIN, expires_at=datetime.now(UTC) + timedelta(days=1))
    envelopes = log.envelopes("access", key)
    tenant_created = Envelope(
        context="access", position=2, event_type="Tenant.Created", topic="t:Tenant.Created",
        aggregate_id=str(uuid4()), aggregate_version=1, tenant_id=TENANT, actor="cli",
        timestamp=datetime.now(UTC).isoformat(), data={"name": "acme"},
    )  # fmt: skip
    view = MemoryView(KeysProjection())
    assert view.apply_batch([*envelopes, tenant_created]) == 2
    assert view.positions == {"access": 2}
    assert [row["name"] for row in view.table("api_keys")] == ["k"]


# ------------------------------------------------------------ catalog in memory


@settings(max_examples=150, deadline=None)
@given(st.lists(STEPS, min_size=1, max_size=4), st.data())
def test_the_catalog_row_of_each_document_matches_its_aggregate(
    histories: list[list[str]], data: st.DataObject
) -> None:
    """Documents advanced in any order, their events interleaved: each row is its aggregate."""
    documents = [_document(f"{i}.txt") for i in range(len(histories))]
    pending = [list(h) for h in histories]
    log = Log()
    envelopes: list[Envelope] = log.envelopes("documents", *documents)
    while any(pending):
        i = data.draw(st.sampled_from([i for i, p in enumerate(pending) if p]))
        _advance(documents[i], pending[i].pop(0))
        envelopes.extend(log.envelopes("documents", documents[i]))
    view = MemoryView(CatalogProjection())
    view.apply_batch(envelopes)
    by_id = {row["document_id"]: row for row in view.table("catalog_documents")}
    for document in documents:
        row = by_id[document.id]
        assert row["status"] == document.status.value
        assert row["version"] == document.version
        assert row.get("chunk_count") == document.chunk_count
        assert row.get("page_count") == document.page_count
        failure = document.failure
        assert (row.get("failure_stage"), row.get("failure_code")) == (
            (failure[0], failure[1]) if failure else (None, None)
        )


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_redelivered_batches_leave_the_same_catalog(data: st.DataObject) -> None:
    log = Log()
    documents = [_document(f"{i}.txt") for i in range(3)]
    for document, steps in zip(
        documents,
        (["parsed", "chunked", "embedded"], ["failed"], ["parsed", "deleted"]),
        strict=True,
    ):
        for step in steps:
            _advance(document, step)
    envelopes = log.envelopes("documents", *documents)
    expected = MemoryView(CatalogProjection())
    expected.apply_batch(envelopes)
    view = MemoryView(CatalogProjection())
    delivered = 0
    while delivered < len(envelopes):
        replay_from = data.draw(st.integers(0, delivered))
        take = data.draw(st.integers(1, len(envelopes) - delivered))
        view.apply_batch(envelopes[replay_from : delivered + take])
        delivered += take
    assert view.table("catalog_documents") == expected.table("catalog_documents")
    assert view.positions == expected.positions


def test_an_event_out_of_order_is_refused_and_the_batch_leaves_nothing() -> None:
    log = Log()
    first, second = _document("1.txt"), _document("2.txt")
    _advance(first, "parsed")
    envelopes = log.envelopes("documents", first, second)
    view = MemoryView(CatalogProjection())
    with pytest.raises(OutOfOrderError):
        view.apply_batch([envelopes[1]])  # parsed, before its upload
    with pytest.raises(OutOfOrderError):
        view.apply_batch([envelopes[0], envelopes[2], envelopes[1]])
    assert view.table("catalog_documents") == [] and view.positions == {"documents": 0}
    with pytest.raises(DuplicateRowError):  # a second upload row for one document
        view.apply_batch([envelopes[0], *log.envelopes("documents", _copy_upload(first))])
    assert view.table("catalog_documents") == []


def _copy_upload(document: Document) -> Document:
    again = Document.upload(
        document_id=document.id,
        tenant_id=TENANT,
        actor="key:x",
        filename="again.txt",
        media_type="text/plain",
        declared_type=None,
        size_bytes=10,
        content_sha256="again",
    )
    return again


# ---------------------------------------------------- keys and conversations


def test_a_key_is_revoked_once_and_a_second_revoke_is_refused() -> None:
    log = Log()
    key = _key("robot", Role.EDITOR)
    key.revoke(actor="key:admin")
    envelopes = log.envelopes("access", key)
    view = MemoryView(KeysProjection())
    view.apply_batch(envelopes)
    (row,) = view.table("api_keys")
    assert (row["name"], row["role"], row["revoked_by"]) == ("robot", "editor", "key:admin")
    replayed = Envelope(**{**envelopes[1].__dict__, "position": 3})
    with pytest.raises(OutOfOrderError, match="unrevoked"):
        view.apply_batch([replayed])


def test_a_transcript_follows_its_turns_and_refuses_a_second_outcome() -> None:
    log = Log()
    conversation = Conversation.start(tenant_id=TENANT, actor="key:x", title="budget")
    asked = {"model": "extractive", "mode": "hybrid", "k": 5, "flags": [], "history_turns": 0}
    conversation.ask(actor="key:x", question="how much?", prompt_sha256="ab" * 32, **asked)
    conversation.record_failure(
        actor="system", turn=1, code="provider_unavailable", reason="down", attempts=["a:500"]
    )
    conversation.ask(actor="key:x", question="and now?", prompt_sha256=None, **asked)
    envelopes = log.envelopes("conversations", conversation)
    view = MemoryView(ConversationsProjection())
    view.apply_batch(envelopes)
    (row,) = view.table("conversations")
    assert (row["turn_count"], row["version"], row["title"]) == (2, 4, "budget")
    turns = view.table("conversation_turns")
    assert [(t["turn"], t["status"], t.get("failure_code")) for t in turns] == [
        (1, "failed", "provider_unavailable"),
        (2, "pending", None),
    ]
    again = Envelope(**{**envelopes[2].__dict__, "position": 9})  # turn 1 failed twice
    with pytest.raises(OutOfOrderError, match="not pending"):
        view.apply_batch([again])
    assert view.table("conversation_turns") == turns


def test_memory_rows_delete_only_matching_rows_below_the_bound() -> None:
    from projections.rows import MemoryRows

    memory = MemoryRows({"t": ("id",)})
    for i, kind in enumerate(["a", "a", "b", "a"]):
        memory.insert("t", {"id": i, "kind": kind, "at": i * 10})
    memory.insert("t", {"id": 9, "kind": "a", "at": None})
    assert memory.delete_before("t", {"kind": "a"}, "at", 20) == 2
    assert sorted(r["id"] for r in memory.select("t", {})) == [2, 3, 9]

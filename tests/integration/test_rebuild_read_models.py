"""Every read model rebuilds from the event store, beside the live one, and equals it.

One test over the list of read models: whatever a slice is, ``kf rebuild-index
--projection NAME`` must give back exactly the rows (and for search the
points) the live projector built, switch in one step, keep the tables' index
names, and leave the live projector able to carry on. Search and full-text
have their own tests of searching during a rebuild (tests/e2e/test_search.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from config.root import Container
from config.runtime import build_stages
from domain.access import Role, Tenant
from domain.activity import ParkedMessage
from infra.embedding import SentenceTransformerEmbedder
from processors.stages import DocumentRef
from projections.read_models import READ_MODELS, names
from projections.slice import RebuildStatus
from tests.read_models import envelopes, rows

TENANTS = [str(Tenant.id_for(name)) for name in ("rebuild-one", "rebuild-two")]


@pytest.fixture(scope="module")
def container(
    make_container: Callable[..., Container], embedder: SentenceTransformerEmbedder
) -> Iterator[Container]:
    built = make_container()
    stages = build_stages(built)
    stages._embedder_factory = lambda: embedder
    for name in ("rebuild-one", "rebuild-two"):
        built.access.create_tenant(name=name, actor="cli")
    for n, tenant in enumerate(TENANTS):
        # Issued first, acting after: read models that follow several contexts are
        # replayed one context after another, and must not depend on the interleaving.
        key, _ = built.access.issue_api_key(
            tenant_id=tenant, actor="cli", name=f"robot {n}", role=Role.EDITOR
        )
        actor = f"key:{key.id}"
        ids: list[uuid.UUID] = []
        for i in range(3):
            uploaded = built.documents.upload_document(
                tenant_id=tenant,
                actor=actor,
                filename=f"{tenant}-{i}.md",
                declared_type=None,
                content=f"# Note {i}\n\nKestrel sightings by {tenant}, number {i}.".encode(),
            )
            ref = DocumentRef(tenant, uploaded.id)
            stages.parse(ref)
            stages.chunk(ref)
            stages.embed([ref])
            if i == 2:
                built.documents.delete_document(
                    tenant_id=tenant, actor=actor, document_id=ref.document_id
                )
            ids.append(ref.document_id)
        conversations = built.conversations
        started = conversations.start_conversation(tenant_id=tenant, actor=actor, title="q")
        conversation, turn, _ = conversations.ask(
            conversations.get_conversation(tenant, started.id), actor=actor,
            question="where are the kestrels?", model="extractive", mode="hybrid", k=5,
            flags=[], history_turns=0, prompt=b"[]", quotes=[str(ids[0])],
        )  # fmt: skip
        conversations.record_answer(
            tenant_id=tenant, conversation_id=conversation.id, turn=turn, actor="system",
            answer="Kestrels [1]", prompt_template="kf-answer-v1", provider="extractive",
            model="extractive", parameters={}, usage={"input_tokens": 1, "output_tokens": 1},
            cost_usd="0", latency_ms=1.0, attempts=["extractive"],
            citations=[{"n": 1, "document_id": str(ids[0]), "filename": "a.md", "chunk_index": 0}],
            retrieval={"query": "where are the kestrels?", "passages": [
                {"n": 1, "document_id": str(ids[0]), "filename": "a.md", "chunk_index": 0}
            ]},
        )  # fmt: skip
        # The trash, legal hold and erasure, in both tenants: a rebuild after them must
        # come out exactly as the read models that lived through them.
        documents = built.documents
        documents.restore_document(tenant_id=tenant, actor=actor, document_id=ids[2])
        documents.hold_document(tenant_id=tenant, actor=actor, document_id=ids[1], reason="case")
        documents.erase_document(tenant_id=tenant, actor=actor, document_id=ids[0])
        if n:
            conversations.erase_conversation(
                tenant_id=tenant, actor=actor, conversation_id=conversation.id
            )
        # A failed document sent through its stage again, and dead letters parked,
        # retried, parked again and dropped (or resolved).
        blank = documents.upload_document(
            tenant_id=tenant, actor=actor, filename="blank.txt", declared_type=None,
            content=f"   \n{' ' * n}\n".encode(),
        )  # fmt: skip
        stages.parse(DocumentRef(tenant, blank.id))
        documents.retry_document(tenant_id=tenant, actor=actor, document_id=blank.id)
        letters = built.dead_letters
        letter = ParkedMessage(
            tenant_id=tenant, component="projection:catalog", subject=f"documents:{n + 1}",
            context="documents", position=n + 1, event_type="Document.Uploaded",
            aggregate_id=str(ids[1]), attempts=5, error="RuntimeError: simulated",
        )  # fmt: skip
        parked = letters.park(letter)
        letters.retry(tenant_id=tenant, letter_id=parked, actor=actor, reason="fixed")
        letters.park(letter)
        if n:
            letters.drop(tenant_id=tenant, letter_id=parked, actor=actor, reason="bad data")
        else:
            letters.retry(tenant_id=tenant, letter_id=parked, actor=actor)
            letters.resolve(parked, "projection:catalog")
        if n:
            built.access.revoke_api_key(tenant_id=tenant, actor=actor, key_id=key.id)
    # As the live projectors see them: every context interleaved in the order written.
    written = sorted(
        (e for context in built.event_logs for e in envelopes(built, context)),
        key=lambda e: e.occurred_at,
    )
    for view in built.views.values():
        for start in range(0, len(written), 5):
            view.apply_batch(written[start : start + 5])
    yield built
    built.close()


def _index_names(container: Container) -> dict[str, list[str]]:
    tables = [table for model in READ_MODELS for table in model.tables]
    with container.parts.datastore.get_connection() as conn:
        found = conn.execute(
            "SELECT tablename, indexname FROM pg_indexes WHERE tablename = ANY(%s)"
            " ORDER BY tablename, indexname",
            (tables,),
        ).fetchall()
    named: dict[str, list[str]] = {}
    for row in found:
        named.setdefault(row["tablename"], []).append(row["indexname"])
    return named


def _rebuild(container: Container, name: str, tenant: str | None = None) -> RebuildStatus:
    status = RebuildStatus(id=uuid.uuid4().hex, projections=[name], tenant=tenant)
    return container.rebuilder().run(status, compare=True)


@pytest.mark.parametrize("name", names())
def test_the_rebuilt_read_model_equals_the_live_one(container: Container, name: str) -> None:
    live = container.views[name]
    before = rows(live)
    assert any(before.values()), f"{name}: the fixture left it empty"
    indexes = _index_names(container)
    points = container.index.current.count() if name == "search" else None
    status = _rebuild(container, name)
    assert status.state == "done", status.error
    assert status.matches_live is True
    assert status.results[name]["matches_live"] is True
    assert rows(live) == before
    assert _index_names(container) == indexes  # the migration's index names survive the swap
    if points is not None:
        assert container.index.current.count() == points
    heads = {context: container.event_logs[context].head() for context in live.contexts}
    assert {c: live.max_tracking_id(c) for c in live.contexts} == heads
    # The live view carries on from the switched position.
    assert live.catch_up_from(container.event_logs) == dict.fromkeys(live.contexts, 0)


@pytest.mark.parametrize("name", names())
def test_one_tenant_is_rebuilt_in_place_and_the_other_is_untouched(
    container: Container, name: str
) -> None:
    live = container.views[name]
    before = rows(live)
    status = _rebuild(container, name, tenant=TENANTS[1])
    assert status.state == "done", status.error
    assert status.matches_live is True
    assert rows(live) == before


def test_a_rebuild_follows_every_context_the_read_model_follows(container: Container) -> None:
    """The conversations and keys rebuilds replay their own contexts, not documents'."""
    status = RebuildStatus(id="all", projections=names(), tenant=None)
    container.rebuilder().run(status, compare=True)
    assert status.state == "done" and status.matches_live is True, status.error
    events = {context: len(envelopes(container, context)) for context in ("documents", "access")}
    assert status.results["keys"]["events"] == container.event_logs["access"].head()
    assert status.results["catalog"]["events"] == container.event_logs["documents"].head()
    assert events["documents"] > 0 and events["access"] > 0

"""Properties of the Document aggregate: replay rebuilds state, repeated commands are no-ops."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.document import Document, DocumentStatus, Stage

TENANT = "tenant-a"

commands = st.lists(
    st.one_of(
        st.tuples(st.just("parsed"), st.integers(0, 5)),
        st.tuples(st.just("chunked"), st.integers(1, 50)),
        st.tuples(st.just("embedded"), st.integers(0, 3)),
        st.tuples(st.just("failed"), st.sampled_from(list(Stage))),
        st.tuples(st.just("deleted"), st.none()),
    ),
    max_size=12,
)


def _new_document(size: int = 10) -> Document:
    return Document.upload(
        document_id=Document.id_for(TENANT, "abc", 0),
        tenant_id=TENANT,
        actor="key:x",
        filename="report.pdf",
        media_type="application/pdf",
        declared_type="application/pdf",
        size_bytes=size,
        content_sha256="abc",
    )


def _apply(document: Document, command: tuple[str, Any]) -> bool:
    name, arg = command
    if name == "parsed":
        return document.record_parsed(
            actor="w",
            pages_sha256=f"p{arg}",
            page_count=arg,
            char_count=arg * 10,
            parser="x",
            warnings=[],
        )
    if name == "chunked":
        return document.record_chunked(
            actor="w",
            chunks_sha256=f"c{arg}",
            chunk_count=arg,
            chunk_tokens=200,
            overlap_tokens=40,
            tokenizer="t",
        )
    if name == "embedded":
        return document.record_embedded(
            actor="w",
            embeddings_sha256=f"e{arg}",
            chunks_sha256=document.chunks_sha256 or "none",
            chunk_count=document.chunk_count or 0,
            model="m",
            dimension=384,
        )
    if name == "failed":
        return document.record_failed(actor="w", stage=arg, code="corrupt", reason="bad")
    return document.delete(actor="key:x")


def _state(document: Document) -> dict[str, Any]:
    return {k: v for k, v in vars(document).items() if k != "_pending_events"}


@settings(max_examples=300, deadline=None)
@given(commands)
def test_replaying_events_rebuilds_the_same_state(sequence: list[tuple[str, Any]]) -> None:
    document = _new_document()
    for command in sequence:
        _apply(document, command)
    events = document.collect_events()
    replayed: Document | None = None
    for event in events:
        replayed = event.mutate(replayed)
    assert replayed is not None
    assert _state(replayed) == _state(document)
    assert [e.originator_version for e in events] == list(range(1, len(events) + 1))
    assert all(e.tenant_id == TENANT for e in events)


@settings(max_examples=300, deadline=None)
@given(commands, st.data())
def test_a_command_repeated_with_the_same_input_is_a_no_op(
    sequence: list[tuple[str, Any]], data: st.DataObject
) -> None:
    document = _new_document()
    for command in sequence:
        _apply(document, command)
        document.collect_events()
        before = _state(document)
        assert _apply(document, command) is False
        assert document.collect_events() == []
        assert _state(document) == before


@settings(max_examples=200, deadline=None)
@given(commands)
def test_final_states_are_final(sequence: list[tuple[str, Any]]) -> None:
    document = _new_document()
    for command in sequence:
        status_before = document.status
        changed = _apply(document, command)
        if status_before is DocumentStatus.DELETED:
            assert not changed
        if status_before in (DocumentStatus.EMBEDDED, DocumentStatus.FAILED) and changed:
            assert document.status is DocumentStatus.DELETED

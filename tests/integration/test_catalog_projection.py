"""The catalog projection on real PostgreSQL: replays change nothing, disorder is refused."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.root import Container
from domain.document import Stage
from infra.bus import Bus
from infra.envelope import Envelope
from projections.base import OutOfOrderError
from projections.catalog import CatalogView
from projections.runner import ProjectorRunner
from tests.read_models import envelopes, reset, rows
from tests.redelivery import deliver_with_repeats


@pytest.fixture(scope="module")
def container(make_container: Callable[..., Container]) -> Iterator[Container]:
    built = make_container()
    tenant = str(uuid.uuid4())
    documents = built.documents
    for i in range(6):
        result = documents.upload_document(
            tenant_id=tenant,
            actor="key:t",
            filename=f"{i}.txt",
            declared_type=None,
            content=f"text {i}".encode(),
        )
        if i % 2 == 0:
            documents.record_parsed(
                tenant_id=tenant, document_id=result.id, actor="w", pages_sha256="p",
                page_count=None, char_count=6, parser="text", warnings=["w"],
            )  # fmt: skip
        if i % 3 == 0:
            documents.record_failed(
                tenant_id=tenant, document_id=result.id, actor="w",
                stage=Stage.CHUNK if i % 2 == 0 else Stage.PARSE, code="x", reason="because",
            )  # fmt: skip
        if i == 4:
            documents.delete_document(tenant_id=tenant, actor="key:t", document_id=result.id)
    yield built


def _view(container: Container) -> CatalogView:
    view = container.views["catalog"]
    assert isinstance(view, CatalogView)
    return view


def _envelopes(container: Container) -> list[Envelope]:
    return envelopes(container, "documents")


def _rows(view: CatalogView) -> list[dict[str, Any]]:
    return rows(view)["catalog_documents"]


def test_feeding_the_same_events_twice_changes_nothing(container: Container) -> None:
    view = _view(container)
    reset(view)
    envelopes = _envelopes(container)
    assert view.apply_batch(envelopes) == len(envelopes)
    once = _rows(view)
    assert view.apply_batch(envelopes) == 0
    assert view.apply_batch(envelopes[:3]) == 0
    assert _rows(view) == once
    assert view.max_tracking_id("documents") == envelopes[-1].position
    statuses = sorted(row["status"] for row in once)
    assert statuses == sorted(["failed", "uploaded", "parsed", "failed", "deleted", "uploaded"])


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_any_redelivery_pattern_yields_the_same_rows(
    container: Container, data: st.DataObject
) -> None:
    """Batches that repeat earlier events (as redelivery does) end in the same rows."""
    view = _view(container)
    envelopes = _envelopes(container)
    reset(view)
    view.apply_batch(envelopes)
    expected = _rows(view)
    reset(view)
    deliver_with_repeats(view, envelopes, data)
    assert _rows(view) == expected


def test_an_event_out_of_order_is_refused_and_nothing_is_written(container: Container) -> None:
    view = _view(container)
    envelopes = _envelopes(container)
    reset(view)
    first_uploaded = envelopes[0]
    parsed = next(
        e
        for e in envelopes
        if e.event_type == "Document.Parsed" and e.aggregate_id == first_uploaded.aggregate_id
    )
    with pytest.raises(OutOfOrderError):
        view.apply_batch([parsed])  # its Uploaded was never applied
    assert _rows(view) == []
    assert (view.max_tracking_id("documents") or 0) == 0
    with pytest.raises(OutOfOrderError):
        view.apply_batch([envelopes[2], envelopes[1]])
    assert _rows(view) == []


def test_runner_catches_up_from_the_event_store_without_the_stream(container: Container) -> None:
    """Nothing was ever published (no relay ran): the runner still builds the catalog."""
    view = _view(container)
    reset(view)
    head = container.documents.head_position()

    async def scenario() -> None:
        bus = Bus(container.settings.nats.url, container.settings.nats)
        await bus.connect("catalog-test")
        await bus.ensure_stream()
        runner = ProjectorRunner(view, container.event_logs, bus, container.settings.database.url)
        stop = asyncio.Event()
        task = asyncio.ensure_future(runner.run(stop))
        await asyncio.wait_for(runner.active.wait(), 20)
        stop.set()
        await task
        await bus.close()

    asyncio.run(scenario())
    assert view.max_tracking_id("documents") == head
    assert len(_rows(view)) == 6


def test_upgrading_to_catalog_versions_projects_the_catalog_again(container: Container) -> None:
    """A database projected before 0009 has rows but no versions: the migration empties
    the catalog and its position, and the projector rebuilds both from the log."""
    import psycopg

    from config.schema import migrate

    view = _view(container)
    view.catch_up_from(container.event_logs)
    before = rows(view)
    assert before["catalog_versions"] and before["catalog_documents"]
    url = container.settings.database.url
    with psycopg.connect(url, autocommit=True) as conn:  # the database as 0008 left it
        conn.execute("DROP TABLE catalog_versions")
        conn.execute(
            "DELETE FROM schema_migrations WHERE name IN"
            " ('0009_catalog_versions.sql', '0011_erasure.sql')"  # later ones alter it too
        )
    assert migrate(url) == ["0009_catalog_versions.sql", "0011_erasure.sql"]
    emptied = rows(view)
    assert emptied["catalog_documents"] == [] and emptied["catalog_versions"] == []
    assert view.refresh_positions() == {"documents": 0}
    view.catch_up_from(container.event_logs)
    assert rows(view) == before

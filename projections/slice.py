"""A read model as one slice: what it declares, and what it is given.

Each read model is a package under ``projections/`` whose ``READ_MODEL`` says,
in one place: its projection (name, tables, and the event classes its handlers
are bound to, hence the contexts it follows), its migration, its view (the
queries), its HTTP router, and how it is rebuilt beside the live copy (the
tables by default). ``projections.read_models.READ_MODELS`` lists them; that
list drives the composition root, ``kf project``, ``kf projections status``,
``kf rebuild-index``, ``kf migrate``, the rebuild API, the app's routers and
the test harness.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from eventsourcing.postgres import PostgresDatastore
from fastapi import APIRouter

from infra.blobs import BlobStore
from infra.crypto import KeyStore
from infra.eventlog import EventLog
from infra.index_home import IndexHolder, IndexHome
from infra.search_index import Bm25Encoder, IndexSpec
from projections.base import Projection, ProjectionView


@dataclass(frozen=True)
class Parts:
    """What the composition root hands read models to build their views with."""

    datastore: PostgresDatastore
    blobs: BlobStore
    keys: KeyStore
    index: IndexHolder
    bm25: Bm25Encoder
    index_spec: IndexSpec
    index_home: IndexHome


@dataclass
class RebuildStatus:
    id: str
    projections: list[str]
    tenant: str | None
    state: str = "pending"  # pending | building | optimizing | switching | done | failed
    projection: str | None = None
    processed: int = 0
    total: int = 0
    chunks: int = 0
    matches_live: bool | None = None
    error: str | None = None
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase
    # Per read model: events replayed, whether the copy equalled the live one, seconds.
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None

    @property
    def seconds(self) -> float:
        end = self.finished_at or datetime.now(UTC)
        return (end - self.started_at).total_seconds()


@dataclass
class RebuildContext:
    """What a rebuild needs of the running system."""

    datastore: PostgresDatastore
    event_logs: Mapping[str, EventLog]
    parts: Parts
    views: Mapping[str, ProjectionView]


@dataclass
class Rebuild:
    """One read model being rebuilt (``tenant``: only that tenant's rows, in place)."""

    model: ReadModel
    context: RebuildContext
    status: RebuildStatus
    tenant: str | None
    compare: bool

    @property
    def live(self) -> ProjectionView:
        return self.context.views[self.model.name]


def _default_view(model: ReadModel, parts: Parts, variant: str) -> ProjectionView:
    return model.view(parts.datastore, model.projection(variant=variant))


@dataclass(frozen=True)
class ReadModel:
    projection: type[Projection]
    view: type[ProjectionView]
    migrations: tuple[str, ...]  # the files under migrations/ that make its tables
    router: APIRouter | None = None
    # How a copy is built (default: ``view(parts.datastore, projection(variant))``).
    build: Callable[[Parts, str], ProjectionView] | None = None
    # How it is rebuilt (default: its tables beside the live ones, switched in one step).
    rebuild: Callable[[Rebuild], None] | None = None

    @property
    def name(self) -> str:
        return self.projection.name

    @property
    def contexts(self) -> tuple[str, ...]:
        return self.projection.contexts

    @property
    def events(self) -> tuple[str, ...]:
        return self.projection.events

    @property
    def follows_everything(self) -> bool:
        return self.projection.follows_everything

    @property
    def tables(self) -> Mapping[str, tuple[str, ...]]:
        return self.projection.tables

    def make_view(self, parts: Parts, variant: str = "") -> ProjectionView:
        view = (
            self.build(parts, variant)
            if self.build is not None
            else _default_view(self, parts, variant)
        )
        view.projection.keys = parts.keys
        return view

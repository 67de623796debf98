"""Read models in tests: their events, their rows, copies beside the live ones, resets.

Generic over every read model: each declares its tables and their primary keys,
so what one test needs of a read model works for all of them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from psycopg.sql import SQL, Identifier

from config.root import Container
from infra.envelope import Envelope
from projections.base import ProjectionView
from projections.read_models import by_name
from projections.rebuild import copy_structure


def envelopes(container: Container, context: str) -> list[Envelope]:
    """Every event of ``context`` in the event store, as envelopes, in order."""
    return [e for batch in container.event_logs[context].read_all(0) for e in batch]


def rows(view: ProjectionView) -> dict[str, list[dict[str, Any]]]:
    """Every table of the view's copy, each in primary-key order."""
    projection = view.projection
    found = {}
    with view.datastore.get_connection() as conn:
        for table, key in projection.tables.items():
            query = SQL("SELECT * FROM {} ORDER BY {}").format(
                Identifier(projection.table(table)), SQL(", ").join(Identifier(c) for c in key)
            )
            found[table] = [dict(row) for row in conn.execute(query).fetchall()]
    return found


def reset(view: ProjectionView) -> None:
    """Empty the view's tables and move its positions back to 0."""
    projection = view.projection
    with view.datastore.transaction(commit=True) as curs:
        for table in projection.tables:
            curs.execute(SQL("TRUNCATE {}").format(Identifier(projection.table(table))))
        for context in view.contexts:
            view.set_position(curs, context, 0)
    view.refresh_positions()


def copy_of(container: Container, name: str, variant: str, **parts: Any) -> ProjectionView:
    """A fresh, empty copy of a read model (tables ``<table><variant>``), like a rebuild's."""
    model = by_name(name)
    with container.parts.datastore.transaction(commit=True) as curs:
        for table in model.tables:
            copy_structure(curs, table, table + variant)
        curs.execute(SQL("DROP TABLE IF EXISTS {}").format(Identifier(f"{name}{variant}_tracking")))
    view = model.make_view(replace(container.parts, **parts), variant)
    view.create_schema()
    view.refresh_positions()
    view.reads = container.tenant_reads
    return view

"""A projection applied to dictionaries: its logic, tested and replayed without PostgreSQL.

``MemoryView`` applies batches exactly as ``ProjectionView.apply_batch`` does
(positions per context, redeliveries skipped, disorder refused, a failed batch
leaving nothing behind), with ``MemoryRows`` in place of the tables. Handlers
written against ``Rows`` run here unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from infra.envelope import Envelope
from projections.base import Projection, select_fresh
from projections.rows import MemoryRows, Row


class MemoryView:
    def __init__(self, projection: Projection) -> None:
        self.projection = projection
        self.rows = MemoryRows(projection.tables)
        self.positions = dict.fromkeys(projection.contexts, 0)

    def apply_batch(self, envelopes: Sequence[Envelope]) -> int:
        """Apply the new envelopes of a batch, all or nothing; returns how many were new."""
        snapshot = self.rows.snapshot()
        try:
            fresh, current = select_fresh(self.projection.contexts, self.positions, envelopes)
            fresh = list(self.projection.opened(fresh))
            self.projection.before_batch(self.rows, fresh)
            for envelope in fresh:
                self.projection.apply(self.rows, envelope)
            self.projection.after_batch(self.rows)
        except BaseException:
            self.rows.restore(snapshot)
            raise
        self.positions = current
        return len(fresh)

    def position(self, context: str) -> int:
        return self.positions.get(context, 0)

    def table(self, name: str) -> list[Row]:
        """A table's rows in primary-key order."""
        rows = self.rows.tables[name]
        return [rows[key] for key in sorted(rows, key=_sortable)]


def _sortable(key: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple(str(part) for part in key)

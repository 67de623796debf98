"""Rebuilding the search read model: its table, like every read model, and its index.

The copy gets a new index of its own (an edge shard directory, or a Qdrant
collection) filled by the replay; a whole rebuild on an edge shard builds the
shard's HNSW in a child process before the switch. The switch moves the index
pointer (or alias) inside the transaction that swaps the tables, so the live
projector, waiting on its tracking rows, carries on against the new index. A
tenant's rebuild writes its points into the live index instead: overwrite by
id first, then drop points no longer present, so searches never see the
tenant empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from psycopg import Cursor
from psycopg.rows import DictRow

from infra.envelope import Envelope
from infra.index_home import (
    IndexHolder,
    optimize_elsewhere,
    remove_index,
    replace_tenant_points,
    same_points,
)
from infra.search_index import EdgeSearchIndex
from projections.rebuild import phase, prepare_tables, replay, shadow_view, switch
from projections.slice import Rebuild


def rebuild_search(run: Rebuild) -> None:
    parts = run.context.parts
    status = run.status
    prepare_tables(run)
    shadow_index, dispose = parts.index_home.new_index(whole=run.tenant is None)
    first = shadow_index
    holder = IndexHolder(lambda: shadow_index)
    shadow = shadow_view(run, replace(parts, index=holder))
    switched = False

    def count_chunks(batch: Sequence[Envelope]) -> None:
        status.chunks += sum(
            int(e.data.get("chunk_count", 0)) for e in batch if e.event_type == "Document.Embedded"
        )

    try:
        status.state, status.projection, status.chunks = "building", "search", 0
        with phase(status, "search.replay"):
            replay(run, shadow, count_chunks)
        # An erasure replayed into the copy rewrote it (``purge``): the holder has the one.
        shadow_index = holder.current
        if run.tenant is None and isinstance(shadow_index, EdgeSearchIndex):
            status.state = "optimizing"
            with phase(status, "search.optimize"):
                shadow_index = optimize_elsewhere(shadow_index)
            holder.swap(shadow_index)
        points_match = True
        if run.compare:
            with phase(status, "search.compare_points"):
                points_match = same_points(parts.index.current, shadow_index, run.tenant)

        def move_points(curs: Cursor[DictRow]) -> None:
            nonlocal switched, shadow_index
            shadow_index = holder.current  # an erasure caught up on rewrote it again
            if run.tenant is None:
                parts.index_home.switch(parts.index, shadow_index)
                switched = True
            else:
                replace_tenant_points(parts.index.current, shadow_index, run.tenant)

        with phase(status, "search.switch"):  # compares the rows inside
            switch(run, shadow, move_points)
        if run.compare:
            status.matches_live = bool(status.matches_live) and points_match
    finally:
        if not switched:
            dispose()
            if holder.is_open and holder.current is not first:  # purged, then failed
                remove_index(parts.index_home, holder.current)

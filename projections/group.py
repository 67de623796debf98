"""Several read models kept by one projector: one consumer, one transaction per batch.

A ``ViewGroup`` stands where a ``ProjectionView`` does for a ``ProjectorRunner``.
Its members keep their own tables, positions and stream offsets exactly as they
would alone, so a rebuild, ``kf projections status`` and the dead letters see no
difference; what changes is the work per event. The read models that every
recorded read reaches (the audit trail, who saw what, usage, dead letters) each
had a consumer of their own, so each read was delivered, decoded and committed
once per read model; in a group it is delivered and decoded once and the batch
commits once, every member's rows and positions together.

Each member skips what it has applied (by its own positions, as alone), so a
member behind the others (just rebuilt, or created by a migration) catches up
from the event store before the group follows the stream, and then takes from
each batch only what is new to it. An event that keeps failing in one member is
parked as that member's dead letter (``projection:<member>``); dropping it skips
it in that member only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from domain.contexts import CONTEXTS
from infra.envelope import Envelope
from infra.eventlog import EventLog
from projections.base import ProjectionView


class ViewGroup:
    def __init__(self, views: Sequence[ProjectionView]) -> None:
        if len({v.name for v in views}) != len(views) or not views:
            raise ValueError("a group needs distinct read models")
        # One order everywhere (the members' position rows are locked in it).
        self._members = tuple(sorted(views, key=lambda v: v.name))
        self.name = "group-" + "-".join(v.name for v in self._members)
        self.contexts = tuple(c for c in CONTEXTS if any(c in v.contexts for v in self._members))
        self.datastore = self._members[0].datastore

    @property
    def members(self) -> tuple[ProjectionView, ...]:
        return self._members

    def _member(self, name: str) -> ProjectionView:
        return next(v for v in self._members if v.name == name)

    # -------------------------------------------------------------- positions

    def refresh_positions(self) -> dict[str, int]:
        for view in self._members:
            view.refresh_positions()
        return {c: self.position(c) for c in self.contexts}

    def position(self, context: str) -> int:
        """Where the furthest-behind member that follows ``context`` stands in it: an event
        at or below this is applied by every member."""
        return min(v.position(context) for v in self._members if context in v.contexts)

    def stream_offset(self, stream: str) -> int | None:
        offsets = [v.stream_offset(stream) for v in self._members]
        known = [o for o in offsets if o is not None]
        return min(known) if len(known) == len(offsets) else None

    def forget_stream_offset(self, stream: str) -> None:
        for view in self._members:
            view.forget_stream_offset(stream)

    # --------------------------------------------------------------- applying

    def apply_batch(
        self, envelopes: Sequence[Envelope], stream: str | None = None, sequence: int | None = None
    ) -> int:
        """Apply the batch to every member in one transaction; how many (event, member)
        applications were new."""
        if not envelopes and sequence is None:
            return 0
        with self.datastore.transaction(commit=True) as curs:
            moved = [v.apply_within(curs, envelopes, stream, sequence) for v in self._members]
        return sum(
            view.committed(envelopes, before, after)
            for view, (before, after) in zip(self._members, moved, strict=True)
        )

    def catch_up_from(self, logs: Mapping[str, EventLog], batch_size: int = 256) -> dict[str, int]:
        """Each member catches up from the event store on its own (members may stand far
        apart: one just rebuilt, one new)."""
        applied: dict[str, int] = {}
        for view in self._members:
            for context, count in view.catch_up_from(logs, batch_size).items():
                applied[context] = applied.get(context, 0) + count
        return applied

    def first_failing(self, logs: Mapping[str, EventLog]) -> tuple[str, Envelope, Exception] | None:
        for view in self._members:
            found = view.first_failing(logs)
            if found is not None:
                return found
        return None

    def skip(self, context: str, position: int, view: str | None = None) -> bool:
        if view is None:
            raise ValueError("say which member of the group goes past the event")
        return self._member(view).skip(context, position)

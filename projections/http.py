"""What read models' routers share: their view from the app, read-your-writes waits, status.

The composition root puts every read model's view in ``app.state.views`` (by
name) and the event logs' heads in ``app.state.event_logs``; routers take them
through these dependencies, never by building anything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import Depends, Query, Request

from infra.web import ApiError
from projections.base import ProjectionView
from projections.status import ComponentStatus

V = TypeVar("V", bound=ProjectionView)


def view_of(name: str, kind: type[V]) -> Callable[[Request], V]:
    """A dependency giving the live view of the read model ``name``."""

    def dependency(request: Request) -> V:
        view = request.app.state.views[name]
        if not isinstance(view, kind):
            raise TypeError(f"the {name} read model's view is a {type(view).__name__}")
        return view

    return dependency


class ReadModels:
    """What the read side may ask of the rest: heads, status, waiting."""

    def __init__(self, request: Request) -> None:
        self._state = request.app.state

    def head(self, context: str) -> int:
        head: int = self._state.event_logs[context].head()
        return head

    def status(self) -> list[ComponentStatus]:
        statuses: list[ComponentStatus] = self._state.projection_status()
        return statuses

    def wait(self, view_name: str, context: str, min_position: int | None) -> None:
        """Read-your-writes: wait (bounded) until ``view_name`` has applied ``min_position``."""
        if min_position is None:
            return
        if min_position > self.head(context):
            raise ApiError(
                422, "invalid_position", f"min_position {min_position} is beyond the newest event."
            )
        view = self._state.views[view_name]
        timeout = self._state.settings.api.read_wait_timeout_s
        if not view.wait_for(context, min_position, timeout):
            raise ApiError(
                503,
                "read_model_behind",
                f"The {view_name} read model has not reached position {min_position} "
                f"within {timeout}s; retry shortly.",
                {"Retry-After": "1"},
            )


MinPosition = Annotated[
    int | None,
    Query(ge=0, description="Wait (bounded) until the read model has applied this position."),
]
Models = Annotated[ReadModels, Depends(ReadModels)]

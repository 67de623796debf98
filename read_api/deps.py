"""Dependencies of the read API's routers, taken from the app the composition root built."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from infra.web import ApiError
from projections.catalog import CatalogView
from projections.status import ComponentStatus


def _catalog(request: Request) -> CatalogView:
    catalog: CatalogView = request.app.state.catalog
    return catalog


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
Catalog = Annotated[CatalogView, Depends(_catalog)]
Models = Annotated[ReadModels, Depends(ReadModels)]

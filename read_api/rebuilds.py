"""Rebuilding read models from the event log, over HTTP (what `kf rebuild-index` drives).

The operator tenant's admins may rebuild everything; any other tenant's admins
only their own tenant's rows of any read model.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, JsonValue, field_validator

from infra.web import ERROR_RESPONSES, Admin, ApiError, ErrorBody
from projections.read_models import names
from projections.rebuild import RebuildBusyError, RebuildJobs
from projections.slice import RebuildStatus

router = APIRouter(prefix="/v1/admin/rebuilds", tags=["operations"])


_CHOICES = [*names(), "all"]
_ENUM: list[JsonValue] = [*_CHOICES]


class RebuildRequest(BaseModel):
    projection: str = Field(
        "all",
        description="A read model's name, or all of them.",
        json_schema_extra={"enum": _ENUM},
    )
    tenant_id: str | None = Field(None, description="Rebuild only this tenant (default: all).")
    compare: bool = Field(True, description="Compare the rebuilt copy with the live one first.")

    @field_validator("projection")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in _CHOICES:
            raise ValueError(f"no read model {value!r}; choose one of {', '.join(_CHOICES)}")
        return value


class RebuildOut(BaseModel):
    id: str
    projections: list[str]
    tenant_id: str | None
    state: str
    projection: str | None
    processed: int
    total: int
    chunks: int
    matches_live: bool | None
    error: str | None
    phases: dict[str, float] = Field(description="Seconds spent per phase.")
    results: dict[str, dict[str, Any]] = Field(
        description="Per read model: events replayed, matches_live, seconds."
    )
    started_at: datetime
    finished_at: datetime | None
    seconds: float

    @classmethod
    def of(cls, status: RebuildStatus) -> RebuildOut:
        return cls(
            id=status.id,
            projections=status.projections,
            tenant_id=status.tenant,
            state=status.state,
            projection=status.projection,
            processed=status.processed,
            total=status.total,
            chunks=status.chunks,
            matches_live=status.matches_live,
            error=status.error,
            phases=status.phases,
            results=status.results,
            started_at=status.started_at,
            finished_at=status.finished_at,
            seconds=round(status.seconds, 3),
        )


@router.post(
    "",
    status_code=202,
    response_model=RebuildOut,
    responses={**ERROR_RESPONSES, 409: {"model": ErrorBody, "description": "A rebuild is running"}},
)
def start_rebuild(request: Request, principal: Admin, body: RebuildRequest) -> RebuildOut:
    """Rebuild search and/or full-text from the event store while searches keep answering."""
    tenant = body.tenant_id
    if principal.tenant_id != request.app.state.operator_tenant:
        if tenant is not None and tenant != principal.tenant_id:
            raise ApiError(403, "forbidden", "Only the operator tenant may rebuild other tenants.")
        tenant = principal.tenant_id
    projections = names() if body.projection == "all" else [body.projection]
    jobs: RebuildJobs = request.app.state.rebuilds
    try:
        status = jobs.start(projections, tenant, compare=body.compare)
    except RebuildBusyError as exc:
        raise ApiError(409, "rebuild_running", str(exc)) from exc
    return RebuildOut.of(status)


@router.get(
    "/{rebuild_id}",
    response_model=RebuildOut,
    responses={**ERROR_RESPONSES, 404: {"model": ErrorBody}},
)
def rebuild_status(request: Request, principal: Admin, rebuild_id: str) -> RebuildOut:
    jobs: RebuildJobs = request.app.state.rebuilds
    status = jobs.get(rebuild_id)
    visible = status is not None and principal.tenant_id in (
        request.app.state.operator_tenant,
        status.tenant,
    )
    if status is None or not visible:
        raise ApiError(404, "rebuild_not_found", f"No rebuild {rebuild_id}.")
    return RebuildOut.of(status)

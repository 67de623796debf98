"""The processing workers as JetStream sees them (``GET /v1/admin/workers``, admins).

Each stage's durable consumer: how many messages wait, how many are being worked on,
how many were delivered again, and how many fetches are outstanding (a worker waiting
for work holds one, so 0 with work pending means no worker is listening).
"""

from __future__ import annotations

from datetime import datetime

import structlog
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from infra.bus import consumer_states
from infra.web import ERROR_RESPONSES, Admin, ApiError, ErrorBody

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/v1/admin", tags=["operations"])


class ConsumerOut(BaseModel):
    name: str
    exists: bool = Field(description="False until a worker of this stage first started")
    pending: int = Field(description="Messages not yet delivered")
    ack_pending: int = Field(description="Delivered and not yet acknowledged: in progress")
    redelivered: int
    waiting_pulls: int = Field(description="Fetches outstanding: workers listening now")
    last_active: datetime | None


class WorkersOut(BaseModel):
    stream: str
    consumers: list[ConsumerOut]
    listening: bool = Field(description="Every stage has at least one worker listening")


@router.get(
    "/workers",
    response_model=WorkersOut,
    responses={**ERROR_RESPONSES, 503: {"model": ErrorBody}},
)
async def workers(principal: Admin, request: Request) -> WorkersOut:
    """Each processing stage's consumer: work waiting, in progress, and workers listening."""
    stream: str = request.app.state.settings.nats.stream
    names: list[str] = request.app.state.worker_consumers
    try:
        states = await consumer_states(request.app.state.nats_url, stream, names)
    except Exception as exc:  # NATS did not answer: say so, do not guess
        log.warning("workers_unavailable", error=repr(exc))
        raise ApiError(
            503,
            "nats_unavailable",
            "NATS did not answer, so the workers' state is unknown.",
            {"Retry-After": "5"},
        ) from None
    out = [ConsumerOut(**vars(state)) for state in states]
    primary = [c for c in out if not c.name.endswith("-restored")]
    return WorkersOut(
        stream=stream,
        consumers=out,
        listening=bool(primary) and all(c.waiting_pulls > 0 for c in primary),
    )

"""Relay and projection positions and lag over HTTP (operators' view)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from infra.web import ERROR_RESPONSES, Admin
from projections.http import Models

router = APIRouter(prefix="/v1/projections", tags=["operations"])


class ContextPositionOut(BaseModel):
    context: str
    position: int
    head: int
    lag: int


class ComponentOut(BaseModel):
    name: str
    kind: str
    lag: int
    contexts: list[ContextPositionOut]


class ProjectionsOut(BaseModel):
    components: list[ComponentOut]


@router.get("", response_model=ProjectionsOut, responses=ERROR_RESPONSES)
def projection_status(principal: Admin, models: Models) -> ProjectionsOut:
    """Each relay's and read model's position per context, the head, and the lag."""
    return ProjectionsOut(
        components=[
            ComponentOut(
                name=status.name,
                kind=status.kind,
                lag=status.lag,
                contexts=[
                    ContextPositionOut(
                        context=c.context, position=c.position, head=c.head, lag=c.lag
                    )
                    for c in status.contexts
                ],
            )
            for status in models.status()
        ]
    )

"""The tenant's budgets over HTTP: read them with their use (analysts, admins), set and
remove them (admins). Each change is an event with its actor and reason."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from domain.access import Principal, Role
from domain.usage import Limit
from infra.web import ERROR_RESPONSES, Admin, ErrorBody, require
from write_api.deps import Guard, Usage

router = APIRouter(prefix="/v1/budgets", tags=["usage"])
BudgetReader = Annotated[Principal, Depends(require(Role.ANALYST))]  # analysts and admins
Metric = Literal["tokens", "cost_usd", "documents", "bytes"]
Period = Literal["day", "month", "total"]


class SetBudget(BaseModel):
    amount: Decimal = Field(
        description="Tokens (input + output), USD as charged, documents, or bytes"
    )
    hard: bool = Field(True, description="Hard: refuse past it (429); soft: warn (alert)")
    reason: str = Field("", max_length=500)


class BudgetOut(BaseModel):
    scope: str = Field(description='"tenant", or "key:<key id>"')
    metric: Metric
    period: Period
    amount: str
    hard: bool
    used: str = Field(description="This period's use, as the usage read model has it")
    period_start: datetime
    resets_at: datetime


class BudgetChanged(BaseModel):
    position: int | None = Field(description="None: nothing to remove")
    changed: bool


@router.get("", response_model=list[BudgetOut], responses=ERROR_RESPONSES)
def list_budgets(principal: BudgetReader, guard: Guard) -> list[BudgetOut]:
    """The tenant's budgets and what each period has used so far."""
    return [
        BudgetOut.model_validate({**b, "amount": f"{b['amount']:f}", "used": f"{b['used']:f}"})
        for b in guard.status(principal.tenant_id)
    ]


@router.put(
    "/{scope}/{metric}/{period}",
    response_model=BudgetChanged,
    responses={**ERROR_RESPONSES, 404: {"model": ErrorBody}, 409: {"model": ErrorBody}},
)
def set_budget(
    principal: Admin, usage: Usage, scope: str, metric: Metric, period: Period, body: SetBudget
) -> BudgetChanged:
    """Set the tenant's (scope ``tenant``) or one key's (``key:<id>``) budget on answers'
    tokens or cost per day or month, or the tenant's quota on documents or stored bytes
    (``tenant/documents/total``, ``tenant/bytes/total``)."""
    position = usage.set_limit(
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        limit=Limit(scope, metric, period, body.amount, body.hard),
        reason=body.reason,
    )
    return BudgetChanged(position=position, changed=True)


@router.delete(
    "/{scope}/{metric}/{period}",
    response_model=BudgetChanged,
    responses={**ERROR_RESPONSES, 404: {"model": ErrorBody}, 409: {"model": ErrorBody}},
)
def remove_budget(
    principal: Admin, usage: Usage, scope: str, metric: Metric, period: Period
) -> BudgetChanged:
    """Remove a budget (questions are no longer counted against it)."""
    position = usage.remove_limit(
        tenant_id=principal.tenant_id, actor=principal.actor, scope=scope, metric=metric,
        period=period,
    )  # fmt: skip
    return BudgetChanged(position=position, changed=position is not None)

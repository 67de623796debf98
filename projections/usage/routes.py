"""``GET /v1/usage``: usage and cost per group of a window, as JSON or streamed CSV.

Analysts and admins read the whole tenant's; viewers and editors read their own
(the figures of the credential they call with), and nothing else.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal, Protocol
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from domain.access import Principal, Role
from domain.usage import PriceBook, TokenPrice
from infra.web import ERROR_RESPONSES, ApiError, ErrorBody, UsageReader, require
from projections.http import Models, view_of
from projections.usage.report import csv_lines
from projections.usage.view import (
    DIMENSIONS,
    PERIODS,
    InvalidGroupingError,
    PriceOf,
    RepricingRun,
    Usage,
    UsageView,
    Window,
    grouping,
)

router = APIRouter(tags=["usage"])
UsageModel = Annotated[UsageView, Depends(view_of("usage", UsageView))]
DEFAULT_WINDOW = timedelta(days=30)
MAX_WINDOW = timedelta(days=3 * 366)
MAX_GROUPS = 10_000


class UsageOut(BaseModel):
    group: dict[str, str | None] = Field(
        description="The group's value of each group_by (a period's first day for day, week,"
        " month); null: the dimension does not apply (a search has no model)."
    )
    questions: int
    answers: int
    failures: int = Field(description="Questions whose answer failed")
    input_tokens: int
    output_tokens: int
    cost_charged_usd: str = Field(description="As recorded on each answer when generated")
    unpriced_answers: int = Field(description="Answers whose model had no price: not in cost")
    cost_current_usd: str = Field(description="The same tokens at today's prices")
    cost_repriced_usd: str | None = Field(
        None, description="With price_book: the answers at that price book version"
    )
    unpriced_repriced: int | None = Field(None, description="... that had no price there")
    not_repriced: int | None = Field(None, description="... recorded after the run")
    unpriced_now: int = Field(description="Answers whose model has no price today")
    latency_ms_p50: float | None = Field(description="Answer latency, provider included")
    latency_ms_p95: float | None
    documents: int = Field(description="Documents uploaded")
    bytes: int
    pages: int
    chunks: int
    embedding_tokens: int = Field(description="Counted with the embedding model's tokenizer")
    searches: dict[str, int] = Field(description="Searches by mode")

    @classmethod
    def of(cls, usage: Usage) -> UsageOut:
        return cls(
            **{
                **usage.__dict__,
                "cost_charged_usd": f"{usage.cost_charged_usd:f}",
                "cost_current_usd": f"{usage.cost_current_usd:f}",
                "cost_repriced_usd": None
                if usage.cost_repriced_usd is None
                else f"{usage.cost_repriced_usd:f}",
            }
        )


class RepricingOut(BaseModel):
    id: UUID
    price_book_version: int
    through: int = Field(description="Covers answers recorded up to this conversations position")
    actor: str
    reason: str
    requested_at: datetime
    answers: int
    unpriced: int = Field(description="Answers whose model had no price at that version")
    cost_charged_usd: str = Field(description="What the covered answers were charged")
    cost_repriced_usd: str = Field(description="What they cost at that version")

    @classmethod
    def of(cls, run: RepricingRun) -> RepricingOut:
        return cls(
            id=run.run_id,
            price_book_version=run.price_book_version,
            through=run.through,
            actor=run.actor,
            reason=run.reason,
            requested_at=run.requested_at,
            answers=run.answers,
            unpriced=run.unpriced,
            cost_charged_usd=f"{run.cost_charged_usd:f}",
            cost_repriced_usd=f"{run.cost_repriced_usd:f}",
        )


class UsageReport(BaseModel):
    tenant_id: str
    start: datetime = Field(alias="from")
    end: datetime = Field(alias="to")
    group_by: list[str]
    scope: Literal["tenant", "own"] = Field(
        description="tenant: everyone's use (analysts, admins); own: the caller's only"
    )
    groups: list[UsageOut]
    truncated: bool = Field(description=f"More than {MAX_GROUPS} groups: use format=csv")
    total: UsageOut
    repricing: RepricingOut | None = Field(
        None, description="With price_book: the run whose figures are beside the charges"
    )


class PriceBooks(Protocol):
    """The port onto the tenant's price book (the usage context's ``price_book``)."""

    def price_book(self, tenant_id: str, version: int | None = None) -> PriceBook: ...


def prices_now(usage_app: PriceBooks, tenant_id: str) -> PriceOf:
    """The tenant's prices in force now, per provider and model."""
    book = usage_app.price_book(tenant_id)
    now = datetime.now(UTC)

    def price_of(provider: str, model: str) -> TokenPrice | None:
        entry = book.price(provider, model, now)
        return None if entry is None else entry.price

    return price_of


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def window_of(
    principal: Principal, start: datetime | None, end: datetime | None
) -> tuple[Window, str]:
    end = _aware(end) if end else datetime.now(UTC)
    start = _aware(start) if start else end - DEFAULT_WINDOW
    if start >= end:
        raise ApiError(422, "invalid_window", "from must be earlier than to.")
    if end - start > MAX_WINDOW:
        raise ApiError(422, "invalid_window", "A window is at most three years long.")
    whole_tenant = principal.role.allows(Role.ANALYST)
    actor = None if whole_tenant else principal.actor
    return Window(start, end, actor), "tenant" if whole_tenant else "own"


def _group_by(value: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    try:
        return grouping(names)
    except InvalidGroupingError as exc:
        raise ApiError(422, "invalid_group_by", str(exc)) from exc


@router.get(
    "/v1/usage/repricings/{run_id}",
    response_model=RepricingOut,
    responses={**ERROR_RESPONSES, 404: {"model": ErrorBody}, 503: {"model": ErrorBody}},
)
def repricing_run(
    principal: Annotated[Principal, Depends(require(Role.ANALYST))],
    usage: UsageModel,
    models: Models,
    run_id: UUID,
    min_position: Annotated[
        int | None, Query(ge=0, description="Wait until the run (its position) is applied")
    ] = None,
) -> RepricingOut:
    """A re-pricing run's totals: the answers it covered, charged and at its version."""
    models.wait("usage", "usage", min_position)
    run = usage.repricing(principal.tenant_id, run_id)
    if run is None:
        raise ApiError(404, "repricing_not_found", f"No re-pricing run {run_id} (yet).")
    return RepricingOut.of(run)


@router.get(
    "/v1/usage",
    response_model=UsageReport,
    responses={
        **ERROR_RESPONSES,
        200: {"description": "The report", "content": {"application/json": {}, "text/csv": {}}},
        409: {"model": ErrorBody, "description": "No re-pricing run at price_book yet"},
    },
)
def usage_report(
    request: Request,
    principal: UsageReader,
    usage: UsageModel,
    start: Annotated[
        datetime | None, Query(alias="from", description="From this time (default: to - 30 days)")
    ] = None,
    end: Annotated[datetime | None, Query(alias="to", description="Before this time (now)")] = None,
    group_by: Annotated[
        str,
        Query(
            description="Comma-separated: at most one of "
            + ", ".join(PERIODS)
            + "; any of "
            + ", ".join(DIMENSIONS)
        ),
    ] = "",
    report_format: Annotated[
        Literal["json", "csv"], Query(alias="format", description="json, or csv streamed")
    ] = "json",
    price_book: Annotated[
        int | None,
        Query(ge=1, description="Beside the charges: the newest re-pricing run at this version"),
    ] = None,
) -> UsageReport | StreamingResponse:
    """Questions, answers, failures, tokens, cost as charged and as priced now, answer
    latency, ingestion and searches, per group of the window; the sums over the groups are
    the totals."""
    window, scope = window_of(principal, start, end)
    names = _group_by(group_by)
    run = None
    if price_book is not None:
        run = usage.latest_repricing(principal.tenant_id, price_book)
        if run is None:
            raise ApiError(
                409,
                "not_repriced",
                f"No re-pricing run at price book version {price_book} yet: start one with"
                " POST /v1/usage/repricings (or kf usage reprice).",
            )
        window = replace(window, repricing=run.run_id)
    price_of = prices_now(request.app.state.usage_app, principal.tenant_id)
    if report_format == "csv":
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        return StreamingResponse(
            csv_lines(usage.usage(principal.tenant_id, window, names, price_of), names),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="usage-{stamp}.csv"'},
        )
    groups: list[UsageOut] = []
    truncated = False
    for group in usage.usage(principal.tenant_id, window, names, price_of):
        if len(groups) == MAX_GROUPS:
            truncated = True
            break
        groups.append(UsageOut.of(group))
    total = usage.total(principal.tenant_id, window, price_of)
    return UsageReport.model_validate(
        {
            "tenant_id": principal.tenant_id,
            "from": window.start,
            "to": window.end,
            "group_by": list(names),
            "scope": scope,
            "groups": groups,
            "truncated": truncated,
            "total": UsageOut.of(total),
            "repricing": None if run is None else RepricingOut.of(run),
        }
    )

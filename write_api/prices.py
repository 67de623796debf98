"""The tenant's price book over HTTP: read it (admins, analysts), set a price (admins)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from commands.usage import describe
from domain.access import Principal, Role
from domain.usage import TokenPrice
from infra.web import ERROR_RESPONSES, Admin, ErrorBody, require
from write_api.deps import Usage

router = APIRouter(prefix="/v1/prices", tags=["usage"])
PriceReader = Annotated[Principal, Depends(require(Role.ANALYST))]  # analysts and admins


class SetPrice(BaseModel):
    input_per_million: Decimal = Field(description="Per million input tokens")
    output_per_million: Decimal = Field(description="Per million output tokens")
    cached_input_per_million: Decimal | None = Field(
        None, description="Per million input tokens read from a prompt cache; none: as input"
    )
    currency: Literal["USD"] = "USD"
    effective_from: datetime | None = Field(
        None, description="In force from (with a time zone); default now. Earlier answers keep"
        " what they were charged; re-pricing can apply it to them."
    )  # fmt: skip
    reason: str = Field("", max_length=500)


class PriceOut(BaseModel):
    provider: str
    model: str
    effective_from: datetime
    input_per_million: str
    output_per_million: str
    cached_input_per_million: str | None
    currency: str
    set_in_version: int


class PriceBookOut(BaseModel):
    version: int = Field(description="Name it to re-price with this book (kf usage reprice)")
    prices: list[PriceOut]


class PriceSetOut(BaseModel):
    version: int
    position: int
    price: PriceOut


def _book(described: dict[str, Any]) -> PriceBookOut:
    return PriceBookOut.model_validate(described)


@router.get(
    "", response_model=PriceBookOut, responses={**ERROR_RESPONSES, 404: {"model": ErrorBody}}
)
def price_book(
    principal: PriceReader,
    usage: Usage,
    version: Annotated[int | None, Query(ge=1, description="The book as it was then")] = None,
) -> PriceBookOut:
    """The tenant's price book: every price with the time it is in force from."""
    return _book(describe(usage.price_book(principal.tenant_id, version)))


@router.put(
    "/{provider}/{model:path}",
    response_model=PriceSetOut,
    # 404: a provider or model with characters no URL path carries (a line break).
    responses={**ERROR_RESPONSES, 404: {"model": ErrorBody}, 409: {"model": ErrorBody}},
)
def set_price(
    principal: Admin, usage: Usage, provider: str, model: str, body: SetPrice
) -> PriceSetOut:
    """Set a model's price (provider ``*``: any provider; the model may be a glob pattern),
    in force from ``effective_from``. The change is an event with its actor and reason."""
    effective_from = body.effective_from or datetime.now(UTC)
    price = TokenPrice(
        body.input_per_million,
        body.output_per_million,
        body.cached_input_per_million,
        body.currency,
    )
    result, version = usage.set_price(
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        provider=provider,
        model=model,
        price=price,
        effective_from=effective_from,
        reason=body.reason,
    )
    return PriceSetOut(
        version=version,
        position=result.position,
        price=PriceOut(
            provider=provider,
            model=model,
            effective_from=effective_from,
            **price.as_dict(),
            set_in_version=version,
        ),
    )


# ------------------------------------------------------------------ re-pricing

repricings = APIRouter(prefix="/v1/usage/repricings", tags=["usage"])


class Reprice(BaseModel):
    price_book_version: int = Field(ge=1, description="The price book version to price at")
    reason: str = Field("", max_length=500)


class RepriceAccepted(BaseModel):
    id: UUID
    position: int = Field(description="Pass as min_position to GET /v1/usage/repricings/{id}")
    price_book_version: int
    through: int = Field(description="Answers recorded up to this conversations position")


@repricings.post(
    "",
    status_code=202,
    response_model=RepriceAccepted,
    responses={**ERROR_RESPONSES, 404: {"model": ErrorBody}},
)
def reprice(
    principal: PriceReader, usage: Usage, body: Reprice, request: Request
) -> RepriceAccepted:
    """Price every answer recorded so far at another price book version, beside what each
    was charged (which does not change). The run is an event; its figures follow."""
    through = request.app.state.conversations.head_position()
    result = usage.reprice(
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        price_book_version=body.price_book_version,
        through=through,
        reason=body.reason,
    )
    return RepriceAccepted(
        id=result.id,
        position=result.position,
        price_book_version=body.price_book_version,
        through=through,
    )

"""Command handlers of the usage context (events table ``usage_events``): price books.

A tenant's price book is opened the first time it is needed (to charge an
answer, to read or change a price) with the operator's configured prices, as an
event like every later change. Two requests opening it at once conflict on the
aggregate's id; the loser reads the winner's book.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.utils import EnvType

from commands.base import CommandResult, ConcurrencyConflictError, ContextApplication
from domain.errors import NotFoundError
from domain.usage import (
    Budgets,
    Limit,
    PriceBook,
    PriceEntry,
    Repricing,
    TokenPrice,
    charged,
)

ConfiguredPrices = Sequence[tuple[str, str, TokenPrice]]  # (provider, model, price)
OPENER = "system:config"


class PriceBookVersionNotFoundError(NotFoundError):
    code = "price_book_version_not_found"


class UsageApp(ContextApplication):
    context = "usage"

    def __init__(self, env: EnvType | None = None, *, configured: ConfiguredPrices = ()) -> None:
        super().__init__(env)
        self._configured = list(configured)

    # --------------------------------------------------------------- reading

    def price_book(self, tenant_id: str, version: int | None = None) -> PriceBook:
        """The tenant's book (opened now if it never was), or the book as it was at ``version``."""
        book_id = PriceBook.id_for(tenant_id)
        try:
            book: PriceBook = self.repository.get(book_id, version=version)
        except AggregateNotFoundError:
            if version is not None:
                raise PriceBookVersionNotFoundError(
                    f"The price book has no version {version}."
                ) from None
            return self._open(tenant_id)
        if version is not None and book.version != version:
            raise PriceBookVersionNotFoundError(
                f"The price book has no version {version}; its latest is {book.version}."
            )
        return book

    def _open(self, tenant_id: str) -> PriceBook:
        book = PriceBook.open(tenant_id=tenant_id, actor=OPENER, configured=self._configured)
        try:
            self.record(book)
        except ConcurrencyConflictError:  # opened meanwhile by another request
            opened: PriceBook = self.repository.get(PriceBook.id_for(tenant_id))
            return opened
        return book

    def charge(
        self,
        tenant_id: str,
        provider: str,
        models: Sequence[str],
        input_tokens: int,
        output_tokens: int,
        cached_input_tokens: int,
        at: datetime,
    ) -> tuple[Decimal | None, int, PriceEntry | None]:
        """What the answer is charged (its cost to the hundred-millionth of a dollar) at the
        price in force at ``at`` for the first of ``models`` that has one (the model that
        answered, then the one asked for), with the book version used and the entry;
        None when none of them has a price."""
        book = self.price_book(tenant_id)
        for model in models:
            entry = book.price(provider, model, at)
            if entry is not None:
                cost = entry.price.cost(input_tokens, output_tokens, cached_input_tokens)
                return charged(cost), book.version, entry
        return None, book.version, None

    def budgets(self, tenant_id: str) -> Budgets:
        """The tenant's budgets; a tenant that never set one gets an empty book, recorded
        only with its first budget (reading records nothing)."""
        try:
            found: Budgets = self.repository.get(Budgets.id_for(tenant_id))
        except AggregateNotFoundError:
            return Budgets.open(tenant_id=tenant_id, actor=OPENER)
        return found

    def set_limit(self, *, tenant_id: str, actor: str, limit: Limit, reason: str = "") -> int:
        """Set a budget; the position of the change."""
        budgets = self.budgets(tenant_id)
        budgets.set_limit(actor=actor, limit=limit, reason=reason)
        position = self.record(budgets)
        assert position is not None
        return position

    def remove_limit(
        self, *, tenant_id: str, actor: str, scope: str, metric: str, period: str, reason: str = ""
    ) -> int | None:
        """Remove a budget; the position of the change, or None when there was none."""
        budgets = self.budgets(tenant_id)
        if not budgets.remove_limit(
            actor=actor, scope=scope, metric=metric, period=period, reason=reason
        ):
            return None
        return self.record(budgets)

    # -------------------------------------------------------------- changing

    def set_price(
        self,
        *,
        tenant_id: str,
        actor: str,
        provider: str,
        model: str,
        price: TokenPrice,
        effective_from: datetime,
        reason: str = "",
    ) -> tuple[CommandResult, int]:
        """Set a price; the command's result and the book's new version."""
        book = self.price_book(tenant_id)
        book.set_price(
            actor=actor,
            provider=provider,
            model=model,
            price=price,
            effective_from=effective_from,
            reason=reason,
        )
        position = self.record(book)
        assert position is not None
        return CommandResult(book.id, position, changed=True), book.version

    def reprice(
        self,
        *,
        tenant_id: str,
        actor: str,
        price_book_version: int,
        through: int,
        reason: str = "",
    ) -> CommandResult:
        """Request a re-pricing run of the tenant's answers up to ``through`` (a conversations
        position) at ``price_book_version``; not found if the book never had that version."""
        self.price_book(tenant_id, price_book_version)
        run = Repricing.request(
            tenant_id=tenant_id,
            actor=actor,
            price_book_version=price_book_version,
            through=through,
            reason=reason,
        )
        position = self.record(run)
        assert position is not None
        return CommandResult(run.id, position, changed=True)


def describe(book: PriceBook) -> dict[str, Any]:
    """A book as the API and the CLI show it: its version and every entry, newest first."""
    return {
        "version": book.version,
        "prices": [
            {
                "provider": e.provider,
                "model": e.model,
                "effective_from": e.effective_from.isoformat(),
                **e.price.as_dict(),
                "set_in_version": e.version,
            }
            for e in sorted(
                book.entries,
                key=lambda e: (e.provider, e.model, e.effective_from),
            )
        ],
    }

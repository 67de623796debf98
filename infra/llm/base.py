"""The provider interface: one request in, text (whole or streamed) and usage out."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

Role = Literal["system", "user", "assistant"]
ErrorKind = Literal[
    "rate_limited",  # 429: retry after a pause (Retry-After when given)
    "unavailable",  # 5xx or connection refused: retry, then fall back
    "timeout",  # no answer in time: retry, then fall back
    "bad_response",  # the server answered something that is not the protocol
    "rejected",  # 4xx other than 429: our request or our credentials; no retry
    "circuit_open",  # the router skipped a provider that keeps failing
    "not_allowed",  # the tenant's configuration does not allow any matching provider
]
RETRYABLE: frozenset[ErrorKind] = frozenset({"rate_limited", "unavailable", "timeout"})


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class Passage:
    """A retrieved chunk as the model sees it: numbered for citation, quoted as data."""

    n: int
    text: str
    source: str  # e.g. "report.pdf, page 3"


@dataclass(frozen=True)
class CompletionRequest:
    model: str
    messages: tuple[Message, ...]
    max_output_tokens: int = 1024
    temperature: float = 0.0
    # The passages the messages quote; providers that do not call a model
    # (extractive) answer from these directly.
    passages: tuple[Passage, ...] = ()
    question: str = ""


@dataclass(frozen=True)
class Usage:
    input_tokens: int  # every input token, cached ones included
    output_tokens: int
    cached_input_tokens: int = 0  # of the input, read from the provider's prompt cache


@dataclass(frozen=True)
class Completion:
    text: str
    usage: Usage
    provider: str
    model: str  # as the provider reported it
    finish_reason: str = "stop"
    attempts: tuple[str, ...] = field(default=())  # what the router tried first, for the record


class ProviderError(Exception):
    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        provider: str = "",
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.provider = provider
        self.retry_after_s = retry_after_s

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE


class Provider(Protocol):
    name: str

    def complete(self, request: CompletionRequest) -> Completion:
        """The whole answer; raises ``ProviderError``."""
        ...

    def stream(self, request: CompletionRequest) -> Iterator[str | Completion]:
        """Text deltas as they arrive, then the ``Completion`` (whole text and usage) last."""
        ...


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from datetime import UTC, datetime
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())

"""Which provider answers a model name, and what happens when it fails.

Routes map model-name patterns (globs) to providers with a priority; every
matching route is a candidate, best priority first, and the next one is the
fallback. A tenant's configuration may allow only some providers: the others
are never sent its passages, not even as a fallback.

Per candidate, retryable failures (429, 5xx, timeouts, refused connections)
are retried with exponential backoff and jitter, waiting at least what a
``Retry-After`` asked (capped). A circuit breaker per provider opens after
``failure_threshold`` consecutive failed calls and skips the provider for
``cooldown_s``; then one trial call is let through (half-open): success closes
the circuit, failure opens it again.

Streams are retried and fall back only before their first token: once text
has reached the caller, a failure is reported, never papered over by a second
answer that would repeat the first one's words.
"""

from __future__ import annotations

import fnmatch
import random
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, replace

import structlog

from infra.llm.base import Completion, CompletionRequest, Provider, ProviderError

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Route:
    pattern: str  # glob over the requested model name, e.g. "gpt-*", "claude-*", "*"
    provider: str
    priority: int = 100  # lower first
    model: str | None = None  # the name to send upstream (default: the requested one)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3  # per candidate
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    max_retry_after_s: float = 30.0


class CircuitBreaker:
    def __init__(
        self,
        failure_threshold: int = 5,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = failure_threshold
        self._cooldown = cooldown_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        with self._lock:
            return self._state()

    def _state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self._cooldown:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        with self._lock:
            state = self._state()
            if state == "closed":
                return True
            if state == "half_open" and not self._trial_running:
                self._trial_running = True
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._trial_running = False

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._trial_running or self._failures >= self._threshold:
                self._opened_at = self._clock()
            self._trial_running = False


@dataclass(frozen=True)
class Candidate:
    provider: Provider
    model: str


class Router:
    def __init__(
        self,
        providers: Sequence[Provider],
        routes: Sequence[Route],
        *,
        retry: RetryPolicy = RetryPolicy(),
        failure_threshold: int = 5,
        cooldown_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._providers = {p.name: p for p in providers}
        unknown = sorted({r.provider for r in routes} - set(self._providers))
        if unknown:
            raise ValueError(f"routes name unknown providers: {', '.join(unknown)}")
        self._routes = sorted(routes, key=lambda r: r.priority)
        self._retry = retry
        self._sleep = sleep
        self.breakers = {
            name: CircuitBreaker(failure_threshold, cooldown_s, clock) for name in self._providers
        }

    def model_names(self, allowed: Collection[str] | None = None) -> list[str]:
        """The routes' literal model names (glob patterns are not names) a tenant may use."""
        names = [r.pattern for r in self._routes if not any(c in r.pattern for c in "*?[")]
        return [n for n in dict.fromkeys(names) if self.candidates(n, allowed)]

    def candidates(self, model: str, allowed: Collection[str] | None = None) -> list[Candidate]:
        """Providers that may answer ``model`` for a tenant allowed ``allowed`` (None: any)."""
        found: list[Candidate] = []
        seen: set[str] = set()
        for route in self._routes:
            if not fnmatch.fnmatchcase(model, route.pattern) or route.provider in seen:
                continue
            if allowed is not None and route.provider not in allowed:
                continue
            seen.add(route.provider)
            found.append(Candidate(self._providers[route.provider], route.model or model))
        return found

    def _candidates_or_raise(self, model: str, allowed: Collection[str] | None) -> list[Candidate]:
        found = self.candidates(model, allowed)
        if not found:
            raise ProviderError(
                "not_allowed",
                f"no provider this tenant may use serves the model {model!r}",
            )
        return found

    def _delay(self, attempt: int, error: ProviderError) -> float:
        backoff = min(self._retry.max_delay_s, self._retry.base_delay_s * 2.0 ** (attempt - 1))
        backoff *= 0.5 + random.random() / 2  # noqa: S311 - jitter, not security
        if error.retry_after_s is not None:
            return float(max(backoff, min(error.retry_after_s, self._retry.max_retry_after_s)))
        return float(backoff)

    def complete(
        self, request: CompletionRequest, allowed: Collection[str] | None = None
    ) -> Completion:
        plan = _Attempts(self, request, allowed)
        for provider, upstream in plan:
            try:
                completion = provider.complete(upstream)
            except ProviderError as error:
                plan.failed(error)
                continue
            return plan.succeeded(completion)
        raise plan.exhausted()

    def stream(
        self, request: CompletionRequest, allowed: Collection[str] | None = None
    ) -> Iterator[str | Completion]:
        plan = _Attempts(self, request, allowed)
        for provider, upstream in plan:
            started = False
            try:
                for item in provider.stream(upstream):
                    if isinstance(item, Completion):
                        yield plan.succeeded(item)
                        return
                    started = True
                    yield item
            except ProviderError as error:
                plan.failed(error, streamed=started)
                if started:
                    raise  # text already reached the caller: no second answer
                continue
            raise ProviderError(
                "bad_response",
                f"{provider.name}: the stream ended without usage",
                provider=provider.name,
            )
        raise plan.exhausted()


class _Attempts:
    """The calls one request may make: candidates in order, retries, the breakers' say.

    Iterating yields (provider, upstream request) for each call allowed; the
    caller reports each outcome with ``succeeded`` or ``failed``, which keep
    the breakers, the backoff and the record of what was tried.
    """

    def __init__(
        self, router: Router, request: CompletionRequest, allowed: Collection[str] | None
    ) -> None:
        self._router = router
        self._request = request
        self._candidates = router._candidates_or_raise(request.model, allowed)
        self._tried: list[str] = []
        self._last: ProviderError | None = None
        self._breaker: CircuitBreaker | None = None
        self._name = ""
        self._attempt = 0
        self._next_candidate = False

    def __iter__(self) -> Iterator[tuple[Provider, CompletionRequest]]:
        max_attempts = self._router._retry.max_attempts
        for candidate in self._candidates:
            name = self._name = candidate.provider.name
            self._breaker = self._router.breakers[name]
            self._next_candidate = False
            for attempt in range(1, max_attempts + 1):
                if self._next_candidate:
                    break
                if not self._breaker.allow():
                    self._tried.append(f"{name}:circuit_open")
                    self._last = ProviderError(
                        "circuit_open", f"{name}: circuit open", provider=name
                    )
                    break
                self._attempt = attempt
                yield candidate.provider, replace(self._request, model=candidate.model)

    def succeeded(self, completion: Completion) -> Completion:
        assert self._breaker is not None
        self._breaker.record_success()
        return replace(completion, attempts=tuple(self._tried))

    def failed(self, error: ProviderError, **log_fields: object) -> None:
        assert self._breaker is not None
        self._breaker.record_failure()
        self._tried.append(f"{self._name}:{error.kind}")
        self._last = error
        log.warning(
            "provider_failed",
            provider=self._name,
            kind=error.kind,
            attempt=self._attempt,
            **log_fields,
        )
        if error.kind == "rejected" or not error.retryable:
            self._next_candidate = True
        elif self._attempt < self._router._retry.max_attempts:
            self._router._sleep(self._router._delay(self._attempt, error))

    def exhausted(self) -> ProviderError:
        assert self._last is not None
        return ProviderError(
            self._last.kind,
            f"every provider failed for {self._request.model!r}: {', '.join(self._tried)}",
            provider=self._last.provider,
            retry_after_s=self._last.retry_after_s,
        )

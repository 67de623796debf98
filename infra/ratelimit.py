"""Rate limits as token buckets, in Redis (shared by every API process) or in-process.

A request takes one token from each of its buckets (its key's and its
tenant's) or from none: the check-and-take of all buckets is one atomic step
(a Lua script in Redis, a lock in-process), so concurrent requests from many
processes never overspend. A bucket holds ``burst`` tokens and refills at
``per_hour`` per hour; Redis's clock is the only clock when Redis is used.

The decision carries what the IETF RateLimit header fields draft asks for:
``RateLimit-Limit`` (the bucket size), ``RateLimit-Remaining`` and
``RateLimit-Reset`` (seconds until the bucket is full again), for the bucket
closest to empty, and ``Retry-After`` when refused.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from domain.access import Principal, Role

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Bucket:
    key: str
    burst: int
    per_hour: int

    @property
    def rate_per_s(self) -> float:
        return self.per_hour / 3600.0


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int
    retry_after_s: int
    bucket: str

    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after_s)
        return headers


class RoleRateLimits:
    """Each request draws on its key's bucket (sized by the key's role) and its tenant's.

    Tokens exchanged for a key draw on that key's bucket; an external issuer's
    subject has a bucket of its own; a person signed in to the web app has one
    sized for a browser (pages poll), whatever their role.
    """

    def __init__(
        self,
        per_role: Mapping[Role, tuple[int, int]],
        tenant: tuple[int, int],
        session: tuple[int, int] | None = None,
    ) -> None:
        self._per_role = dict(per_role)  # role -> (burst, per_hour)
        self._tenant = tenant
        self._session = session  # a person signed in, whatever the role: (burst, per_hour)

    def buckets(self, principal: Principal) -> Sequence[Bucket]:
        burst, per_hour = self._per_role[principal.role]
        if principal.user_id is not None:
            who = f"user:{principal.user_id}"
            burst, per_hour = self._session or (burst, per_hour)
        else:
            who = f"key:{principal.key_id if principal.key_id is not None else principal.subject}"
        tenant_burst, tenant_per_hour = self._tenant
        return (
            Bucket(who, burst, per_hour),
            Bucket(f"tenant:{principal.tenant_id}", tenant_burst, tenant_per_hour),
        )


class RateLimiter(Protocol):
    kind: str
    blocking: bool  # does acquire() do I/O (then callers keep it off the event loop)

    def acquire(self, buckets: Sequence[Bucket]) -> Decision: ...

    def close(self) -> None: ...


def _decide(buckets: Sequence[Bucket], levels: Sequence[float], allowed: bool) -> Decision:
    """The decision for the bucket closest to empty (after this request)."""
    worst = min(range(len(buckets)), key=lambda i: (math.floor(levels[i]), buckets[i].burst))
    bucket, level = buckets[worst], levels[worst]
    reset_s = math.ceil((bucket.burst - level) / bucket.rate_per_s) if level < bucket.burst else 0
    retry_after_s = 0
    if not allowed:
        # The earliest moment every bucket holds a whole token again.
        retry_after_s = max(
            math.ceil(max(0.0, 1.0 - lvl) / b.rate_per_s)
            for b, lvl in zip(buckets, levels, strict=True)
        )
        retry_after_s = max(retry_after_s, 1)
    return Decision(
        allowed=allowed,
        limit=bucket.burst,
        remaining=max(0, math.floor(level)),
        reset_s=reset_s,
        retry_after_s=retry_after_s,
        bucket=bucket.key,
    )


class InProcessRateLimiter:
    """Buckets in this process's memory: right for one API process (the embedded default)."""

    kind = "in-process"
    blocking = False

    def __init__(self, max_buckets: int = 100_000) -> None:
        # key -> (tokens, at, seconds until full again from ``at``)
        self._state: dict[str, tuple[float, float, float]] = {}
        self._lock = threading.Lock()
        self._max_buckets = max_buckets

    def acquire(self, buckets: Sequence[Bucket]) -> Decision:
        now = time.monotonic()
        with self._lock:
            levels = []
            for bucket in buckets:
                tokens, at, _ = self._state.get(bucket.key, (float(bucket.burst), now, 0.0))
                levels.append(min(bucket.burst, tokens + (now - at) * bucket.rate_per_s))
            allowed = all(level >= 1.0 for level in levels)
            if allowed:
                levels = [level - 1.0 for level in levels]
            for bucket, level in zip(buckets, levels, strict=True):
                self._state[bucket.key] = (level, now, (bucket.burst - level) / bucket.rate_per_s)
            if len(self._state) > self._max_buckets:
                self._evict_stale(now)
        return _decide(buckets, levels, allowed)

    def _evict_stale(self, now: float) -> None:
        # A bucket untouched for its whole refill time is full again: forgetting
        # it changes nothing (Redis does the same with PEXPIRE).
        for key in [k for k, (_, at, full) in self._state.items() if now - at >= full]:
            del self._state[key]

    def close(self) -> None:
        pass


# KEYS: bucket keys. ARGV: burst_1, rate_per_s_1, burst_2, rate_per_s_2, ...
# Returns {allowed, level_1, level_2, ...} with levels as strings (Lua numbers
# become integers on the way out otherwise).
_TAKE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local levels = {}
local allowed = 1
for i, key in ipairs(KEYS) do
    local burst = tonumber(ARGV[2 * i - 1])
    local rate = tonumber(ARGV[2 * i])
    local state = redis.call('HMGET', key, 'tokens', 'at')
    local tokens = tonumber(state[1])
    local at = tonumber(state[2])
    if tokens == nil or at == nil then
        tokens = burst
        at = now
    end
    local level = math.min(burst, tokens + math.max(0, now - at) * rate)
    if level < 1 then allowed = 0 end
    levels[i] = level
end
local out = {allowed}
for i, key in ipairs(KEYS) do
    local burst = tonumber(ARGV[2 * i - 1])
    local rate = tonumber(ARGV[2 * i])
    local level = levels[i]
    if allowed == 1 then level = level - 1 end
    redis.call('HSET', key, 'tokens', tostring(level), 'at', tostring(now))
    redis.call('PEXPIRE', key, math.ceil((burst - level) / rate * 1000) + 1000)
    out[i + 1] = tostring(level)
end
return out
"""


class RedisRateLimiter:
    """Buckets in Redis, shared by every API process that uses the same Redis."""

    kind = "redis"
    blocking = True

    def __init__(self, url: str, prefix: str = "kf:rl:") -> None:
        import redis

        self._client: Any = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._client.ping()
        self._script = self._client.register_script(_TAKE_SCRIPT)
        self._prefix = prefix

    def acquire(self, buckets: Sequence[Bucket]) -> Decision:
        args: list[float | int] = []
        for bucket in buckets:
            args.extend([bucket.burst, bucket.rate_per_s])
        result = self._script(keys=[self._prefix + b.key for b in buckets], args=args)
        allowed = int(result[0]) == 1
        levels = [float(v) for v in result[1:]]
        return _decide(buckets, levels, allowed)

    def close(self) -> None:
        self._client.close()

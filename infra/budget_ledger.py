"""Budget counters: what each budget's period has used and holds for requests in flight.

A question first *holds* its largest possible use (an upper bound of its tokens,
and their cost) on every budget it counts against, in one atomic step that refuses
if any hard budget would be crossed: with ``used + reserved + estimate <= limit``
checked and the reservation taken together, concurrent questions can never
overspend a hard budget by more than their estimates exceed their real use. When
the answer is recorded, its hold is *settled* at what it really used (and remembered
with its event position); a failed question *releases* it; a hold neither settled
nor released lapses after its time to live, so a process that died mid-question
does not keep budget from everyone else.

The read model is the record: *reconciling* a counter sets its use to the read
model's figure up to a position plus what was settled here after that position,
and reports the drift. Amounts are integers: tokens, or cost in nano-dollars
(billionths of a dollar, rounded up), so Redis's Lua numbers stay exact.

``InProcessBudgetLedger`` keeps counters behind a lock (the one API process of
``kf serve``); ``RedisBudgetLedger`` keeps them in Redis, shared by every API
process, each step one Lua script.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from typing import Any, Protocol

NANO = Decimal("0.000000001")


def units(metric: str, amount: Decimal) -> int:
    """A budget amount as the ledger's integer: tokens, or nano-dollars rounded up."""
    if metric == "cost_usd":
        return int((amount / NANO).to_integral_value(rounding=ROUND_CEILING))
    return int(amount.to_integral_value(rounding=ROUND_CEILING))


def amount(metric: str, value: int) -> Decimal:
    return Decimal(value) * NANO if metric == "cost_usd" else Decimal(value)


@dataclass(frozen=True)
class Charge:
    """One budget counter a request counts against, and its largest possible use there."""

    counter: str  # which budget and which of its periods
    limit: int
    estimate: int
    hard: bool


@dataclass(frozen=True)
class Refused:
    charge: Charge
    used: int
    reserved: int


@dataclass
class _Counter:
    used: int
    holds: dict[str, tuple[int, float]] = field(default_factory=dict)  # id -> (amount, until)
    settled: list[tuple[int, int]] = field(default_factory=list)  # (position, amount)

    def reserved(self, now: float) -> int:
        self.holds = {h: (a, until) for h, (a, until) in self.holds.items() if until > now}
        return sum(a for a, _ in self.holds.values())


class BudgetLedger(Protocol):
    def reserve(
        self, hold: str, charges: Sequence[Charge], seed: Callable[[str], int], ttl_s: float
    ) -> Refused | None:
        """Reserve every charge's estimate under the id ``hold``, or none (the first hard
        charge that would cross its limit). ``seed`` gives a counter not yet kept its use
        so far. A hold neither settled nor released within ``ttl_s`` lapses (a process
        that died mid-question does not keep its budget)."""
        ...

    def settle(
        self, hold: str, charges: Sequence[Charge], used: Sequence[int], position: int
    ) -> list[int]:
        """Replace the hold by what was used (the answer at ``position``); each counter's
        use after."""
        ...

    def release(self, hold: str, charges: Sequence[Charge]) -> None: ...

    def reconcile(self, counter: str, figure: int, through: int) -> int:
        """Set the use to ``figure`` (the read model's, up to ``through``) plus what was
        settled after ``through``; returns the drift (the use before minus after)."""
        ...

    def counters(self) -> list[str]: ...

    def close(self) -> None: ...


class InProcessBudgetLedger:
    def __init__(self) -> None:
        self._counters: dict[str, _Counter] = {}
        self._lock = threading.Lock()

    def _counter(self, name: str, seed: Callable[[str], int]) -> _Counter:
        if name not in self._counters:
            self._counters[name] = _Counter(used=seed(name))
        return self._counters[name]

    def reserve(
        self, hold: str, charges: Sequence[Charge], seed: Callable[[str], int], ttl_s: float
    ) -> Refused | None:
        # Seeds read the database: outside the lock, then taken only if still absent.
        fresh = {c.counter: seed(c.counter) for c in charges if c.counter not in self._counters}
        now = time.time()
        with self._lock:
            counters = [self._counter(c.counter, lambda name: fresh[name]) for c in charges]
            for charge, counter in zip(charges, counters, strict=True):
                reserved = counter.reserved(now)
                if charge.hard and counter.used + reserved + charge.estimate > charge.limit:
                    return Refused(charge, counter.used, reserved)
            for charge, counter in zip(charges, counters, strict=True):
                counter.holds[hold] = (charge.estimate, now + ttl_s)
        return None

    def settle(
        self, hold: str, charges: Sequence[Charge], used: Sequence[int], position: int
    ) -> list[int]:
        after = []
        with self._lock:
            for charge, spent in zip(charges, used, strict=True):
                counter = self._counters[charge.counter]
                counter.holds.pop(hold, None)
                counter.used += spent
                counter.settled.append((position, spent))
                after.append(counter.used)
        return after

    def release(self, hold: str, charges: Sequence[Charge]) -> None:
        with self._lock:
            for charge in charges:
                self._counters[charge.counter].holds.pop(hold, None)

    def reconcile(self, counter: str, figure: int, through: int) -> int:
        with self._lock:
            kept = self._counters.get(counter)
            if kept is None:
                return 0
            kept.settled = [(p, a) for p, a in kept.settled if p > through]
            before = kept.used
            kept.used = figure + sum(a for _, a in kept.settled)
            return before - kept.used

    def counters(self) -> list[str]:
        with self._lock:
            return list(self._counters)

    def close(self) -> None:
        pass


# KEYS: the counters' hashes, then their holds (hold id -> "amount:until"). ARGV: now,
# hold id, until, n, then per charge: limit, estimate, hard (1/0).
_RESERVE = """
local now = tonumber(ARGV[1])
local n = tonumber(ARGV[4])
local reserved = {}
for i = 1, n do
  local total = 0
  local holds = redis.call('HGETALL', KEYS[n + i])
  for j = 1, #holds, 2 do
    local amount, till = string.match(holds[j + 1], '^(-?%d+):(.+)$')
    if tonumber(till) <= now then
      redis.call('HDEL', KEYS[n + i], holds[j])
    else
      total = total + tonumber(amount)
    end
  end
  reserved[i] = total
end
for i = 1, n do
  local base = 4 + (i - 1) * 3
  local limit = tonumber(ARGV[base + 1])
  local estimate = tonumber(ARGV[base + 2])
  local hard = ARGV[base + 3] == '1'
  local used = tonumber(redis.call('HGET', KEYS[i], 'used') or '0')
  if hard and used + reserved[i] + estimate > limit then
    return {i, tostring(used), tostring(reserved[i])}
  end
end
for i = 1, n do
  local base = 4 + (i - 1) * 3
  redis.call('HSET', KEYS[n + i], ARGV[2], ARGV[base + 2] .. ':' .. ARGV[3])
  redis.call('EXPIRE', KEYS[i], 3024000)
  redis.call('EXPIRE', KEYS[n + i], 3024000)
end
return {0}
"""

# KEYS: the counters' hashes, their holds, their settled sets. ARGV: hold id,
# position, then per charge: used.
_SETTLE = """
local n = #KEYS / 3
local after = {}
for i = 1, n do
  local spent = tonumber(ARGV[2 + i])
  redis.call('HDEL', KEYS[n + i], ARGV[1])
  after[i] = tostring(redis.call('HINCRBY', KEYS[i], 'used', spent))
  redis.call('ZADD', KEYS[2 * n + i], ARGV[2], ARGV[2] .. ':' .. spent)
  redis.call('EXPIRE', KEYS[2 * n + i], 3024000)
end
return after
"""

# KEYS: the counter's hash, its settled set. ARGV: figure, through.
_RECONCILE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return '0' end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[2])
local later = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  later = later + tonumber(string.match(member, ':(-?%d+)$'))
end
local before = tonumber(redis.call('HGET', KEYS[1], 'used') or '0')
local now = tonumber(ARGV[1]) + later
redis.call('HSET', KEYS[1], 'used', now)
return tostring(before - now)
"""


class RedisBudgetLedger:
    def __init__(self, url: str, prefix: str = "kf:budget:") -> None:
        import redis

        self._redis: Any = redis.Redis.from_url(url)
        self._prefix = prefix
        self._reserve = self._redis.register_script(_RESERVE)
        self._settle = self._redis.register_script(_SETTLE)
        self._reconcile = self._redis.register_script(_RECONCILE)

    def _key(self, counter: str) -> str:
        return self._prefix + counter

    def reserve(
        self, hold: str, charges: Sequence[Charge], seed: Callable[[str], int], ttl_s: float
    ) -> Refused | None:
        for charge in charges:
            key = self._key(charge.counter)
            if not self._redis.exists(key):
                self._redis.hsetnx(key, "used", seed(charge.counter))
        now = time.time()
        args: list[Any] = [repr(now), hold, repr(now + ttl_s), len(charges)]
        for charge in charges:
            args += [charge.limit, charge.estimate, 1 if charge.hard else 0]
        keys = [self._key(c.counter) for c in charges]
        result = self._reserve(keys=[*keys, *(k + ":holds" for k in keys)], args=args)
        failed = int(result[0])
        if failed == 0:
            return None
        return Refused(charges[failed - 1], int(result[1]), int(result[2]))

    def settle(
        self, hold: str, charges: Sequence[Charge], used: Sequence[int], position: int
    ) -> list[int]:
        keys = [self._key(c.counter) for c in charges]
        keys = [*keys, *(k + ":holds" for k in keys), *(k + ":settled" for k in keys)]
        return [int(v) for v in self._settle(keys=keys, args=[hold, position, *used])]

    def release(self, hold: str, charges: Sequence[Charge]) -> None:
        pipe = self._redis.pipeline()
        for charge in charges:
            pipe.hdel(self._key(charge.counter) + ":holds", hold)
        pipe.execute()

    def reconcile(self, counter: str, figure: int, through: int) -> int:
        key = self._key(counter)
        return int(self._reconcile(keys=[key, key + ":settled"], args=[figure, through]))

    def counters(self) -> list[str]:
        found = self._redis.scan_iter(match=self._prefix + "*", count=1000)
        names = (k.decode() if isinstance(k, bytes) else str(k) for k in found)
        return [n[len(self._prefix) :] for n in names if not n.endswith((":settled", ":holds"))]

    def close(self) -> None:
        self._redis.close()

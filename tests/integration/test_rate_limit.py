"""Token-bucket rate limits: one behaviour in-process and in a real Redis, shared by processes."""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator

import pytest

from infra.ratelimit import Bucket, InProcessRateLimiter, RateLimiter, RedisRateLimiter


@pytest.fixture(params=["in-process", "redis"])
def limiter(request: pytest.FixtureRequest) -> Iterator[RateLimiter]:
    made: RateLimiter
    if request.param == "redis":
        made = RedisRateLimiter(
            request.getfixturevalue("redis_url"), prefix=f"kft:{uuid.uuid4().hex}:"
        )
    else:
        made = InProcessRateLimiter()
    yield made
    made.close()


def _bucket(name: str, burst: int, per_hour: int = 1) -> Bucket:
    return Bucket(f"{name}:{uuid.uuid4().hex}", burst, per_hour)


def test_the_burst_is_allowed_and_the_next_request_is_refused(limiter: RateLimiter) -> None:
    bucket = _bucket("key", 5)
    decisions = [limiter.acquire([bucket]) for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0]
    refused = decisions[-1]
    headers = refused.headers()
    assert headers["RateLimit-Limit"] == "5"
    assert headers["RateLimit-Remaining"] == "0"
    # One token per hour: the next one is about an hour away, the bucket full in five.
    assert 3500 <= int(headers["Retry-After"]) <= 3600
    assert 5 * 3600 - 10 <= int(headers["RateLimit-Reset"]) <= 5 * 3600
    assert "Retry-After" not in decisions[0].headers()


def test_tokens_refill_at_the_configured_rate(limiter: RateLimiter) -> None:
    bucket = _bucket("key", 1, per_hour=3600 * 20)  # one token every 50 ms
    assert limiter.acquire([bucket]).allowed
    assert not limiter.acquire([bucket]).allowed
    threading.Event().wait(0.12)
    assert limiter.acquire([bucket]).allowed


def test_all_buckets_or_none_are_charged(limiter: RateLimiter) -> None:
    key_a, key_b, tenant = _bucket("key", 10), _bucket("key", 10), _bucket("tenant", 3)
    assert all(limiter.acquire([key_a, tenant]).allowed for _ in range(2))
    assert limiter.acquire([key_b, tenant]).allowed
    refused = limiter.acquire([key_b, tenant])
    assert not refused.allowed and refused.bucket == tenant.key and refused.limit == 3
    # key_b was not charged for the refused request: 9 left, not 8.
    other_tenant = _bucket("tenant", 100)
    assert limiter.acquire([key_b, other_tenant]).remaining == 8


def test_concurrent_requests_never_overspend(limiter: RateLimiter) -> None:
    bucket = _bucket("key", 50)
    allowed: list[bool] = []
    lock = threading.Lock()

    def hammer() -> None:
        for _ in range(20):
            decision = limiter.acquire([bucket])
            with lock:
                allowed.append(decision.allowed)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(allowed) == 50 and len(allowed) == 160


def test_two_processes_share_one_limit_through_redis(redis_url: str) -> None:
    prefix = f"kft:{uuid.uuid4().hex}:"
    bucket = Bucket("key:shared", 5, 1)
    script = (
        "from infra.ratelimit import Bucket, RedisRateLimiter\n"
        f"limiter = RedisRateLimiter({redis_url!r}, prefix={prefix!r})\n"
        "print([limiter.acquire([Bucket('key:shared', 5, 1)]).allowed for _ in range(3)])\n"
    )
    other = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert other.stdout.strip() == "[True, True, True]"
    here = RedisRateLimiter(redis_url, prefix=prefix)
    try:
        decisions = [here.acquire([bucket]) for _ in range(3)]
    finally:
        here.close()
    assert [d.allowed for d in decisions] == [True, True, False]
    assert decisions[0].remaining == 1

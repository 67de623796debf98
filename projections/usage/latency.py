"""Latency histograms: answers counted per bucket, percentiles read back to within 2.5%.

Bucket 0 holds latencies under 1 ms; bucket i >= 1 holds [R^(i-1), R^i) ms with
R = 1.05, up to the last bucket, which holds everything from about 17 minutes on.
A percentile is the nearest-rank one (the k-th smallest latency, k = ceil(q * n)),
reported as the geometric middle of its bucket: within 2.5% of that latency.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

RATIO = 1.05
BUCKETS = 286  # R^284 ms is about 17 minutes


def bucket(latency_ms: float) -> int:
    if latency_ms < 1:
        return 0
    return min(BUCKETS - 1, 1 + int(math.log(latency_ms) / math.log(RATIO)))


def bucket_value(index: int) -> float:
    """The geometric middle of a bucket (bucket 0: half a millisecond)."""
    if index == 0:
        return 0.5
    return math.sqrt(RATIO ** (index - 1) * RATIO**index)


def histogram(latencies: Sequence[float]) -> list[int]:
    counts = [0] * BUCKETS
    for latency in latencies:
        counts[bucket(latency)] += 1
    return counts


def quantile(counts: Sequence[int], q: float) -> float | None:
    """The nearest-rank ``q`` quantile of what ``counts`` holds (None: nothing)."""
    total = sum(counts)
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for index, count in enumerate(counts):
        seen += count
        if seen >= rank:
            return round(bucket_value(index), 2)
    return None  # pragma: no cover - seen reaches total


def add(into: list[int], counts: Sequence[int] | None) -> None:
    if counts:
        for index, count in enumerate(counts):
            into[index] += count

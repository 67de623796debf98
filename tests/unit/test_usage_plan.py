"""Which parts a usage window is read from: whole days from the rollups, the rest from
the facts, some of them taken back; signed, they cover the window exactly once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

from hypothesis import given
from hypothesis import strategies as st

from projections.usage.view import Window, _plan

DAY = datetime(2026, 11, 10, tzinfo=UTC)
H = timedelta(hours=1)


def _covered(parts: list[tuple[str, datetime, datetime, int]], at: datetime) -> int:
    """How many times the parts count the instant ``at`` (signed)."""
    return sum(sign for _, start, end, sign in parts if start <= at < end)


@given(
    start=st.integers(0, 10 * 24 * 60),  # minutes after DAY
    length=st.integers(1, 10 * 24 * 60),
    now=st.integers(-24 * 60, 30 * 24 * 60),
)
def test_the_parts_count_every_instant_of_the_window_once_and_no_other(
    start: int, length: int, now: int
) -> None:
    window = Window(DAY + timedelta(minutes=start), DAY + timedelta(minutes=start + length))
    parts = _plan(window, DAY + timedelta(minutes=now))
    assert all(start < end for _, start, end, _ in parts)
    edges = {window.start, window.end} | {t for _, a, b, _ in parts for t in (a, b)}
    for edge in edges:  # the count changes only at these: check on and around each
        for at in (edge - timedelta(microseconds=1), edge):
            assert _covered(parts, at) == (1 if window.start <= at < window.end else 0), at


def test_a_window_ending_now_reads_today_whole_from_the_rollup() -> None:
    now = DAY + 15 * H
    parts = _plan(Window(now - timedelta(days=30), now), now)
    # Its first day from 15:00 on is 9 hours of facts; its last, the rollup's whole day
    # less the facts after now (there are none yet).
    assert parts == [
        ("daily", DAY - timedelta(days=29), DAY + timedelta(days=1), 1),
        ("facts", now - timedelta(days=30), DAY - timedelta(days=29), 1),
        ("facts", now, DAY + timedelta(days=1), -1),
    ]


def test_a_day_that_is_mostly_in_the_window_is_read_whole_less_what_is_not() -> None:
    window = Window(DAY + 2 * H, DAY + timedelta(days=3, hours=1))
    parts = _plan(window, DAY + timedelta(days=30))
    assert parts == [
        ("daily", DAY, DAY + timedelta(days=3), 1),
        ("facts", DAY, DAY + 2 * H, -1),
        ("facts", DAY + timedelta(days=3), DAY + timedelta(days=3, hours=1), 1),
    ]


def test_a_short_window_and_a_repricing_window_are_read_from_the_facts() -> None:
    later = DAY + timedelta(days=30)
    short = Window(DAY + 2 * H, DAY + 5 * H)
    assert _plan(short, later) == [("facts", short.start, short.end, 1)]
    month = Window(DAY, DAY + timedelta(days=30), repricing=uuid4())
    assert _plan(month, later) == [("facts", month.start, month.end, 1)]

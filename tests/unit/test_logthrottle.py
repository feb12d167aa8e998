"""Provokable log lines: one per key per interval, with the count held back."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etherws.logthrottle import Throttle


def test_one_line_per_source_per_minute_then_the_count_held_back() -> None:
    th = Throttle(interval_s=60.0)
    assert th.report("198.51.100.7", 0.0) == 0
    assert th.report("198.51.100.7", 1.0) is None
    assert th.report("198.51.100.7", 59.9) is None
    assert th.report("203.0.113.9", 2.0) == 0  # another source has its own minute
    assert th.report("198.51.100.7", 60.0) == 2
    assert th.report("198.51.100.7", 61.0) is None
    assert th.report("198.51.100.7", 200.0) == 1


def test_a_rare_source_is_always_reported_with_nothing_held_back() -> None:
    th = Throttle(interval_s=10.0)
    assert [th.report("a", t * 10.0) for t in range(5)] == [0] * 5


def test_memory_is_bounded_and_the_oldest_is_forgotten() -> None:
    th = Throttle(interval_s=60.0, max_keys=3)
    for i, key in enumerate("abcd"):
        assert th.report(key, float(i)) == 0
    assert len(th) == 3
    assert th.report("a", 5.0) == 0  # forgotten, so reported again at once
    assert th.report("d", 5.0) is None


@pytest.mark.parametrize("interval_s, max_keys", [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_bad_settings_are_refused(interval_s: float, max_keys: int) -> None:
    with pytest.raises(ValueError):
        Throttle(interval_s, max_keys)


@given(st.lists(st.tuples(st.sampled_from("abc"), st.floats(0, 1000)), max_size=60))
def test_lines_are_an_interval_apart_and_every_event_is_accounted_for(
        events: list[tuple[str, float]]) -> None:
    th = Throttle(interval_s=30.0)
    lines: dict[str, list[float]] = {}
    accounted: dict[str, int] = {}
    for key, now in sorted(events, key=lambda e: e[1]):
        held = th.report(key, now)
        if held is not None:
            lines.setdefault(key, []).append(now)
            accounted[key] = accounted.get(key, 0) + 1 + held
    for key, times in lines.items():
        assert all(b - a >= 30.0 for a, b in itertools.pairwise(times))
    # every event but those held back after the last line shows up in some line
    for key in lines:
        total = sum(1 for k, _ in events if k == key)
        assert accounted[key] <= total
        assert total - accounted[key] == th._last[key][1]

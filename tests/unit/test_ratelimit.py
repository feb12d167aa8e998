"""Failed logins per source: a sliding window, bounded memory."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etherws.ratelimit import FailureLimiter


def test_the_sixth_attempt_within_a_minute_waits() -> None:
    lim = FailureLimiter(limit=5, window_s=60.0)
    for t in range(5):
        assert not lim.blocked("198.51.100.7", float(t))
        lim.failed("198.51.100.7", float(t))
    assert lim.blocked("198.51.100.7", 5.0)
    assert lim.retry_after("198.51.100.7", 5.0) == pytest.approx(55.0)
    assert not lim.blocked("203.0.113.9", 5.0)  # others are not affected
    assert lim.blocked("198.51.100.7", 59.9)
    assert not lim.blocked("198.51.100.7", 60.0)  # the first failure left the window


def test_failures_spread_out_never_block() -> None:
    lim = FailureLimiter(limit=5, window_s=60.0)
    for i in range(100):
        assert not lim.blocked("a", i * 13.0)
        lim.failed("a", i * 13.0)  # at most 5 in any 60 s window: never the 6th
    assert len(lim) == 1


def test_memory_is_bounded_by_forgetting_the_least_recent() -> None:
    lim = FailureLimiter(limit=1, window_s=60.0, max_keys=3)
    for i, key in enumerate("abcd"):
        lim.failed(key, float(i))
    assert len(lim) == 3
    assert not lim.blocked("a", 4.0) and lim.blocked("d", 4.0)


@pytest.mark.parametrize("kwargs", [{"limit": 0}, {"window_s": 0}, {"max_keys": 0}])
def test_nonsense_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        FailureLimiter(**kwargs)  # type: ignore[arg-type]


@given(st.lists(st.floats(min_value=0, max_value=1000), max_size=50))
def test_blocked_means_limit_failures_in_the_window(times: list[float]) -> None:
    lim = FailureLimiter(limit=3, window_s=10.0)
    seen: list[float] = []
    for t in sorted(times):
        blocked = lim.blocked("k", t)
        recent = [s for s in seen if s > t - 10.0]
        assert blocked == (len(recent) >= 3)
        if not blocked:
            lim.failed("k", t)
            seen.append(t)

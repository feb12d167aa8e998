"""The client's reconnect policy, driven by a fake clock and fixed jitter."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etherws.backoff import Backoff, BackoffPolicy
from tests.unit.test_purity import violations


def test_backoff_is_pure() -> None:
    assert violations("etherws.backoff") == []


@pytest.mark.parametrize("jitter, delays", [
    (0.0, [0, 1, 2, 4, 8, 16, 32, 60, 60, 60]),
    (1.0, [0, 1.2, 2.4, 4.8, 9.6, 19.2, 38.4, 72, 72, 72]),
    (-1.0, [0, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 48, 48, 48]),
])
def test_failures_in_a_row_double_up_to_the_cap(jitter: float, delays: list[float]) -> None:
    b, now, got = Backoff(), 1000.0, []
    for _ in delays:
        nxt = b.failed(now, jitter)
        got.append(round(nxt - now, 6))
        now = nxt
    assert got == delays


@pytest.mark.parametrize("up_for_s, next_delay", [
    (0.0, 4.0),      # dropped at once: the sequence goes on (0, 1, 2, then 4)
    (0.9, 4.0),      # not yet healthy
    (1.0, 0.0),      # healthy: the next retry is at once again
    (3600.0, 0.0),
])
def test_a_healthy_connection_resets_the_sequence(up_for_s: float, next_delay: float) -> None:
    b, now = Backoff(), 0.0
    for _ in range(3):
        now = b.failed(now, 0.0)
    b.connected(now)
    assert b.failed(now + up_for_s, 0.0) - (now + up_for_s) == pytest.approx(next_delay)


def test_healthy_reports_and_resets_while_up() -> None:
    b = Backoff()
    for t in range(5):
        b.failed(float(t), 0.5)
    assert b.failures == 5
    assert not b.healthy(10.0)  # not connected at all
    b.connected(10.0)
    assert not b.healthy(10.9) and b.failures == 5
    assert b.healthy(11.0) and b.failures == 0
    assert b.failed(80.0, 1.0) == 80.0  # first retry at once, jitter or not


def test_a_failed_attempt_is_not_a_connection() -> None:
    b = Backoff()
    b.connected(0.0)
    b.failed(100.0, 0.0)  # healthy, reset, then this drop: at once
    assert b.up_since is None
    assert b.failed(100.0, 0.0) == 101.0  # a failed reconnect does not count as up


@pytest.mark.parametrize("jitter", [-1.01, 1.01, float("nan")])
def test_jitter_outside_the_range_is_refused(jitter: float) -> None:
    with pytest.raises(ValueError):
        Backoff().failed(0.0, jitter)


@pytest.mark.parametrize("kw", [{"first_s": 0}, {"first_s": 2, "cap_s": 1}, {"jitter": 1.0},
                                {"jitter": -0.1}, {"healthy_s": -1}])
def test_inconsistent_policies_are_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BackoffPolicy(**kw)


def test_delay_counts_failures_from_one() -> None:
    with pytest.raises(ValueError):
        BackoffPolicy().delay_s(0, 0.0)


@given(failures=st.integers(1, 10_000), jitter=st.floats(-1, 1))
def test_delays_stay_within_the_bounds(failures: int, jitter: float) -> None:
    d = BackoffPolicy().delay_s(failures, jitter)
    if failures == 1:
        assert d == 0
    else:
        assert 0.8 <= d <= 72.0
        assert d <= 1.2 * 2 ** min(failures - 2, 10) + 1e-9


@given(jitters=st.lists(st.floats(-1, 1), min_size=1, max_size=40),
       start=st.floats(0, 1e9))
def test_next_attempt_is_never_in_the_past_and_never_over_72s(jitters: list[float],
                                                              start: float) -> None:
    b, now = Backoff(), start
    for j in jitters:
        nxt = b.failed(now, j)
        assert now <= nxt <= now + 72.0
        now = nxt

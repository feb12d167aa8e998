"""etherws.ratelimit.TokenBucket with a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etherws.ratelimit import TokenBucket


def test_a_new_bucket_is_full_and_then_refills_at_its_rate() -> None:
    b = TokenBucket(rate=10, burst=5, now=0.0)
    assert [b.take(1, 0.0) for _ in range(6)] == [True] * 5 + [False]
    assert not b.take(1, 0.05)      # half a token
    assert b.take(1, 0.1)           # one token
    assert not b.take(1, 0.1)
    assert b.take(5, 100.0)         # never more than the burst
    assert not b.take(1, 100.0)


def test_a_take_larger_than_held_spends_nothing() -> None:
    b = TokenBucket(rate=1000, burst=1500, now=0.0)
    assert b.take(1000, 0.0)
    assert not b.take(1000, 0.0)
    assert b.take(500, 0.0)         # the small one still fits


def test_a_clock_going_back_adds_nothing() -> None:
    b = TokenBucket(rate=1, burst=1, now=10.0)
    assert b.take(1, 10.0)
    assert not b.take(1, 5.0)
    assert not b.take(1, 10.5)
    assert b.take(1, 11.0)


@pytest.mark.parametrize("rate, burst", [(0, 1), (1, 0), (-1, 1)])
def test_bad_buckets(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst, 0.0)


@given(st.floats(1, 1e6), st.floats(1, 1e4),
       st.lists(st.tuples(st.floats(0, 0.5), st.floats(0.1, 100)), max_size=100))
def test_never_more_than_burst_plus_rate_times_time(rate: float, burst: float,
                                                   steps: list[tuple[float, float]]) -> None:
    b = TokenBucket(rate, burst, 0.0)
    now = spent = 0.0
    for dt, n in steps:
        now += dt
        if b.take(n, now):
            spent += n
        assert 0 <= b.tokens <= burst
    assert spent <= burst + rate * now + 1e-6 * (1 + spent)

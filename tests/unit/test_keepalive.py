"""The tunnel keepalive timer, with a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etherws.keepalive import Keepalive, Verdict
from tests.unit.test_purity import violations

W, P, D = Verdict.WAIT, Verdict.PING, Verdict.DEAD


def test_keepalive_is_pure() -> None:
    assert violations("etherws.keepalive") == []


@pytest.mark.parametrize("events, verdicts", [
    # (time, heard?) -> verdict of check(time) after applying heard
    ([(5, False), (19.9, False), (20, False), (39.9, False), (40, False)], [W, W, P, W, D]),
    ([(20, False), (25, True), (44, False), (45, False)], [P, W, W, P]),
    ([(10, True), (29.9, False), (30, False), (31, True), (50, False), (51, False)],
     [W, W, P, W, W, P]),
])
def test_ping_after_silence_then_dead_after_timeout(events: list[tuple[float, bool]],
                                                    verdicts: list[Verdict]) -> None:
    k = Keepalive(0.0)
    got = []
    for t, heard in events:
        if heard:
            k.heard(t)
        got.append(k.check(t))
    assert got == verdicts


def test_one_ping_per_silence() -> None:
    k = Keepalive(0.0, interval_s=1, timeout_s=5)
    assert [k.check(t) for t in (1, 2, 3, 5.9, 6)] == [P, W, W, W, D]


@pytest.mark.parametrize("interval, timeout", [(0, 1), (1, 0), (-1, 1)])
def test_nonpositive_settings_are_refused(interval: float, timeout: float) -> None:
    with pytest.raises(ValueError):
        Keepalive(0.0, interval, timeout)


@given(times=st.lists(st.floats(0, 1e6), min_size=1, max_size=50),
       interval=st.floats(0.01, 100), timeout=st.floats(0.01, 100))
def test_never_dead_before_interval_plus_timeout_of_silence(
        times: list[float], interval: float, timeout: float) -> None:
    k = Keepalive(0.0, interval, timeout)
    for t in sorted(times):
        if k.check(t) is Verdict.DEAD:
            assert t - k.last_heard >= interval + timeout - 1e-6

"""MAC move protection: a station moves only once its old port has not seen it for the
hold-down, or once the old port is gone; held frames are dropped and counted."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etherws.broker.fdb import TOUCH_INTERVAL_S, Fdb, LearnResult
from etherws.broker.forwarding import Forwarder
from etherws.tables import FdbTable
from tests.unit.broker.test_forwarding import BCAST, eth

GW = bytes.fromhex("020000000001")
OTHER = bytes.fromhex("020000000002")
HOLD = 2.0


def fdb(hold: float = HOLD, ageout_s: float = 300.0) -> Fdb:
    return Fdb(FdbTable.format(bytearray(FdbTable.size(16)), 16), ageout_s, 1024, hold)


def test_a_move_within_the_hold_down_is_held_and_counted() -> None:
    f = fdb()
    assert f.learn(0, GW, 1, 10.0) is LearnResult.LEARNED
    assert f.learn(0, GW, 2, 11.9) is LearnResult.HELD
    assert f.lookup(0, GW, 12.0) == 1  # it stays where it was
    assert f.table.held_moves == 1


def test_after_the_hold_down_of_silence_it_moves() -> None:
    f = fdb()
    f.learn(0, GW, 1, 10.0)
    assert f.learn(0, GW, 2, 12.0) is LearnResult.MOVED  # silent on port 1 for 2 s
    assert f.lookup(0, GW, 12.0) == 2 and f.table.held_moves == 0


def test_a_station_that_keeps_talking_keeps_its_port() -> None:
    f = fdb()
    now = 0.0
    f.learn(0, GW, 1, now)
    for _ in range(20):  # the gateway talks every half second, a thief every tenth
        now += 0.5
        f.learn(0, GW, 1, now)
        for k in range(5):
            assert f.learn(0, GW, 2, now + k * 0.1) is LearnResult.HELD
    assert f.lookup(0, GW, now) == 1
    assert f.table.held_moves == 100


def test_the_hold_down_counts_from_the_last_refresh_written() -> None:
    # Last-seen times are written once a TOUCH_INTERVAL_S: the hold may run that long.
    f = fdb()
    f.learn(0, GW, 1, 0.0)
    f.learn(0, GW, 1, TOUCH_INTERVAL_S * 0.5)  # not written
    assert f.learn(0, GW, 2, HOLD) is LearnResult.MOVED


def test_when_the_old_port_goes_the_station_moves_at_once() -> None:
    f = fdb()
    f.learn(0, GW, 1, 10.0)
    f.retain_ports({2})  # port 1 was deleted
    assert f.learn(0, GW, 2, 10.1) is LearnResult.LEARNED


def test_an_aged_entry_moves_at_once() -> None:
    f = fdb(hold=5.0, ageout_s=1.0)
    f.learn(0, GW, 1, 10.0)
    assert f.learn(0, GW, 2, 11.0) is LearnResult.MOVED


def test_vlans_hold_separately() -> None:
    f = fdb()
    f.learn(10, GW, 1, 0.0)
    assert f.learn(20, GW, 2, 0.1) is LearnResult.LEARNED


def test_zero_turns_it_off_and_a_negative_hold_is_refused() -> None:
    f = fdb(hold=0.0)
    f.learn(0, GW, 1, 0.0)
    assert f.learn(0, GW, 2, 0.0) is LearnResult.MOVED
    with pytest.raises(ValueError):
        fdb(hold=-1.0)


@pytest.mark.parametrize("port_security", [True, False])
def test_held_frames_are_dropped_whatever_the_port_security(port_security: bool) -> None:
    fw = Forwarder(fdb(), port_security)
    fw.set_ports({1: False, 2: False, 3: False})
    fw.forward(1, [eth(BCAST, GW)], 0.0)
    r = fw.forward(2, [eth(BCAST, GW), eth(OTHER, GW), eth(BCAST, OTHER)], 0.5)
    assert r.secured == 2  # the thief's two frames
    assert {p: len(fs) for p, fs in r.egress.items()} == {1: 1, 3: 1}  # OTHER's broadcast
    assert fw.fdb.lookup(0, GW, 0.5) == 1


def test_a_looped_broadcast_does_not_drag_its_source_away() -> None:
    # Two ports that lead to the same place: the copy of a broadcast that comes back on
    # port 3 carries a source the switch just learned on port 1.
    fw = Forwarder(fdb(), True)
    fw.set_ports({1: False, 2: False, 3: False})
    first = fw.forward(1, [eth(BCAST, GW)], 0.0)
    assert set(first.egress) == {2, 3}
    back = fw.forward(3, [eth(BCAST, GW)], 0.001)
    assert back.egress == {} and back.secured == 1
    assert fw.fdb.lookup(0, GW, 0.001) == 1


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3), st.floats(0, 0.8)), min_size=1, max_size=60))
def test_a_station_moves_only_after_the_hold_down(steps: list[tuple[int, float]]) -> None:
    f = fdb()
    now, port, written = 0.0, None, 0.0  # where it is, when its time was last written
    for to, dt in steps:
        now += dt
        got = f.learn(0, GW, to, now)
        if port is None:
            assert got is LearnResult.LEARNED
            port, written = to, now
        elif to == port:
            if now - written >= TOUCH_INTERVAL_S:
                written = now
        elif now - written < HOLD:
            assert got is LearnResult.HELD
        else:
            assert got is LearnResult.MOVED
            port, written = to, now
        assert f.lookup(0, GW, now) == port

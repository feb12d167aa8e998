"""Forwarding decisions: cases and properties, with a fake clock and no sockets."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etherws.broker.fdb import Fdb
from etherws.broker.forwarding import Forwarder
from etherws.frame import MAX_FRAME
from etherws.tables import FdbTable

A = bytes.fromhex("020000000001")
B = bytes.fromhex("020000000002")
C = bytes.fromhex("020000000003")
BCAST = b"\xff" * 6
MCAST = bytes.fromhex("01005e000001")


def eth(dst: bytes, src: bytes, vid: int | None = None, payload: bytes = b"x") -> bytes:
    tag = b"" if vid is None else b"\x81\x00" + vid.to_bytes(2, "big")
    return dst + src + tag + b"\x88\xb5" + payload


def forwarder(ports: dict[int, bool] | None = None, capacity: int = 64,
              ageout_s: float = 300.0) -> Forwarder:
    t = FdbTable.format(bytearray(FdbTable.size(capacity)), capacity)
    fw = Forwarder(Fdb(t, ageout_s, move_hold_s=0.0))  # 802.1D alone
    fw.set_ports({1: False, 2: False, 3: False} if ports is None else ports)
    return fw


def out(fw: Forwarder, in_port: int, frames: list[bytes],
        now: float = 0.0) -> dict[int, list[bytes]]:
    return {p: list(fs) for p, fs in fw.forward(in_port, frames, now).egress.items()}


# --- flooding and unicast -----------------------------------------------------------------
@pytest.mark.parametrize("dst", [BCAST, MCAST, C])  # group, group, unknown unicast
def test_floods_to_every_other_port(dst: bytes) -> None:
    fw = forwarder()
    f = eth(dst, A)
    assert out(fw, 1, [f]) == {2: [f], 3: [f]}


def test_learned_unicast_goes_to_one_port_only() -> None:
    fw = forwarder()
    fw.forward(1, [eth(BCAST, A)], 0.0)
    reply = eth(A, B)
    assert out(fw, 2, [reply], 1.0) == {1: [reply]}
    again = eth(B, A)
    assert out(fw, 1, [again], 2.0) == {2: [again]}


def test_unicast_to_the_ingress_port_is_filtered() -> None:
    fw = forwarder()
    fw.forward(1, [eth(BCAST, A), eth(BCAST, B)], 0.0)
    r = fw.forward(1, [eth(A, B)], 1.0)
    assert (r.egress, r.filtered, r.malformed) == ({}, 1, 0)


def test_unicast_to_a_shut_port_is_dropped() -> None:
    fw = forwarder()
    fw.forward(2, [eth(BCAST, B)], 0.0)
    fw.set_ports({1: False, 2: True, 3: False})
    r = fw.forward(1, [eth(B, A)], 1.0)
    assert (r.egress, r.filtered) == ({}, 1)


def test_flood_skips_shut_ports() -> None:
    fw = forwarder({1: False, 2: True, 3: False, 4: False})
    f = eth(BCAST, A)
    assert out(fw, 1, [f]) == {3: [f], 4: [f]}


@pytest.mark.parametrize("ports", [{1: True, 2: False, 3: False}, {2: False, 3: False}])
def test_shut_or_unknown_ingress_drops_everything_and_learns_nothing(
        ports: dict[int, bool]) -> None:
    fw = forwarder(ports)
    frames = [eth(BCAST, A), eth(C, A), b"short"]
    r = fw.forward(1, frames, 0.0)
    assert (r.egress, r.filtered, r.malformed) == ({}, 3, 0)
    assert len(fw.fdb) == 0


def test_entry_of_a_deleted_port_floods_like_an_unknown() -> None:
    fw = forwarder({1: False, 2: False, 3: False, 4: False})
    fw.forward(4, [eth(BCAST, C)], 0.0)
    fw.set_ports({1: False, 2: False, 3: False})  # no retain_ports yet
    f = eth(C, A)
    assert out(fw, 1, [f], 1.0) == {2: [f], 3: [f]}


def test_aged_destination_floods() -> None:
    fw = forwarder(ageout_s=10.0)
    fw.forward(2, [eth(BCAST, B)], 0.0)
    f = eth(B, A)
    assert out(fw, 1, [f], 9.5) == {2: [f]}
    assert out(fw, 1, [f], 10.0) == {2: [f], 3: [f]}


def test_move_follows_the_station() -> None:
    fw = forwarder()
    fw.forward(2, [eth(BCAST, B)], 0.0)
    fw.forward(3, [eth(BCAST, B)], 1.0)  # B moved to port 3
    f = eth(B, A)
    assert out(fw, 1, [f], 2.0) == {3: [f]}


def test_vlans_are_separate() -> None:
    fw = forwarder()
    fw.forward(2, [eth(BCAST, B, vid=10)], 0.0)
    in_10, in_20 = eth(B, A, vid=10), eth(B, A, vid=20)
    assert out(fw, 1, [in_10, in_20], 1.0) == {2: [in_10, in_20], 3: [in_20]}


def test_group_source_is_not_learned_but_the_frame_still_forwards() -> None:
    fw = forwarder()
    f = eth(BCAST, MCAST)
    assert out(fw, 1, [f]) == {2: [f], 3: [f]}
    assert len(fw.fdb) == 0


# --- malformed frames ---------------------------------------------------------------------
@pytest.mark.parametrize("bad", [b"", b"\x00" * 13, b"\x00" * (MAX_FRAME + 1)])
def test_malformed_frames_are_counted_and_the_rest_forwarded(bad: bytes) -> None:
    fw = forwarder()
    good = eth(BCAST, A)
    r = fw.forward(1, [bad, good, bad], 0.0)
    assert (r.malformed, r.filtered) == (2, 0)
    assert {p: list(fs) for p, fs in r.egress.items()} == {2: [good], 3: [good]}


def test_shortest_frame_is_switched() -> None:
    fw = forwarder()
    f = BCAST + A + b"\x88\xb5"  # exactly 14 bytes
    assert out(fw, 1, [f]) == {2: [f], 3: [f]}


# --- batches --------------------------------------------------------------------------------
def test_a_batch_keeps_order_per_destination() -> None:
    fw = forwarder()
    fw.forward(2, [eth(BCAST, B)], 0.0)
    uni = [eth(B, A, payload=bytes([i])) for i in range(3)]
    flood = [eth(BCAST, A, payload=bytes([i])) for i in range(3)]
    frames = [uni[0], flood[0], uni[1], flood[1], uni[2], flood[2]]
    got = out(fw, 1, frames, 1.0)
    assert got == {2: uni + flood, 3: flood}


def test_no_ports_no_egress() -> None:
    fw = forwarder({1: False})
    r = fw.forward(1, [eth(BCAST, A)], 0.0)
    assert r.egress == {} and r.filtered == 0


def test_flood_targets_follow_set_ports() -> None:
    fw = forwarder()
    assert fw.flood_targets(1) == (2, 3)
    fw.set_ports({1: False, 2: False, 5: False})
    assert fw.flood_targets(1) == (2, 5)
    assert fw.ports == {1: False, 2: False, 5: False}


# --- properties -----------------------------------------------------------------------------
MAC = st.sampled_from([A, B, C, BCAST, MCAST, bytes(6)])
FRAME = st.one_of(
    st.builds(eth, MAC, MAC, st.one_of(st.none(), st.sampled_from([1, 2]))),
    st.binary(max_size=13),
)
PORTS = st.dictionaries(st.integers(1, 5), st.booleans(), max_size=5)


@settings(max_examples=300, deadline=None)
@given(ports=PORTS, batches=st.lists(st.tuples(st.integers(1, 6), st.lists(FRAME, max_size=8)),
                                      max_size=8))
def test_invariants(ports: dict[int, bool], batches: list[tuple[int, list[bytes]]]) -> None:
    fw = forwarder(ports)
    live = {p for p, shut in ports.items() if not shut}
    for now, (in_port, frames) in enumerate(batches):
        r = fw.forward(in_port, frames, float(now))
        assert in_port not in r.egress  # never back out of the ingress port
        assert set(r.egress) <= live - {in_port}  # never out of a shut or unknown port
        if in_port not in live:
            assert (r.egress, r.filtered, r.malformed) == ({}, len(frames), 0)
            continue
        assert r.malformed == sum(1 for f in frames if len(f) < 14)
        good = [f for f in frames if len(f) >= 14]
        assert r.filtered <= len(good)
        offered = Counter(good)
        for fs in r.egress.values():  # each frame at most as often as offered, per port
            assert fs and not Counter(fs) - offered
        for f in good:  # group destinations reach every other live port
            if f[0] & 1:
                assert all(f in r.egress.get(p, []) for p in live - {in_port})


def reference(ports: dict[int, bool], fdb: dict[tuple[int, bytes], int], in_port: int,
              frames: list[bytes]) -> tuple[dict[int, list[bytes]], int, int]:
    """The rules, one frame at a time, over a plain dict (no ageing, no limits)."""
    if ports.get(in_port, True):
        return {}, len(frames), 0
    uni: dict[int, list[bytes]] = {}
    flood: list[bytes] = []
    malformed = filtered = 0
    for f in frames:
        if len(f) < 14:
            malformed += 1
            continue
        vid = int.from_bytes(f[14:16], "big") & 0xFFF if f[12:14] == b"\x81\x00" and \
            len(f) >= 18 else 0
        dst, src = f[:6], f[6:12]
        if not src[0] & 1 and src != bytes(6):
            fdb[(vid, src)] = in_port
        to = None if dst[0] & 1 else fdb.get((vid, dst))
        if to is None or to not in ports:
            flood.append(f)
        elif to == in_port or ports[to]:
            filtered += 1
        else:
            uni.setdefault(to, []).append(f)
    for p in sorted(p for p, shut in ports.items() if not shut and p != in_port):
        if flood:
            uni[p] = uni.get(p, []) + flood
    return uni, filtered, malformed


@settings(max_examples=300, deadline=None)
@given(ports=PORTS, batches=st.lists(st.tuples(st.integers(1, 6), st.lists(FRAME, max_size=8)),
                                      max_size=8))
def test_matches_the_rules_frame_by_frame(ports: dict[int, bool],
                                          batches: list[tuple[int, list[bytes]]]) -> None:
    fw = forwarder(ports)
    table: dict[tuple[int, bytes], int] = {}
    for now, (in_port, frames) in enumerate(batches):
        r = fw.forward(in_port, frames, float(now))
        got = {p: list(fs) for p, fs in r.egress.items()}
        assert (got, r.filtered, r.malformed) == reference(ports, table, in_port, frames)


# --- port security --------------------------------------------------------------------------
def _capped(port_security: bool) -> Forwarder:
    t = FdbTable.format(bytearray(FdbTable.size(64)), 64)
    fw = Forwarder(Fdb(t, per_port_max=2, move_hold_s=0.0), port_security)
    fw.set_ports({1: False, 2: False, 3: False})
    return fw


def test_a_source_over_its_ports_cap_is_dropped_and_counted() -> None:
    fw = _capped(port_security=True)
    result = fw.forward(1, [eth(BCAST, A), eth(BCAST, B), eth(BCAST, C), eth(BCAST, A)], 0.0)
    assert result.secured == 1  # C: port 1 holds A and B already
    assert {p: len(fs) for p, fs in result.egress.items()} == {2: 3, 3: 3}
    assert eth(BCAST, C) not in result.egress[2]


def test_without_port_security_such_frames_flood() -> None:
    fw = _capped(port_security=False)
    result = fw.forward(1, [eth(BCAST, A), eth(BCAST, B), eth(BCAST, C)], 0.0)
    assert result.secured == 0 and len(result.egress[2]) == 3


def test_a_station_moving_to_a_full_port_is_dropped_and_forgotten() -> None:
    fw = _capped(port_security=True)
    fw.forward(2, [eth(BCAST, C)], 0.0)  # C lives on port 2
    fw.forward(1, [eth(BCAST, A), eth(BCAST, B)], 0.0)  # port 1 is full
    result = fw.forward(1, [eth(BCAST, C)], 1.0)  # C shows up on port 1
    assert result.secured == 1 and result.egress == {}
    assert fw.fdb.lookup(0, C, 1.0) is None  # not left pointing at where it was


def test_frames_a_shut_port_drops_are_counted_for_it() -> None:
    fw = forwarder({1: True, 2: False, 3: False})
    assert fw.forward(1, [eth(BCAST, A), eth(B, A)], 0.0).shut == {1: 2}
    fw.forward(3, [eth(BCAST, C)], 0.0)  # C lives on port 3
    fw.set_ports({1: False, 2: False, 3: True})
    result = fw.forward(2, [eth(C, B), eth(C, B), eth(BCAST, B)], 1.0)
    assert result.shut == {3: 2} and result.filtered == 2


def test_a_station_learned_within_a_batch_is_used_by_the_rest_of_it() -> None:
    fw = forwarder()
    frames = [eth(B, A), eth(C, B), eth(B, A), eth(B, A)]  # B speaks from port 1 mid-batch
    result = fw.forward(1, frames, 0.0)
    assert {p: list(fs) for p, fs in result.egress.items()} == \
        {2: frames[:2], 3: frames[:2]}
    assert result.filtered == 2  # then A -> B stays on port 1


def test_views_into_a_ring_switch_like_bytes() -> None:
    frames = [eth(BCAST, A), eth(A, B, vid=7), eth(B, A, vid=7), eth(C, A)]
    got = forwarder().forward(1, [memoryview(f) for f in frames], 0.0)
    want = forwarder().forward(1, frames, 0.0)
    assert {p: [bytes(f) for f in fs] for p, fs in got.egress.items()} == want.egress
    assert (got.filtered, got.malformed) == (want.filtered, want.malformed)

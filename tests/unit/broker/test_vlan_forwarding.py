"""Forwarding with VLANs, storm control and rate limits: cases and a frame-by-frame model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etherws import vlan
from etherws.broker.fdb import Fdb
from etherws.broker.forwarding import Forwarder, PortPolicy
from etherws.ratelimit import MIN_RATE_BURST, MIN_STORM_BURST
from etherws.tables import FdbTable
from etherws.vlan import TRANSPARENT, PortVlan

A = bytes.fromhex("020000000001")
B = bytes.fromhex("020000000002")
C = bytes.fromhex("020000000003")
BCAST = b"\xff" * 6


def eth(dst: bytes, src: bytes, vid: int | None = None, payload: bytes = b"x") -> bytes:
    tag = b"" if vid is None else b"\x81\x00" + vid.to_bytes(2, "big")
    return dst + src + tag + b"\x88\xb5" + payload


def forwarder(ports: dict[int, PortPolicy]) -> Forwarder:
    t = FdbTable.format(bytearray(FdbTable.size(64)), 64)
    fw = Forwarder(Fdb(t, 300.0, move_hold_s=0.0))
    fw.set_ports(ports)
    return fw


def out(fw: Forwarder, in_port: int, frames: list[bytes], now: float = 0.0
        ) -> dict[int, list[bytes]]:
    return {p: [bytes(f) for f in fs] for p, fs in fw.forward(in_port, frames, now).egress.items()}


def access(vid: int) -> PortPolicy:
    return PortPolicy(vlan=vlan.access(vid))


def trunk(*vids: int, native: int = 0) -> PortPolicy:
    return PortPolicy(vlan=vlan.trunk(vids, native))


PLAIN = PortPolicy()


# --- VLANs ----------------------------------------------------------------------------------
def switch() -> Forwarder:
    """Ports 1, 2: access 10; 3: access 20; 4: trunk 10, 20; 5: transparent."""
    return forwarder({1: access(10), 2: access(10), 3: access(20), 4: trunk(10, 20), 5: PLAIN})


def test_a_broadcast_in_vlan_10_leaves_only_on_members_of_vlan_10() -> None:
    fw = switch()
    f = eth(BCAST, A)
    assert out(fw, 1, [f]) == {2: [f], 4: [eth(BCAST, A, 10)], 5: [eth(BCAST, A, 10)]}
    g = eth(BCAST, C)
    assert out(fw, 3, [g]) == {4: [eth(BCAST, C, 20)], 5: [eth(BCAST, C, 20)]}


def test_tagged_frames_from_a_trunk_go_untagged_to_access_ports() -> None:
    fw = switch()
    assert out(fw, 4, [eth(BCAST, B, 10)]) == {1: [eth(BCAST, B)], 2: [eth(BCAST, B)],
                                               5: [eth(BCAST, B, 10)]}
    assert out(fw, 4, [eth(BCAST, B, 20)]) == {3: [eth(BCAST, B)], 5: [eth(BCAST, B, 20)]}


def test_learning_and_unicast_are_per_vlan() -> None:
    fw = switch()
    fw.forward(1, [eth(BCAST, A)], 0.0)  # A in VLAN 10 on port 1
    assert out(fw, 4, [eth(A, B, 10)], 1.0) == {1: [eth(A, B)]}
    # A is unknown in VLAN 20: floods there, and never reaches port 1
    assert out(fw, 4, [eth(A, B, 20)], 1.0) == {3: [eth(A, B)], 5: [eth(A, B, 20)]}


@pytest.mark.parametrize("in_port, frame", [
    (1, eth(BCAST, A, 10)),  # tagged into an access port
    (1, eth(BCAST, A, 20)),
    (4, eth(BCAST, A)),      # untagged into a trunk without a native VLAN
    (4, eth(BCAST, A, 30)),  # a VLAN the trunk does not carry
])
def test_frames_outside_the_ports_vlans_are_dropped_and_counted(in_port: int,
                                                                frame: bytes) -> None:
    fw = switch()
    r = fw.forward(in_port, [frame, frame], 0.0)
    assert (r.egress, r.vlan) == ({}, 2)
    assert len(fw.fdb) == 0  # and teach nothing


def test_the_native_vlan_is_untagged_on_the_trunk() -> None:
    fw = forwarder({1: access(1), 2: trunk(10, native=1), 3: access(10)})
    assert out(fw, 1, [eth(BCAST, A)]) == {2: [eth(BCAST, A)]}
    assert out(fw, 2, [eth(BCAST, B)]) == {1: [eth(BCAST, B)]}
    assert out(fw, 2, [eth(BCAST, B, 10)]) == {3: [eth(BCAST, B)]}


def test_a_unicast_to_a_port_no_longer_in_the_vlan_is_filtered() -> None:
    fw = switch()
    fw.forward(2, [eth(BCAST, B)], 0.0)
    fw.set_ports({1: access(10), 2: access(20), 3: access(20), 4: trunk(10, 20), 5: PLAIN})
    r = fw.forward(1, [eth(B, A)], 1.0)
    assert (r.egress, r.filtered) == ({}, 1)


def test_shut_ports_are_skipped_with_vlans_too() -> None:
    fw = forwarder({1: access(10), 2: PortPolicy(shut=True, vlan=vlan.access(10)),
                    3: access(10)})
    fw.forward(2, [eth(BCAST, B)], 0.0)  # nothing: shut
    fw.forward(3, [eth(BCAST, C)], 0.0)
    assert out(fw, 1, [eth(BCAST, A)]) == {3: [eth(BCAST, A)]}
    fw.set_ports({1: access(10), 2: access(10), 3: PortPolicy(shut=True,
                                                              vlan=vlan.access(10))})
    r = fw.forward(1, [eth(C, A)], 1.0)
    assert (r.egress, r.filtered, r.shut) == ({}, 1, {3: 1})


def test_a_flood_makes_each_form_of_a_frame_once() -> None:
    fw = forwarder({1: access(10), 2: trunk(10), 3: trunk(10), 4: access(10), 5: access(10)})
    r = fw.forward(1, [eth(BCAST, A)], 0.0)
    assert r.egress[2][0] is r.egress[3][0]  # one tagged copy for both trunks
    assert r.egress[4][0] is r.egress[5][0]


# --- storm control --------------------------------------------------------------------------
def test_storm_control_cuts_floods_to_the_limit() -> None:
    fw = forwarder({1: PortPolicy(storm_pps=100), 2: PLAIN})
    r = fw.forward(1, [eth(BCAST, A)] * 1000, 0.0)
    assert (len(r.egress[2]), r.storm) == (MIN_STORM_BURST, 1000 - MIN_STORM_BURST)
    r = fw.forward(1, [eth(BCAST, A)] * 1000, 0.5)  # 50 tokens later
    assert (len(r.egress[2]), r.storm) == (50, 950)


def test_storm_control_counts_unknown_unicast_and_spares_known_unicast() -> None:
    fw = forwarder({1: PortPolicy(storm_pps=100), 2: PLAIN, 3: PLAIN})
    fw.forward(2, [eth(BCAST, B)], 0.0)
    r = fw.forward(1, [eth(B, A)] * 200 + [eth(C, A)] * 200, 0.0)
    assert r.egress[2].count(eth(B, A)) == 200  # known: all of them
    assert r.storm == 200 - MIN_STORM_BURST and len(r.egress[3]) == MIN_STORM_BURST


def test_storm_control_with_vlans() -> None:
    fw = forwarder({1: PortPolicy(vlan=vlan.access(10), storm_pps=100), 2: access(10)})
    r = fw.forward(1, [eth(BCAST, A)] * 100, 0.0)
    assert (len(r.egress[2]), r.storm) == (MIN_STORM_BURST, 100 - MIN_STORM_BURST)


def test_an_unchanged_limit_keeps_its_bucket_and_a_changed_one_starts_full() -> None:
    fw = forwarder({1: PortPolicy(storm_pps=100), 2: PLAIN})
    fw.forward(1, [eth(BCAST, A)] * 100, 0.0)
    fw.set_ports({1: PortPolicy(storm_pps=100), 2: PLAIN, 3: PLAIN})
    assert fw.forward(1, [eth(BCAST, A)], 0.0).storm == 1
    fw.set_ports({1: PortPolicy(storm_pps=1000), 2: PLAIN})
    assert fw.forward(1, [eth(BCAST, A)] * 100, 0.0).storm == 0


# --- rate limit -----------------------------------------------------------------------------
def test_the_rate_limit_polices_bytes_coming_in() -> None:
    fw = forwarder({1: PortPolicy(rate_bps=8_000_000), 2: PLAIN})  # 1 MB/s
    big = eth(BCAST, A, payload=bytes(1486))  # 1500 bytes
    r = fw.forward(1, [big] * 200, 0.0)
    passed = MIN_RATE_BURST // 1500
    assert (len(r.egress[2]), r.rate) == (passed, 200 - passed)
    r = fw.forward(1, [big] * 200, 0.015)  # 15 000 bytes later: 10 frames
    assert (len(r.egress[2]), r.rate) == (10, 190)
    small = eth(BCAST, A)
    assert fw.forward(1, [small], 0.015).rate == 0  # what is left still lets a small one by


def test_rate_limited_frames_teach_nothing() -> None:
    fw = forwarder({1: PortPolicy(rate_bps=1000), 2: PLAIN})
    fw.forward(1, [eth(BCAST, A, payload=bytes(MIN_RATE_BURST))], 0.0)
    assert len(fw.fdb) == 0


# --- the model --------------------------------------------------------------------------------
VIDS = st.sampled_from([1, 10, 20])
RULES = st.one_of(
    st.just(TRANSPARENT), VIDS.map(vlan.access),
    st.builds(vlan.trunk, st.frozensets(VIDS, min_size=1), st.sampled_from([0, 1, 10])),
)
POLICIES = st.dictionaries(st.integers(1, 5), st.builds(PortPolicy, st.booleans(), RULES),
                           max_size=5)
MAC = st.sampled_from([A, B, C, BCAST])
FRAME = st.builds(eth, MAC, MAC, st.sampled_from([None, 0, 1, 10, 20, 30]))


def model(ports: dict[int, PortPolicy], fdb: dict[tuple[int, bytes], int], in_port: int,
          frames: list[bytes]) -> dict[int, list[bytes]]:
    """The rules, one frame at a time, every egress port in batch order."""
    got: dict[int, list[bytes]] = {}
    if in_port not in ports or ports[in_port].shut:
        return got
    for f in frames:
        vid = ports[in_port].vlan.classify(f)
        if vid is None:
            continue
        dst, src = f[:6], f[6:12]
        if not src[0] & 1:
            fdb[(vid, src)] = in_port
        to = None if dst[0] & 1 else fdb.get((vid, dst))
        if to is not None and to in ports:
            targets = [to] if to != in_port and not ports[to].shut else []
        else:
            targets = sorted(p for p, v in ports.items() if p != in_port and not v.shut)
        for p in targets:
            how = ports[p].vlan.egress(vid)
            if how is not None:
                got.setdefault(p, []).append(bytes(vlan.rewrite(f, how, vid)))
    return got


@settings(max_examples=300, deadline=None)
@given(ports=POLICIES, batches=st.lists(st.tuples(st.integers(1, 6),
                                                  st.lists(FRAME, max_size=6)), max_size=8))
def test_matches_the_vlan_rules_frame_by_frame(ports: dict[int, PortPolicy],
                                               batches: list[tuple[int, list[bytes]]]) -> None:
    ports[6] = PortPolicy(vlan=vlan.access(30))  # at least one port is not transparent
    fw = forwarder(ports)
    table: dict[tuple[int, bytes], int] = {}
    for now, (in_port, frames) in enumerate(batches):
        got = out(fw, in_port, frames, float(now))
        assert got == model(ports, table, in_port, frames)
        for p, fs in got.items():  # nothing leaves a port outside its VLANs
            rules: PortVlan = ports[p].vlan
            for f in fs:
                tag = vlan.tag_of(f)
                assert rules.transparent or rules.classify(f) is not None, (p, f)
                if rules.mode is vlan.Mode.ACCESS:
                    assert tag is None


# --- frames with a virtio-net header ------------------------------------------------------
def test_a_frame_a_vlan_rule_rewrites_takes_its_header_along_shifted() -> None:
    from etherws import gso
    fw = switch()
    f = eth(BCAST, A, payload=b"y" * 80)
    h = gso.VnetHeader(gso.NEEDS_CSUM, gso.GSO_TCPV4, 66, 1448, 34, 16).pack()
    headers: dict[int, bytes | memoryview] = {id(f): h}
    egress = fw.forward(1, [f], 0.0, headers).egress
    assert egress[2] == [f]  # unchanged: the same object, the same header
    tagged = egress[4][0]
    assert tagged is egress[5][0] and len(tagged) == len(f) + 4
    assert headers[id(tagged)] == gso.VnetHeader(gso.NEEDS_CSUM, gso.GSO_TCPV4, 70, 1448,
                                                 38, 16).pack()
    back = fw.forward(4, [eth(BCAST, B, 10, b"z" * 80)], 1.0, {}).egress
    assert len(back[1][0]) == 14 + 80  # no header given: none made up


def test_a_header_that_cannot_follow_its_rewrite_drops_the_frame_counted() -> None:
    fw = switch()
    f = eth(BCAST, A, 10)  # tagged from the trunk, untagged toward the access ports
    headers: dict[int, bytes | memoryview] = {id(f): b"\x01\x00\x00\x00\x00\x00\x02\x00\x10\x00"}
    result = fw.forward(4, [f], 0.0, headers)
    assert result.malformed == 1 and 1 not in result.egress and 2 not in result.egress
    assert [bytes(x) for x in result.egress[5]] == [f]  # as it is toward the transparent

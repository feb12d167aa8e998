"""The forwarder's part of the loop guard: probes taken out of the traffic, blocked ports."""

from __future__ import annotations

from etherws.broker.fdb import Fdb
from etherws.broker.forwarding import Forwarder, PortPolicy
from etherws.loopguard import PROBE_DST, probe_frame
from etherws.tables import FdbTable
from etherws.vlan import Mode, PortVlan

A = bytes.fromhex("020000000001")
B = bytes.fromhex("020000000002")
BCAST = b"\xff" * 6


def eth(dst: bytes, src: bytes) -> bytes:
    return dst + src + b"\x88\xb5" + b"x" * 46


def forwarder(guard: bool = True, ports: dict[int, bool | PortPolicy] | None = None
              ) -> Forwarder:
    t = FdbTable.format(bytearray(FdbTable.size(64)), 64)
    fw = Forwarder(Fdb(t, 300.0, move_hold_s=2.0), guard=guard)
    fw.set_ports({1: False, 2: False, 3: False} if ports is None else ports)
    return fw


def test_probes_are_taken_out_before_learning_and_never_switched() -> None:
    fw = forwarder()
    probe = probe_frame(7, 1, 1, False)
    data = eth(BCAST, A)
    r = fw.forward(1, [probe, data, probe], 0.0)
    assert r.probes == [probe, probe]
    assert {p: list(fs) for p, fs in r.egress.items()} == {2: [data], 3: [data]}
    # the same probe source by another port: no move held, nothing learned from it
    r = fw.forward(2, [probe], 0.1)
    assert r.probes == [probe] and r.secured == 0 and not r.egress
    assert fw.fdb.lookup(0, probe[6:12], 0.2) is None


def test_a_broken_probe_is_still_taken_out() -> None:
    fw = forwarder()
    broken = PROBE_DST + A + b"\x88\xb6" + bytes(46)
    assert fw.forward(1, [broken], 0.0).probes == [broken]


def test_without_the_guard_probes_are_frames_like_any_other() -> None:
    fw = forwarder(guard=False)
    probe = probe_frame(7, 1, 1, False)
    r = fw.forward(1, [probe], 0.0)
    assert r.probes == [] and set(r.egress) == {2, 3}


def test_probes_pass_vlan_rules_untouched() -> None:
    trunk = PortPolicy(vlan=PortVlan(Mode.TRUNK, 0, frozenset({10})))  # no native VLAN
    fw = forwarder(ports={1: trunk, 2: False, 3: False})
    probe = probe_frame(7, 1, 1, False)
    r = fw.forward(1, [probe], 0.0)
    assert r.probes == [probe] and r.vlan == 0 and not r.egress


def test_a_blocked_port_sends_nothing_in_but_its_probes_and_gets_no_floods() -> None:
    fw = forwarder()
    fw.set_blocked(frozenset({2}))
    probe = probe_frame(7, 2, 1, False)
    r = fw.forward(2, [eth(BCAST, B), probe, eth(A, B)], 0.0)
    assert r.probes == [probe] and r.loop == 2 and not r.egress and not r.shut
    data = eth(BCAST, A)
    assert {p: list(fs) for p, fs in fw.forward(1, [data], 0.1).egress.items()} == {3: [data]}
    assert fw.flood_targets(1) == (3,)
    assert fw.ports == {1: False, 2: False, 3: False}  # not shut: blocked


def test_blocked_survives_new_port_sets_and_opens_again() -> None:
    fw = forwarder()
    fw.set_blocked(frozenset({2}))
    fw.set_ports({1: False, 2: False, 3: False, 4: False})
    assert fw.flood_targets(1) == (3, 4)
    fw.set_blocked(frozenset())
    assert fw.flood_targets(1) == (2, 3, 4)


def test_a_shut_and_blocked_port_counts_as_shut() -> None:
    fw = forwarder(ports={1: False, 2: True})
    fw.set_blocked(frozenset({2}))
    r = fw.forward(2, [eth(BCAST, B)], 0.0)
    assert r.shut == {2: 1} and r.loop == 0 and r.probes == []


def test_a_unicast_to_a_blocked_port_is_filtered() -> None:
    fw = forwarder()
    fw.forward(2, [eth(BCAST, B)], 0.0)  # B learned on port 2
    fw.set_blocked(frozenset({2}))
    r = fw.forward(1, [eth(B, A)], 0.1)
    assert not r.egress and r.filtered == 1

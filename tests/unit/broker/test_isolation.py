"""Isolated ports (``--isolate``): accepted peers reach the switch's own ports, never each
other, with and without VLAN rules."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from etherws.broker.fdb import Fdb
from etherws.broker.forwarding import Forwarder, PortPolicy
from etherws.tables import FdbTable
from etherws.vlan import access
from tests.unit.broker.test_forwarding import BCAST, eth

LOCAL, PEER1, PEER2, PEER3 = 1, 2, 3, 4
MAC = {p: bytes.fromhex(f"02000000000{p}") for p in (LOCAL, PEER1, PEER2, PEER3)}


def forwarder(vlan: bool = False) -> Forwarder:
    t = FdbTable.format(bytearray(FdbTable.size(64)), 64)
    fw = Forwarder(Fdb(t, 300.0))
    rule = access(10) if vlan else PortPolicy().vlan
    fw.set_ports({LOCAL: PortPolicy(vlan=rule),
                  **{p: PortPolicy(vlan=rule, isolated=True) for p in (PEER1, PEER2, PEER3)}})
    for p in MAC:  # every station known on its port
        fw.forward(p, [eth(BCAST, MAC[p])], 0.0)
    return fw


def egress(fw: Forwarder, port: int, dst: bytes) -> tuple[set[int], int]:
    r = fw.forward(port, [eth(dst, MAC[port])], 1.0)
    return {p for p, fs in r.egress.items() if fs}, r.filtered


def test_a_peer_floods_to_the_local_ports_only() -> None:
    for vlan in (False, True):
        assert egress(forwarder(vlan), PEER1, BCAST) == ({LOCAL}, 0)


def test_a_local_port_floods_to_every_peer() -> None:
    for vlan in (False, True):
        assert egress(forwarder(vlan), LOCAL, BCAST) == ({PEER1, PEER2, PEER3}, 0)


def test_a_unicast_between_peers_is_filtered_to_the_local_port_it_goes() -> None:
    for vlan in (False, True):
        fw = forwarder(vlan)
        assert egress(fw, PEER1, MAC[PEER2]) == (set(), 1)
        assert egress(fw, PEER1, MAC[LOCAL]) == ({LOCAL}, 0)
        assert egress(fw, LOCAL, MAC[PEER3]) == ({PEER3}, 0)


def test_without_isolation_peers_reach_each_other() -> None:
    t = FdbTable.format(bytearray(FdbTable.size(64)), 64)
    fw = Forwarder(Fdb(t, 300.0))
    fw.set_ports({p: PortPolicy() for p in MAC})
    assert {p for p, fs in fw.forward(PEER1, [eth(BCAST, MAC[PEER1])], 0.0).egress.items()
            if fs} == {LOCAL, PEER2, PEER3}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(sorted(MAC)), st.sampled_from(sorted(MAC)),
                          st.booleans()), min_size=1, max_size=40), st.booleans())
def test_no_frame_from_a_peer_ever_leaves_by_another_peer(
        sends: list[tuple[int, int, bool]], vlan: bool) -> None:
    fw = forwarder(vlan)
    for now, (src, dst, broadcast) in enumerate(sends):
        r = fw.forward(src, [eth(BCAST if broadcast else MAC[dst], MAC[src])], float(now))
        reached = {p for p, fs in r.egress.items() if fs}
        if src != LOCAL:
            assert reached <= {LOCAL}
        elif broadcast:
            assert reached == {PEER1, PEER2, PEER3}

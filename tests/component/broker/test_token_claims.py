"""The real broker and an accepted peer's token claims: read when its worker attaches,
in force before its first frame is switched, not changed by a later attach (this test
plays the workers on their rings; see test_service for the technique)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import zmq

from etherws import session, vlan
from etherws.tables import PortKind, PortRules, SlotView
from tests.component.broker.test_service import (
    BCAST,
    A,
    B,
    C,
    Switch,
    ask,
    dealer,  # noqa: F401  (a fixture: the session socket of this module's switch)
    eth,
    mac,
    running_switch,
)

PEER = 4


@pytest.fixture
def switch(rundir: str) -> Iterator[Switch]:
    with running_switch(rundir) as sw:
        yield sw




def add_peer(sw: Switch, vid: int, max_macs: int) -> None:
    """Port PEER, an accepted peer whose worker wrote its token's claims."""
    sw.add_port(PEER, generation=PEER)
    sw.ports.release(PEER - 1)
    sw.ports.claim(PEER - 1, PEER, PortKind.SERVER, ring=PEER)
    SlotView(sw.ports, PEER - 1).set_token(vid, max_macs)


def access(sw: Switch, port: int, vid: int) -> None:
    rules = vlan.access(vid)
    sw.ports.set_rules(port - 1, PortRules(rules.word(), rules.bitmap(), 0, 0))


def attach(sw: Switch, dealer: zmq.Socket[bytes], port: int) -> None:
    got = ask(dealer, session.Message(session.ATTACH, port, port, os.getpid()))
    assert got.kind == session.ATTACHED


def test_a_peer_s_frames_wait_for_its_attach_and_then_obey_its_claims(
        switch: Switch, dealer: zmq.Socket[bytes]) -> None:
    sw = switch
    access(sw, 1, 10)
    access(sw, 2, 20)
    add_peer(sw, 10, 1)
    sw.table_barrier()
    early = eth(BCAST, A, "before the attach")
    sw.send(PEER, early)
    sw.table_barrier()  # a whole loop later: still in the ring, not switched
    up = sw.workers[PEER].up
    assert up.tail != up.head
    attach(sw, dealer, PEER)
    sw.expect(1, early)  # in VLAN 10, untagged on port 1's access port
    sw.send(PEER, eth(BCAST, B, "a second MAC: over the quota"))
    sw.barrier(PEER)
    marker = eth(BCAST, A, "marker")
    sw.send(PEER, marker)
    sw.expect(1, marker)  # the second MAC's frame never came
    in_20 = eth(BCAST, C, "marker in VLAN 20")
    sw.send(3, in_20[:12] + b"\x81\x00" + (20).to_bytes(2, "big") + in_20[12:])
    sw.expect(2, in_20)  # the first thing port 2 got: VLAN 20 saw nothing of the peer
    assert sw.slot(PEER).drops == 1
    assert sw.learned().get(B) is None and sw.learned()[A] == PEER


def test_a_later_attach_does_not_change_the_claims(
        switch: Switch, dealer: zmq.Socket[bytes]) -> None:
    sw = switch
    access(sw, 1, 10)
    add_peer(sw, 10, 0)
    sw.table_barrier()
    attach(sw, dealer, PEER)
    SlotView(sw.ports, PEER - 1).set_token(0, 0)  # a compromised worker lifting them
    attach(sw, dealer, PEER)
    sw.ports.set_shut(2, False)  # a port table change: the broker reads the slots again
    sw.table_barrier()
    # Untagged into VLAN 10 reaches port 1's access port: it would be VLAN 0 without.
    sw.deliver(PEER, eth(BCAST, mac(7), "still in VLAN 10"), 1)


def test_the_operator_s_vlan_wins_over_the_claim(
        switch: Switch, dealer: zmq.Socket[bytes]) -> None:
    sw = switch
    access(sw, 1, 10)
    access(sw, 2, 20)
    add_peer(sw, 10, 0)
    access(sw, PEER, 20)
    sw.table_barrier()
    attach(sw, dealer, PEER)
    sw.deliver(PEER, eth(BCAST, A, "in VLAN 20 by the operator's rule"), 2)
    sw.deliver(2, eth(BCAST, B, "marker in VLAN 20"), PEER)
    in_10 = eth(BCAST, C, "marker in VLAN 10")
    sw.send(3, in_10[:12] + b"\x81\x00" + (10).to_bytes(2, "big") + in_10[12:])
    sw.expect(1, in_10)  # the first thing port 1 got: the peer is not in VLAN 10

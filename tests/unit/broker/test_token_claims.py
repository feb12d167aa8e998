"""A peer token's claims in the broker's rules: they only restrict a port."""

from __future__ import annotations

import pytest

from etherws import vlan
from etherws.broker.fdb import Fdb
from etherws.broker.forwarding import Forwarder, PortPolicy, claimed
from etherws.tables import FdbTable
from tests.unit.broker.test_forwarding import BCAST, eth

MACS = [bytes.fromhex(f"0200000000{i:02x}") for i in range(1, 8)]


def forwarder(port_security: bool = True, per_port_max: int = 1024) -> Forwarder:
    t = FdbTable.format(bytearray(FdbTable.size(64)), 64)
    return Forwarder(Fdb(t, 300.0, per_port_max, move_hold_s=0.0), port_security)


def test_a_claimed_vlan_makes_a_transparent_port_an_access_port() -> None:
    assert claimed(PortPolicy(), 10, 0).vlan == vlan.access(10)
    assert claimed(PortPolicy(), 0, 0) == PortPolicy()


@pytest.mark.parametrize("rules", [vlan.access(20), vlan.trunk({10, 20}, 1)])
def test_the_operator_s_vlan_setting_wins_over_a_claim(rules: vlan.PortVlan) -> None:
    assert claimed(PortPolicy(vlan=rules), 10, 0).vlan == rules


@pytest.mark.parametrize("vid", [4095, 65535, 2**64 - 1])
def test_a_claimed_vlan_out_of_range_is_ignored(vid: int) -> None:
    assert claimed(PortPolicy(), vid, 0).vlan.transparent


def test_a_claimed_quota_is_kept_with_the_rest() -> None:
    p = claimed(PortPolicy(shut=True, storm_pps=5, isolated=True), 0, 2)
    assert p == PortPolicy(shut=True, storm_pps=5, isolated=True, max_macs=2)


@pytest.mark.parametrize("port_security", [True, False])
def test_frames_from_a_source_beyond_the_quota_are_dropped(port_security: bool) -> None:
    fw = forwarder(port_security)
    fw.set_ports({1: claimed(PortPolicy(), 0, 2), 2: PortPolicy()})
    frames = [eth(BCAST, m) for m in MACS[:3]]
    result = fw.forward(1, frames, 0.0)
    assert result.egress == {2: frames[:2]}
    assert result.secured == 1
    assert fw.fdb.port_count(1) == 2
    again = fw.forward(1, frames[:2], 1.0)  # the first two stay welcome
    assert again.egress == {2: frames[:2]} and again.secured == 0


def test_the_quota_is_capped_by_the_per_port_limit() -> None:
    fw = forwarder(per_port_max=2)
    fw.set_ports({1: claimed(PortPolicy(), 0, 5), 2: PortPolicy()})
    result = fw.forward(1, [eth(BCAST, m) for m in MACS[:4]], 0.0)
    assert result.secured == 2 and fw.fdb.port_limit(1) == 2


def test_the_quota_applies_in_a_claimed_vlan_and_floods_stay_in_it() -> None:
    fw = forwarder()
    fw.set_ports({1: claimed(PortPolicy(), 10, 1), 2: PortPolicy(vlan=vlan.access(10)),
                  3: PortPolicy(vlan=vlan.access(20))})
    first, second = eth(BCAST, MACS[0]), eth(BCAST, MACS[1])
    result = fw.forward(1, [first, second], 0.0)
    assert result.egress == {2: [first]} and result.secured == 1
    tagged = eth(BCAST, MACS[0], vid=20)  # an access port drops what comes tagged
    assert fw.forward(1, [tagged], 1.0).vlan == 1


def test_update_port_applies_claims_and_leaving_the_quota_lifts_it() -> None:
    fw = forwarder()
    fw.set_ports({1: PortPolicy(), 2: PortPolicy()})
    fw.update_port(1, claimed(fw.policy(1) or PortPolicy(), 0, 1))
    assert fw.fdb.port_limit(1) == 1 and fw.policy(2) == PortPolicy()
    fw.set_ports({2: PortPolicy()})  # port 1 deleted: its limit goes with it
    assert fw.fdb.port_limit(1) == 1024

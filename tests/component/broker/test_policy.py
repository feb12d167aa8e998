"""The real broker applying the port table's VLAN, storm and rate rules (this test plays the
workers on their rings; see test_service for the technique)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from etherws import vlan
from etherws.ratelimit import MIN_STORM_BURST
from etherws.tables import PortRules
from tests.component.broker.test_service import (
    BCAST,
    A,
    B,
    C,
    Switch,
    eth,
    running_switch,
)


def tag(frame: bytes, vid: int) -> bytes:
    return frame[:12] + b"\x81\x00" + vid.to_bytes(2, "big") + frame[12:]


def set_rules(sw: Switch, port: int, rules: vlan.PortVlan = vlan.TRANSPARENT,
              storm: int = 0, rate_bps: int = 0) -> None:
    sw.ports.set_rules(port - 1, PortRules(rules.word(), rules.bitmap(), storm, rate_bps))


@pytest.fixture
def switch(rundir: str) -> Iterator[Switch]:
    with running_switch(rundir) as sw:
        yield sw


def test_access_ports_and_a_trunk(switch: Switch) -> None:
    sw = switch
    set_rules(sw, 1, vlan.access(10))
    set_rules(sw, 2, vlan.trunk({10, 20}))
    set_rules(sw, 3, vlan.access(20))
    sw.table_barrier()
    f = eth(BCAST, A, "in VLAN 10")
    sw.send(1, f)
    sw.expect(2, tag(f, 10))  # tagged on the trunk
    g = eth(BCAST, B, "in VLAN 20")
    sw.send(2, tag(g, 20))
    sw.expect(3, g)  # untagged, and the first thing port 3 got: VLAN 10 never reached it
    h = eth(A, C, "to A in VLAN 10 from the trunk")
    sw.send(2, tag(h, 10))
    sw.expect(1, h)
    assert sw.learned() == {A: 1, B: 2, C: 2}


def test_frames_outside_a_ports_vlans_are_dropped_and_counted(switch: Switch) -> None:
    sw = switch
    set_rules(sw, 1, vlan.access(10))
    set_rules(sw, 2, vlan.access(10))
    sw.table_barrier()
    sw.send(1, tag(eth(BCAST, A, "tagged into an access port"), 10))
    sw.barrier(1)
    marker = eth(BCAST, A, "marker")
    sw.send(1, marker)
    sw.expect(2, marker)
    s = sw.slot(1)
    assert (s.vlan_drops, s.drops) == (1, 1)


def test_storm_control_cuts_a_broadcast_flood(switch: Switch) -> None:
    sw = switch
    set_rules(sw, 1, storm=100)
    sw.table_barrier()
    start = time.monotonic()
    sw.send(1, *[eth(BCAST, A, f"flood {i}") for i in range(2000)])
    sw.barrier(1)
    elapsed = time.monotonic() - start
    sw.take_all(2)
    passed = len(sw.inbox[2])
    dropped = sw.slot(1).storm_drops
    assert passed + dropped == 2000
    assert passed <= MIN_STORM_BURST + 100 * elapsed + 1


def test_a_new_rule_is_applied_and_a_changed_vlan_forgets_its_addresses(switch: Switch) -> None:
    sw = switch
    sw.deliver(1, eth(BCAST, A, "A on port 1"), 2, 3)
    assert sw.learned() == {A: 1}
    set_rules(sw, 1, vlan.access(10))
    sw.table_barrier()
    assert sw.learned() == {}

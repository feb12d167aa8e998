"""The real broker's loop guard (this test plays the workers on their rings; see
test_service): probes out of every port, its own probe coming back blocks a port, the
block shows in the port table and lifts once the loop is gone, other switches' probes
are flooded on once, broken ones are counted."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from etherws.loopguard import HOLD_S, PROBE_DST, parse, probe_frame
from tests import support
from tests.component.broker.test_service import BCAST, A, B, Switch, eth, running_switch


@pytest.fixture
def switch(rundir: str) -> Iterator[Switch]:
    with running_switch(rundir) as sw:
        yield sw


def probe_of(sw: Switch, port: int) -> bytes:
    """A probe the broker sent out of ``port`` (waits for one)."""
    def got() -> bytes | None:
        sw.take_all(port)
        return sw.probes[port][-1] if sw.probes[port] else None
    return support.wait_until(got, 5, f"a probe out of port {port}")


def test_every_port_gets_probes_naming_this_switch_and_the_port(switch: Switch) -> None:
    sw = switch
    probes = {p: parse(probe_of(sw, p)) for p in (1, 2, 3)}
    ids = {pr.switch for pr in probes.values() if pr is not None}
    assert len(ids) == 1 and ids == {sw.ports.switch_id()}  # the id kept in the table
    assert {p: pr.port for p, pr in probes.items() if pr is not None} == {1: 1, 2: 2, 3: 3}
    assert not any(pr is not None and pr.looped for pr in probes.values())


def test_its_own_probe_coming_back_blocks_a_port_until_the_loop_is_gone(
        switch: Switch) -> None:
    sw = switch
    sw.deliver(2, eth(BCAST, B, "b-hello"), 1, 3)  # B learned on port 2

    def loop_back() -> bool:  # port 1's probes come back in by port 2, as through a loop
        sw.take_all(1)
        for f in sw.probes[1]:
            sw.send(2, f)
        sw.probes[1].clear()
        return sw.slot(2).loop_since_ns > 0
    started = time.monotonic()
    support.wait_until(loop_back, 10, "port 2 to be blocked")
    assert time.monotonic() - started < 5  # the bound, with the settle time in it
    s2 = sw.slot(2)
    assert s2.loop_blocks == 1 and sw.slot(1).loop_since_ns == 0
    assert B not in sw.learned()  # the blocked port forgot its stations
    # blocked: nothing in from port 2 (counted), nothing flooded out of it
    sw.send(2, eth(BCAST, B, "from-blocked"))
    sw.barrier(2)
    assert sw.slot(2).loop_drops >= 1
    sw.deliver(1, eth(BCAST, A, "while-blocked"), 3)
    sw.take_all(2)
    assert not sw.inbox[2]
    # the loop goes away: once the hold is over the port forwards again
    blocked_at = time.monotonic()
    support.wait_until(lambda: sw.slot(2).loop_since_ns == 0, HOLD_S + 10, "port 2 to open")
    assert time.monotonic() - blocked_at >= HOLD_S - 1.0
    sw.deliver(1, eth(BCAST, A, "open-again"), 2, 3)
    assert sw.slot(2).loop_blocks == 1


def test_another_switchs_probe_is_flooded_once_a_broken_one_is_counted(switch: Switch) -> None:
    sw = switch
    other = probe_frame(12345, 7, 99, False)
    sw.send(1, other, other)  # the second copy, as if by another path
    sw.barrier(1)

    def got(port: int) -> list[bytes]:
        sw.take_all(port)
        return [f for f in sw.probes[port] if f == other]
    support.wait_until(lambda: got(2) and got(3), 5, "the probe flooded on")
    sw.deliver(1, eth(BCAST, A, "marker"), 2, 3)  # switched after the probes
    assert len(got(2)) == len(got(3)) == 1 and not got(1)
    errors = sw.slot(1).errors
    sw.send(1, PROBE_DST + A + b"\x88\xb6" + b"garbage".ljust(46))
    sw.barrier(1)
    assert sw.slot(1).errors == errors + 1
    sw.deliver(1, eth(BCAST, A, "after-garbage"), 2, 3)  # the broken probe went nowhere

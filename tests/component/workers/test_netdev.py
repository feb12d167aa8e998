"""The netdev port worker on one end of a veth pair; the test holds the other end.

The test process is the broker (a ROUTER at the data endpoint) and the wire (an
AF_PACKET socket on the peer end). The fakes and the shared fixtures are in ``fakes``
and ``conftest``.
"""

from __future__ import annotations

import re
import signal
import struct
from typing import Callable, Iterator

import pytest

from etherws.tables import PortKind, PortTable
from tests import support
from tests.component.fakes import (
    FakeBroker,
    KernelEnd,
    Spawner,
    assert_config_error,
    make_frame,
    prepare_link,
    slot,
    wait_counters,
)

pytestmark = pytest.mark.system  # veth pairs and packet sockets: needs root


@pytest.fixture
def port_kind() -> PortKind:
    """Netdev workers, in a netdev slot."""
    return PortKind.NETDEV


@pytest.fixture
def veth() -> Iterator[tuple[str, str]]:
    """``(worker end, test end)`` of a veth pair, both up, deleted afterwards."""
    a, b = support.unique("etwa"), support.unique("etwb")
    support.run("ip", "link", "add", a, "type", "veth", "peer", "name", b)
    try:
        for name in (a, b):
            prepare_link(name)
        yield a, b
    finally:
        support.delete_link(a)  # takes its peer along


@pytest.fixture
def wire(veth: tuple[str, str], kernel_end: Callable[..., KernelEnd]) -> KernelEnd:
    """The test's packet socket on the peer end."""
    return kernel_end(veth[1])


def promiscuity(name: str) -> int:
    """How many users asked for promiscuous mode on ``name``."""
    out = support.run("ip", "-d", "link", "show", "dev", name).stdout
    return int(re.search(r"promiscuity (\d+)", out).group(1))  # type: ignore[union-attr]


def tagged(frame: bytes, *tags: tuple[int, int]) -> bytes:
    """``frame`` with (TPID, TCI) tags inserted after the MACs, outermost first."""
    return frame[:12] + b"".join(struct.pack("!HH", *t) for t in tags) + frame[12:]


def test_frames_flow_both_ways_promiscuous_without_echo(
        veth: tuple[str, str], wire: KernelEnd, table: PortTable, broker: FakeBroker,
        spawn: Spawner) -> None:
    spawn.running(veth[0])
    assert promiscuity(veth[0]) == 1
    up = [make_frame(i, size) for i, size in enumerate([14, 60, 61, 1514] * 10)]
    for f in up:
        assert wire.send(f)
    assert broker.collect(len(up)) == up  # to random unicast MACs: seen all the same

    down = [make_frame(1000 + i, 64 + i * 20) for i in range(70)]
    for batch in (down[:1], down[1:65], down[65:]):
        broker.send(batch)
    assert wire.collect(len(down)) == down
    marker = make_frame(2000)
    wire.send(marker)
    # PACKET_IGNORE_OUTGOING: what the worker sent did not come back before the marker.
    assert broker.collect(1) == [marker]
    assert broker.received == up + [marker]
    wait_counters(table, broker, down)
    assert (slot(table).errors, slot(table).drops) == (0, 0)


@pytest.mark.parametrize("tags", [
    [(0x8100, 0xA064)],  # 802.1Q, PCP 5, VID 100
    [(0x8100, 0x6000)],  # priority tag: VID 0, PCP 3
    [(0x88A8, 0x0010), (0x8100, 0x0064)],  # 802.1ad outer, 802.1Q inner (QinQ)
])
def test_vlan_tags_survive_both_ways(tags: list[tuple[int, int]], veth: tuple[str, str],
                                     wire: KernelEnd, table: PortTable,
                                     broker: FakeBroker, spawn: Spawner) -> None:
    spawn.running(veth[0])
    up = tagged(make_frame(1), *tags)
    assert wire.send(up)
    assert broker.collect(1) == [up]  # the kernel stripped the outer tag; it is back
    down = tagged(make_frame(2), *tags)
    broker.send([down])
    assert wire.collect(1) == [down]


def test_frame_larger_than_the_data_plane_is_an_error(
        veth: tuple[str, str], wire: KernelEnd, table: PortTable, broker: FakeBroker,
        spawn: Spawner) -> None:
    for name in veth:
        support.run("ip", "link", "set", name, "mtu", "65535")
    spawn.running(veth[0])
    too_big, biggest = make_frame(1, 14 + 65535), make_frame(2, 65535)
    assert wire.send(too_big)
    assert wire.send(biggest)
    assert broker.collect(1) == [biggest]
    support.wait_until(lambda: slot(table).errors == 1, 2, "one error")
    assert slot(table).rx == 1


@pytest.mark.parametrize("target, message", [
    ("etwnothere0", "no interface 'etwnothere0'"),
    ("lo", "'lo' is not an Ethernet interface"),
    ("a:b", "invalid interface name"),
])
def test_unusable_interface_exits_with_config_error(target: str, message: str,
                                                    table: PortTable, spawn: Spawner) -> None:
    assert_config_error(spawn(target), message)


def test_sigterm_exits_zero_and_releases_promiscuous_mode(
        veth: tuple[str, str], table: PortTable, broker: FakeBroker, spawn: Spawner) -> None:
    proc = spawn.running(veth[0])
    assert promiscuity(veth[0]) == 1
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5 * support.SCALE) == 0
    assert promiscuity(veth[0]) == 0


def test_link_down_up_survives_and_deletion_ends_the_worker(
        veth: tuple[str, str], wire: KernelEnd, table: PortTable, broker: FakeBroker,
        spawn: Spawner) -> None:
    proc = spawn.running(veth[0])
    support.run("ip", "link", "set", veth[0], "down")
    broker.send([make_frame(1)])  # refused by the kernel (ENETDOWN): a drop
    support.wait_until(lambda: slot(table).drops == 1, 5, "a drop while down")
    support.run("ip", "link", "set", veth[0], "up")
    frame = make_frame(2)
    support.wait_until(lambda: wire.send(frame) and broker.drain(), 5,
                       "traffic after the link came back")
    assert proc.poll() is None
    support.run("ip", "link", "del", veth[0])
    assert proc.wait(timeout=5 * support.SCALE) == 1
    assert f"interface {veth[0]} was deleted" in proc.stderr_text()


def test_stalled_broker_kernel_drops_are_counted(
        veth: tuple[str, str], table: PortTable, broker: FakeBroker, spawn: Spawner,
        kernel_end: Callable[..., KernelEnd]) -> None:
    proc = spawn.running(veth[0])
    wire = kernel_end(veth[1], bypass_qdisc=True)
    offered = refused = 0
    for i in range(40000):
        offered += 1
        refused += not wire.send(make_frame(i, 1000))
    support.wait_until(lambda: slot(table).drops > 0, 10, "drops counted")
    delivered = 0

    def accounted() -> bool:
        nonlocal delivered
        delivered += broker.drain()
        return delivered + slot(table).drops == offered - refused
    support.wait_until(accounted, 20, "every frame delivered or counted as a drop")
    assert proc.poll() is None

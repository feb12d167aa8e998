"""The README's recipe for more than one gateway: two gateways share one segment over a
VXLAN interface each (a netdev port), and a peer of one reaches a peer of the other; a
redundant tunnel between the same two gateways is a loop through the fabric, and the
loop guard blocks one end of it.

Namespaces A and B are the two gateway hosts (the underlay joins them); each runs a
gateway switch with its VXLAN interface as a netdev port and a WebSocket server, and a
peer switch with a TAP (the overlay address) that dials its own gateway over loopback.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Iterator

from tests.support import SCALE, run, wait_until
from tests.system.harness import Switch, no_offloads
from tests.system.tunnel import (
    OVERLAY_A,
    OVERLAY_B,
    UNDERLAY_A,
    UNDERLAY_B,
    Underlay,
    connected,
    fresh_rundir,
    site,
)

VNI = 4242


@contextlib.contextmanager
def gateway(ns: str, local: str, remote: str, tmp_path: Path, name: str) -> Iterator[Switch]:
    """A gateway in ``ns``: VXLAN ``VNI`` to ``remote`` as a netdev port, a server on :80."""
    underlay = run("ip", "-n", ns, "-o", "addr", "show", "to", local).stdout.split()[1]
    run("ip", "-n", ns, "link", "add", "etwvx0", "type", "vxlan", "id", str(VNI),
        "local", local, "remote", remote, "dstport", "4789", "dev", underlay)
    run("ip", "-n", ns, "link", "set", "etwvx0", "up")
    no_offloads("etwvx0", ns)  # as the recipe says: whole frames for an AF_PACKET port
    sw = Switch(fresh_rundir(tmp_path, name), tmp_path / f"{name}.log", server=True, ns=ns)
    try:
        sw.wait_port(sw.add("netdev", "etwvx0"), "up")
        yield sw
    finally:
        sw.close()  # the interface goes with its namespace


def test_peers_of_two_gateways_joined_by_vxlan_reach_each_other(
        net: Underlay, tmp_path: Path) -> None:
    with gateway(net.a, UNDERLAY_A, UNDERLAY_B, tmp_path, "ga") as ga, \
            gateway(net.b, UNDERLAY_B, UNDERLAY_A, tmp_path, "gb") as gb, \
            site(net.a, fresh_rundir(tmp_path, "pa"), tmp_path / "pa.log", OVERLAY_A,
                 server=False) as pa, \
            site(net.b, fresh_rundir(tmp_path, "pb"), tmp_path / "pb.log", OVERLAY_B,
                 server=False) as pb:
        for peer in (pa, pb):
            # 1450: what a VXLAN over a 1500-byte underlay carries
            run("ip", "-n", peer.ns, "link", "set", peer.host.inner, "mtu", "1450")
            connected(peer, "ws://127.0.0.1/")
        pa.host.wait_ping(OVERLAY_B, 15 * SCALE, "peer A's host to reach peer B's over VXLAN")
        pb.host.wait_ping(OVERLAY_A, 15 * SCALE, "and back")
        # It really went over the fabric: the VXLAN interfaces carried it.
        for ns in (net.a, net.b):
            stats = json.loads(run("ip", "-n", ns, "-s", "-j", "link", "show",
                                   "etwvx0").stdout)[0]["stats64"]
            assert stats["rx"]["packets"] > 0 and stats["tx"]["packets"] > 0, stats
        res = run("ip", "netns", "exec", pa.ns, "ping", "-c", "5", "-i", "0.2", "-s", "1400",
                  "-M", "do", OVERLAY_B, check=False)
        assert res.returncode == 0, res.stdout + res.stderr  # full-size frames fit
        # A tunnel between the two gateways as well: a second path, a loop through the
        # fabric. The loop guard blocks one end of the tunnel (it came up last).
        tunnel = ga.add("client", f"ws://{UNDERLAY_B}/")

        def blocked() -> list[tuple[str, str]]:
            return [(name, e["type"]) for name, sw in (("ga", ga), ("gb", gb))
                    for e in sw.entries("listport") if e["loop"]]
        found = wait_until(blocked, 15 * SCALE, "one end of the redundant tunnel blocked")
        assert found in ([("ga", "client")], [("gb", "server")]), found
        assert ga.port(tunnel) is not None
        for src, dst in ((pa, OVERLAY_B), (pb, OVERLAY_A)):
            src.host.wait_ping(dst, 15 * SCALE, "the peers to talk with the loop cut")
        res = run("ip", "netns", "exec", pa.ns, "ping", "-c", "10", "-i", "0.1", OVERLAY_B,
                  check=False)
        assert res.returncode == 0 and "DUP!" not in res.stdout, res.stdout
        assert blocked() == found

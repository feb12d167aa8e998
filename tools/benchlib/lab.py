"""Two hosts in network namespaces joined by a veth underlay (the bench's machine room).

Host A (203.0.113.1) runs the clients (iperf3 -c, ping, the tunnel clients), host B
(203.0.113.2) the servers. Every name carries the run's tag, so two benches, or a bench
and the test suite, never touch each other's devices; everything is registered on the
caller's ExitStack and removed in reverse order, also on failure and Ctrl-C.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from benchlib.proc import BenchError, run

UNDERLAY_A, UNDERLAY_B = "203.0.113.1", "203.0.113.2"
UNDERLAY_MTU = 9100
"""Room for an overlay MTU of 9000 plus the tunnels' own headers (TCP/IP, WebSocket,
OpenVPN), so no path fragments or loses to a small underlay at the larger MTU."""
PREFIX = "etwb"
"""Every namespace, device and file of the bench starts with this (plus the run tag)."""


@dataclass(frozen=True)
class Lab:
    """The two namespaces, the run's tag and its private work directory."""

    tag: str
    ns_a: str
    ns_b: str
    work: Path
    underlay_mtu: int

    def ifname(self, what: str) -> str:
        """A device name unique to this run (at most 15 characters, the kernel's limit)."""
        name = f"{PREFIX}{self.tag}{what}"
        if len(name) > 15:
            raise ValueError(f"interface name too long: {name}")
        return name


def namespace_names(tag: str) -> tuple[str, str]:
    """The names of host A's and host B's namespaces for run ``tag``."""
    return f"{PREFIX}-{tag}-a", f"{PREFIX}-{tag}-b"


def build(stack: contextlib.ExitStack, tag: str, work: Path,
          underlay_mtu: int = UNDERLAY_MTU) -> Lab:
    """Create both namespaces and the underlay; their removal goes on ``stack``."""
    ns_a, ns_b = namespace_names(tag)
    for ns in (ns_a, ns_b):
        run("ip", "netns", "add", ns)
        # Deleting a namespace takes every device in it along (veths, TAPs).
        stack.callback(run, "ip", "netns", "del", ns, check=False)
        run("ip", "-n", ns, "link", "set", "lo", "up")
    lab = Lab(tag, ns_a, ns_b, work, underlay_mtu)
    veth_pair(lab, lab.ifname("ua"), lab.ifname("ub"), (f"{UNDERLAY_A}/24", f"{UNDERLAY_B}/24"),
              underlay_mtu)
    return lab


def veth_pair(lab: Lab, name_a: str, name_b: str, addresses: tuple[str, str],
              mtu: int) -> None:
    """A veth pair from host A to host B with an address at each end, up.

    Offloads stay on (the kernel's defaults): they are part of what the kernel path
    achieves, and the tunnels' own TCP connections ride on them as well.
    """
    run("ip", "link", "add", name_a, "type", "veth", "peer", "name", name_b)
    try:
        run("ip", "link", "set", name_a, "netns", lab.ns_a)
        run("ip", "link", "set", name_b, "netns", lab.ns_b)
    except BenchError:
        run("ip", "link", "del", name_a, check=False)  # not yet inside a namespace
        raise
    for ns, dev, address in ((lab.ns_a, name_a, addresses[0]),
                             (lab.ns_b, name_b, addresses[1])):
        run("ip", "-n", ns, "addr", "add", address, "dev", dev)
        run("ip", "-n", ns, "link", "set", dev, "mtu", str(mtu), "up")


def set_mtu(ns: str, dev: str, mtu: int) -> None:
    """Set a device's MTU inside a namespace."""
    run("ip", "-n", ns, "link", "set", dev, "mtu", str(mtu))

"""What the bench measures: a way from host A to host B, with its processes.

Every path is up at the same time, each on its own slice of the overlay network
(198.51.100.16*i/28), so the repetitions can interleave the paths: a machine that gets
busier half-way through the run slows all of them alike, which is what keeps the ratios
honest on a shared machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import psutil

from benchlib.lab import Lab, set_mtu, veth_pair
from benchlib.proc import in_ns, run, wait_until

OVERLAY_PREFIX = 28
READY_TIMEOUT_S = 30.0
"""How long a path may take from set-up to its first answered ping (TLS, ARP)."""

Roles = list[tuple[str, psutil.Process]]
"""``(role, process)``: role is ``A:tap``, ``B:openvpn``...; side, then what it is."""


@dataclass
class BenchPath:
    """One way across: overlay addresses, how to set its MTU, which processes carry it.

    ``processes`` returns nothing for a path the kernel carries alone (veth); its CPU
    seconds per GB are then not attributable to processes and shown as "-".
    ``reference`` names the path this one's ratios are computed against.
    """

    name: str
    label: str
    addr_a: str
    addr_b: str
    set_mtu: Callable[[int], None]
    processes: Callable[[], Roles]
    reference: str | None = None
    notes: list[str] = field(default_factory=list)


def tap_pair(lab: Lab, taps: dict[str, str], addresses: tuple[str, str]
             ) -> Callable[[int], None]:
    """Give host A's and host B's TAP (``taps["A"]``, ``taps["B"]``) their overlay
    addresses and bring them up; the path's MTU setter (both TAPs alike)."""
    for side, ns, address in (("A", lab.ns_a, addresses[0]), ("B", lab.ns_b, addresses[1])):
        run("ip", "-n", ns, "addr", "add", f"{address}/{OVERLAY_PREFIX}", "dev", taps[side])
        run("ip", "-n", ns, "link", "set", taps[side], "up")

    def mtu(value: int) -> None:
        set_mtu(lab.ns_a, taps["A"], value)
        set_mtu(lab.ns_b, taps["B"], value)
    return mtu


def overlay_addresses(index: int) -> tuple[str, str]:
    """Host A's and host B's overlay address of path ``index`` (its own /28)."""
    base = 16 * index
    if not 0 <= base <= 240:
        raise ValueError(f"no /28 left for path {index}")
    return f"198.51.100.{base + 1}", f"198.51.100.{base + 2}"


def reachable(ns: str, address: str) -> bool:
    """True when ``address`` answers one ping from ``ns`` within 0.5 s."""
    return run(*in_ns(ns, "ping", "-n", "-q", "-c", "1", "-W", "0.5", address),
               check=False, timeout_s=5).returncode == 0


def wait_reachable(path: BenchPath, ns: str) -> None:
    """Wait until host B's end of ``path`` answers pings from ``ns`` (host A)."""
    wait_until(lambda: reachable(ns, path.addr_b), READY_TIMEOUT_S,
               f"{path.name}: {path.addr_b} to answer pings", interval_s=0.1)


def veth_path(lab: Lab, index: int) -> BenchPath:
    """A second veth pair between the hosts, at the overlay MTU: the kernel's limit.

    Not the underlay itself: the tunnels' TCP connections run over the underlay and must
    keep its MTU while this path is measured at 1500.
    """
    addr_a, addr_b = overlay_addresses(index)
    dev_a, dev_b = lab.ifname("va"), lab.ifname("vb")
    veth_pair(lab, dev_a, dev_b, (f"{addr_a}/{OVERLAY_PREFIX}", f"{addr_b}/{OVERLAY_PREFIX}"),
              1500)

    def mtu(value: int) -> None:
        set_mtu(lab.ns_a, dev_a, value)
        set_mtu(lab.ns_b, dev_b, value)

    path = BenchPath("veth", "veth pair (kernel only, the limit here)", addr_a, addr_b, mtu, list)
    wait_reachable(path, lab.ns_a)
    return path


def process_roles(side: str, root: psutil.Process, role_of: Callable[[psutil.Process], str]
                  ) -> Roles:
    """``root`` and all its descendants, each with its role on ``side``; processes that
    end while being listed are left out."""
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    roles: Roles = []
    for p in procs:
        try:
            roles.append((f"{side}:{role_of(p)}", p))
        except psutil.NoSuchProcess:
            continue
    return roles

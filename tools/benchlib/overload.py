"""No collapse under overload: iperf3 UDP at 1x and 2x what a path carried.

Issue 4's target: offering 2x what the path can carry still delivers at least 90 % of
its best throughput. Per path, MTU and repetition, right after the path's TCP run:

- the rate: that TCP run's throughput (same path, same MTU, seconds earlier, so the
  machine is as busy as it was for the figure it is a multiple of). 1x offers it as UDP,
  2x offers twice it;
- the datagrams: MTU - 28 bytes (IPv4 + UDP headers), don't-fragment set, so every
  datagram is one full-size frame on the overlay, as in the TCP run;
- the figures are the receiver's (``end.sum_received`` in the client's JSON, which
  iperf3 3.12 fills from the server's own count): bytes that arrived, datagrams lost;
- what the path delivered to host B (``arrived``): what iperf3 received plus the
  datagrams host B's UDP layer then dropped because the receiving socket was full
  (``receiver_overflows``): those crossed the path, and a receiver starved of CPU on a
  2-core machine is no measure of the tunnel (in a 20 s 2x run through etherws, host B
  dropped 739k datagrams of 1.64M delivered to its TAP this way);
- best = max(TCP throughput, arrived at 1x); the overload figure is arrived at 2x /
  best. A path that carries more UDP than TCP (OpenVPN: no TCP inside TCP) may exceed 1.

Both iperf3 sockets get SOCKET_BUFFER bytes (``--window``): a sender with the default
buffer blocks as soon as the tunnel's TAP queue holds its share, instead of offering 2x
and letting the kernel drop the excess at the TAP, and a receiver with the default one
drops bursts the tunnel did deliver (the buffer is capped by net.core.rmem_max). What
the receiving socket still drops is counted (``receiver_overflows``, from /proc/net/snmp
in host B) and added to what arrived: lost on the host, not in the tunnel. For the
same reason the sender may offer less than asked (``sent_gbit_s``): on 2 cores, a
tunnel whose processes spin under overload leaves the runnable iperf3 client no CPU,
which is part of what the figure is meant to catch, and reported as it is.

After each run the path must carry a ping again (``recovery_s``, the time it took): a
queue that took long to drain shows there, a tunnel that overload broke fails the bench.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from benchlib.lab import Lab
from benchlib.measure import iperf_client, iperf_report, metered
from benchlib.paths import BenchPath, reachable
from benchlib.proc import BenchError, in_ns, run, wait_until

FACTOR = 2.0
"""The overload: this many times the path's TCP throughput."""
IP_UDP_HEADERS = 28
SOCKET_BUFFER_MAX = 4 * 1024 * 1024
"""Room for ~3 ms of 9000-byte frames at 10 Gbit/s; capped by net.core.[rw]mem_max,
which iperf3 cannot exceed (it fails when the buffer it gets is smaller than asked)."""
RECOVERY_TIMEOUT_S = 30.0
SKIPPED = {"veth": "the kernel alone carries 20+ Gbit/s: iperf3's one UDP sender cannot "
                   "offer 2x that, the figure would measure iperf3"}
"""Paths without an overload measurement, and why."""


@dataclass
class UdpRun:
    """One iperf3 UDP run through a path at a given rate, with what it cost."""

    rate_gbit_s: float
    sent_gbit_s: float
    delivered_gbit_s: float
    delivered_bytes: int
    packets: int
    lost_packets: int
    loss_percent: float
    receiver_overflows: int
    """Datagrams the receiving iperf3 socket dropped (host B's UDP RcvbufErrors)."""
    seconds: float
    wall_s: float
    recovery_s: float
    """From the end of the run until a ping crossed the path again."""
    cpu_s: float | None
    cpu_by_role: dict[str, float] = field(default_factory=dict)
    rss_max: dict[str, int] = field(default_factory=dict)
    datagram_bytes: int = 0

    @property
    def arrived_gbit_s(self) -> float:
        """What the path delivered to host B: received, plus dropped by the full socket."""
        if not self.seconds:
            return self.delivered_gbit_s
        extra = self.receiver_overflows * self.datagram_bytes * 8 / self.seconds / 1e9
        return self.delivered_gbit_s + extra

    def as_dict(self) -> dict[str, Any]:
        """The JSON of one run, with what arrived."""
        return dict(asdict(self), arrived_gbit_s=self.arrived_gbit_s)


@dataclass
class Overload:
    """One repetition at one MTU: the TCP figure the rates come from, and both runs."""

    mtu: int
    tcp_gbit_s: float
    at_1x: UdpRun
    at_2x: UdpRun

    @property
    def best_gbit_s(self) -> float:
        """The most the path delivered: its TCP run or UDP at 1x (arrived)."""
        return max(self.tcp_gbit_s, self.at_1x.arrived_gbit_s)

    @property
    def ratio(self) -> float | None:
        """Arrived at 2x / best: 1.0 is no loss of throughput under overload."""
        best = self.best_gbit_s
        return self.at_2x.arrived_gbit_s / best if best else None

    def as_dict(self) -> dict[str, Any]:
        """The JSON of one run: the fields and both derived figures."""
        return dict(asdict(self), at_1x=self.at_1x.as_dict(), at_2x=self.at_2x.as_dict(),
                    best_gbit_s=self.best_gbit_s, ratio=self.ratio)


def socket_buffer_bytes() -> int:
    """SOCKET_BUFFER_MAX, or less when the kernel allows less (net.core.[rw]mem_max)."""
    limits = []
    for name in ("rmem_max", "wmem_max"):
        with open(f"/proc/sys/net/core/{name}") as f:
            limits.append(int(f.read()))
    return min(SOCKET_BUFFER_MAX, *limits)


def udp_overflows(ns: str) -> int:
    """Host ``ns``'s count of UDP datagrams dropped for a full receive buffer."""
    lines = [line.split() for line in run(*in_ns(ns, "cat", "/proc/net/snmp")).stdout
             .splitlines() if line.startswith("Udp:")]
    if len(lines) < 2 or "RcvbufErrors" not in lines[0]:
        raise BenchError(f"no UDP RcvbufErrors in {ns}'s /proc/net/snmp")
    return int(lines[1][lines[0].index("RcvbufErrors")])


def _recover(path: BenchPath, ns: str) -> float:
    """Seconds until a ping crosses ``path`` again; BenchError after RECOVERY_TIMEOUT_S."""
    t0 = time.monotonic()
    wait_until(lambda: reachable(ns, path.addr_b), RECOVERY_TIMEOUT_S,
               f"{path.name}: a ping to cross after UDP overload", interval_s=0.05)
    return time.monotonic() - t0


def udp_run(path: BenchPath, lab: Lab, mtu: int, rate_gbit_s: float,
            seconds: float) -> UdpRun:
    """UDP from host A to path's host B address at ``rate_gbit_s`` for ``seconds``."""
    cmd = iperf_client(lab.ns_a, path, seconds, "--udp", "--bitrate",
                       f"{rate_gbit_s * 1e9:.0f}", "--length", str(mtu - IP_UDP_HEADERS),
                       "--dont-fragment", "--window", str(socket_buffer_bytes()))
    overflows0 = udp_overflows(lab.ns_b)
    m = metered(path, cmd, seconds + 30)
    overflows = udp_overflows(lab.ns_b) - overflows0
    recovery_s = _recover(path, lab.ns_a)
    end = iperf_report(path, m.result)["end"]
    if "sum_received" not in end:  # older iperf3: the receiver's UDP figures are not there
        raise BenchError(f"{path.name}: iperf3 has no sum_received for UDP (3.12 has)")
    sent, got = end["sum_sent"], end["sum_received"]
    return UdpRun(rate_gbit_s=rate_gbit_s, sent_gbit_s=sent["bits_per_second"] / 1e9,
                  delivered_gbit_s=got["bits_per_second"] / 1e9,
                  delivered_bytes=int(got["bytes"]), packets=int(got["packets"]),
                  lost_packets=int(got["lost_packets"]),
                  loss_percent=float(got["lost_percent"]), receiver_overflows=overflows,
                  seconds=got["seconds"], wall_s=m.wall_s, recovery_s=recovery_s,
                  cpu_s=m.cpu_s, cpu_by_role=m.cpu_by_role, rss_max=m.rss_max,
                  datagram_bytes=mtu - IP_UDP_HEADERS)


def overload(path: BenchPath, lab: Lab, mtu: int, tcp_gbit_s: float,
             seconds: float) -> Overload:
    """UDP at 1x, then at FACTOR x, ``tcp_gbit_s`` (the path's TCP run just before)."""
    at_1x = udp_run(path, lab, mtu, tcp_gbit_s, seconds)
    at_2x = udp_run(path, lab, mtu, FACTOR * tcp_gbit_s, seconds)
    return Overload(mtu=mtu, tcp_gbit_s=tcp_gbit_s, at_1x=at_1x, at_2x=at_2x)

"""One measurement of one path: an iperf3 stream with CPU and RSS around it, and pings.

``metered`` runs any command that way (overload.py's UDP runs use it too). CPU seconds
are counted two ways, both over exactly the iperf3 run:

- per path: user + system seconds of the path's processes (psutil, from /proc/PID/stat),
  the processes present at the start plus any that appear during the run. It leaves out
  iperf3 (the same for every path) and kernel work done in softirq context outside those
  processes; a kernel-only path (veth) has none and shows "-".
- whole machine: busy time of all CPUs from /proc/stat (everything but idle and iowait).
  It includes iperf3, every path's kernel work and whatever else the machine runs: it is
  the only figure for the veth path and a cross-check for the others, but noisy on a
  shared machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from benchlib.paths import BenchPath, Roles
from benchlib.proc import Background, BenchError, in_ns, run

IPERF_PORT = 5201
GB = 1e9
RSS_INTERVAL_S = 0.25
_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


@dataclass
class Transfer:
    """One iperf3 run through one path, with what it cost."""

    gbit_s: float
    bytes: int
    retransmits: int | None
    seconds: float
    cpu_s: float | None
    host_cpu_s: float
    wall_s: float
    cpu_by_role: dict[str, float] = field(default_factory=dict)
    rss_max: dict[str, int] = field(default_factory=dict)
    uss: dict[str, int] = field(default_factory=dict)
    zmq_cpu_s: float = 0.0

    @property
    def cpu_s_per_gb(self) -> float | None:
        """CPU seconds of the path's processes per 10^9 bytes delivered."""
        return None if self.cpu_s is None or not self.bytes else self.cpu_s / (self.bytes / GB)

    @property
    def host_cpu_s_per_gb(self) -> float | None:
        """Busy CPU seconds of the whole machine per 10^9 bytes delivered."""
        return self.host_cpu_s / (self.bytes / GB) if self.bytes else None


@dataclass
class Rtt:
    """Round-trip times of one ping series, milliseconds."""

    avg_ms: float
    p99_ms: float
    sent: int
    received: int


def host_busy_s() -> float:
    """CPU seconds all CPUs have been busy since boot (/proc/stat; not idle, not iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest* are inside user/nice)
    busy = sum(fields[:8]) - fields[3] - fields[4]
    return busy * _TICK_S


def _zmq_s(pid: int) -> float:
    """CPU seconds of a process's ZeroMQ I/O threads (named ZMQbg/...) so far."""
    total = 0
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    stat = f.read()
                comm = stat[stat.index("(") + 1:stat.rindex(")")]
                if comm.startswith("ZMQbg"):
                    fields = stat[stat.rindex(")") + 2:].split()
                    total += int(fields[11]) + int(fields[12])  # utime, stime
    return total * _TICK_S


def _cpu_s(proc: psutil.Process) -> float | None:
    try:
        t = proc.cpu_times()
    except psutil.NoSuchProcess:
        return None
    return t.user + t.system


class CpuMeter:
    """CPU seconds a path's processes spend between ``start`` and ``stop``."""

    def __init__(self, path: BenchPath) -> None:
        self.path = path
        self._before: dict[int, float] = {}
        self._zmq_before: dict[int, float] = {}
        self.by_role: dict[str, float] = {}
        self.zmq_s = 0.0
        """Of the seconds spent, those of ZeroMQ's I/O threads."""

    def start(self) -> None:
        self._before = {}
        for _, p in self.path.processes():
            t = _cpu_s(p)
            if t is not None:
                self._before[p.pid] = t
                self._zmq_before[p.pid] = _zmq_s(p.pid)

    def stop(self) -> float | None:
        """Seconds spent, or None for a path without processes; ``by_role`` then holds
        the seconds of each role (which process the time went to)."""
        roles = self.path.processes()
        if not roles and not self._before:
            return None
        self.by_role = {}
        for role, p in roles:
            t = _cpu_s(p)
            if t is not None:  # a process born during the run counts from zero
                spent = t - self._before.get(p.pid, 0.0)
                self.by_role[role] = self.by_role.get(role, 0.0) + spent
                self.zmq_s += _zmq_s(p.pid) - self._zmq_before.get(p.pid, 0.0)
        return sum(self.by_role.values())


class RssSampler(threading.Thread):
    """Largest RSS of each role of a path, sampled every RSS_INTERVAL_S until ``done``."""

    def __init__(self, path: BenchPath) -> None:
        super().__init__(daemon=True, name=f"rss-{path.name}")
        self.path = path
        self.done = threading.Event()
        self.rss_max: dict[str, int] = {}
        self.uss: dict[str, int] = {}
        self._roles: Roles = path.processes()

    def sample(self) -> None:
        for role, p in self._roles:
            try:
                rss = p.memory_info().rss
            except psutil.NoSuchProcess:
                continue
            self.rss_max[role] = max(rss, self.rss_max.get(role, 0))

    def run(self) -> None:
        while True:
            self.sample()
            if self.done.wait(RSS_INTERVAL_S):
                break
        for role, p in self._roles:  # private memory once at the end (reads smaps)
            with contextlib.suppress(psutil.Error):
                self.uss[role] = p.memory_full_info().uss


def iperf_server(ns: str, log_dir: Path) -> Background:
    """A persistent iperf3 server in ``ns`` on every address (one test at a time, which
    is how the bench runs them)."""
    return Background(in_ns(ns, "iperf3", "--server", "--port", str(IPERF_PORT)),
                      Path(log_dir, "iperf3-server.log"))


def iperf_listening(ns: str) -> bool:
    """True once something listens on the iperf3 port in ``ns``."""
    res = run(*in_ns(ns, "ss", "-Hltn", f"sport = :{IPERF_PORT}"), check=False)
    return bool(res.stdout.strip())


@dataclass
class Metered:
    """A command run through a path, with what the path's processes spent meanwhile."""

    result: subprocess.CompletedProcess[str]
    wall_s: float
    host_cpu_s: float
    cpu_s: float | None
    cpu_by_role: dict[str, float]
    rss_max: dict[str, int]
    uss: dict[str, int] = field(default_factory=dict)
    zmq_cpu_s: float = 0.0


def metered(path: BenchPath, cmd: list[str], timeout_s: float) -> Metered:
    """Run ``cmd`` to its end, counting the CPU seconds of ``path``'s processes and of
    the whole machine and sampling their RSS meanwhile."""
    cpu = CpuMeter(path)
    rss = RssSampler(path)
    cpu.start()
    host0 = host_busy_s()
    t0 = time.monotonic()
    rss.start()
    try:
        res = run(*cmd, check=False, timeout_s=timeout_s)
    finally:
        rss.done.set()
        rss.join(timeout=5)
    wall_s = time.monotonic() - t0
    host_cpu = host_busy_s() - host0
    cpu_s = cpu.stop()
    return Metered(result=res, wall_s=wall_s, host_cpu_s=host_cpu, cpu_s=cpu_s,
                   cpu_by_role=cpu.by_role, rss_max=rss.rss_max, uss=rss.uss,
                   zmq_cpu_s=cpu.zmq_s)


def iperf_client(ns: str, path: BenchPath, seconds: float, *options: str) -> list[str]:
    """The iperf3 client command from ``ns`` to path's host B address, JSON output."""
    return in_ns(ns, "iperf3", "--client", path.addr_b, "--port", str(IPERF_PORT),
                 "--time", f"{seconds:g}", "--json", "--connect-timeout", "5000", *options)


def iperf_report(path: BenchPath, res: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """iperf3's JSON report; BenchError when there is none or it reports an error."""
    try:
        report: dict[str, Any] = json.loads(res.stdout)
    except json.JSONDecodeError:
        raise BenchError(f"{path.name}: iperf3 gave no JSON: {res.stderr.strip()}") from None
    if "error" in report:
        raise BenchError(f"{path.name}: iperf3: {report['error']}")
    return report


def transfer(path: BenchPath, ns: str, seconds: float) -> Transfer:
    """One TCP stream from ``ns`` (host A) to path's host B address for ``seconds``."""
    m = metered(path, iperf_client(ns, path, seconds), seconds + 30)
    report = iperf_report(path, m.result)
    received = report["end"]["sum_received"]
    sent = report["end"].get("sum_sent", {})
    return Transfer(gbit_s=received["bits_per_second"] / 1e9, bytes=int(received["bytes"]),
                    retransmits=sent.get("retransmits"), seconds=received["seconds"],
                    cpu_s=m.cpu_s, host_cpu_s=m.host_cpu_s, wall_s=m.wall_s,
                    cpu_by_role=m.cpu_by_role, rss_max=m.rss_max, uss=m.uss,
                    zmq_cpu_s=m.zmq_cpu_s)


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile by nearest rank (what ping statistics usually mean)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100), at least 1
    return ordered[int(rank) - 1]


def rtt(path: BenchPath, ns: str, count: int, interval_s: float) -> Rtt:
    """``count`` pings at ``interval_s`` from ``ns`` to path's host B address."""
    res = run(*in_ns(ns, "ping", "-n", "-c", str(count), "-i", f"{interval_s:g}",
                     "-W", "1", path.addr_b),
              check=False, timeout_s=count * interval_s + 30)
    times = [float(line.rsplit("time=", 1)[1].split()[0])
             for line in res.stdout.splitlines() if "time=" in line]
    if not times:
        raise BenchError(f"{path.name}: no ping answered: {res.stdout.strip()[-200:]}")
    return Rtt(avg_ms=sum(times) / len(times), p99_ms=percentile(times, 99), sent=count,
               received=len(times))


LOAD_RAMP_S = 1.0
"""How long the bulk stream runs before the pings start (TCP's slow start is over)."""


def loaded_rtt(path: BenchPath, ns: str, count: int, interval_s: float) -> Rtt:
    """``count`` pings at ``interval_s`` while one iperf3 TCP stream fills the path:
    how long interactive traffic waits behind a bulk transfer (queues in the path)."""
    seconds = LOAD_RAMP_S + count * interval_s + 2
    bulk = subprocess.Popen(iperf_client(ns, path, seconds), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(LOAD_RAMP_S)  # not a wait for a condition: the load must be running
        if bulk.poll() is not None:
            raise BenchError(f"{path.name}: the bulk stream ended early: "
                             f"{bulk.stderr.read() if bulk.stderr else ''}")
        return rtt(path, ns, count, interval_s)
    finally:
        try:
            bulk.communicate(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            bulk.kill()
            bulk.communicate()

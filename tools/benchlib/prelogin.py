"""What a connection costs a switch before its peer has logged in (run as root).

Starts two switches on loopback in temporary run directories, one forking its peer
workers from the zygote and one with ``--no-zygote`` (fork+exec, as before the zygote),
and measures on each, in the same run:

- start: connect, send an upgrade request, time to the ``101`` (median, 95th percentile);
- burst: connections answered a second when each asks for a path the switch does not
  serve (a worker each, answering 404), and the machine's CPU time per connection;
- pending: 32 connections that never finish their request head (8 from each of four
  loopback addresses, the per-address limit), then the RSS, USS and PSS of one peer
  worker and what the whole switch grew (USS).

Everything it made is removed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import psutil

from benchlib.proc import ctl, free_port

UPGRADE = (b"GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def _ask(port: int, path: bytes, source: str = "127.0.0.1") -> bytes:
    """One connection: the request, the first bytes of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10,
                                  source_address=(source, 0)) as s:
        s.sendall(UPGRADE % path)
        return s.recv(64)


def _cpu_s() -> float:
    t = psutil.cpu_times()
    return float(t.user + t.system + t.softirq + t.irq)


def _peer_workers(supervisor: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(supervisor).children()
            if "etherws.workers.peer" in " ".join(p.cmdline())]


def _uss(supervisor: int) -> int:
    total = 0
    for p in [psutil.Process(supervisor), *psutil.Process(supervisor).children()]:
        try:
            total += p.memory_full_info().uss
        except psutil.Error:
            pass
    return total


def measure(extra: list[str], work: str, rounds: int) -> dict[str, float]:
    """Start a switch with ``extra`` options, measure it, stop it."""
    rundir = tempfile.mkdtemp(prefix="run.", dir=work)
    os.chmod(rundir, 0o700)
    port = free_port()
    subprocess.run([sys.executable, "-m", "etherws.supervisor", "start", "--rundir", rundir,
                    "--host", "127.0.0.1", "--port", str(port), "--logfile",
                    os.path.join(rundir, "etherws.log"), *extra], check=True)
    supervisor = int(open(os.path.join(rundir, "supervisor.pid")).read())
    out: dict[str, float] = {}
    try:
        time.sleep(1.0)  # the zygote's first beat: until then peers are spawned
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            head = _ask(port, b"/")
            times.append((time.perf_counter() - start) * 1000)
            if not head.startswith(b"HTTP/1.1 101"):
                raise SystemExit(f"no 101: {head!r}")
        times.sort()
        out["start_ms"] = statistics.median(times)
        out["start_p95_ms"] = times[int(len(times) * 0.95) - 1]
        cpu, start = _cpu_s(), time.perf_counter()
        for _ in range(rounds * 4):
            if not _ask(port, b"/elsewhere").startswith(b"HTTP/1.1 404"):
                raise SystemExit("no 404 for a path not served")
        took = time.perf_counter() - start
        out["burst_per_s"] = rounds * 4 / took
        out["cpu_ms"] = (_cpu_s() - cpu) * 1000 / (rounds * 4)
        deadline = time.monotonic() + 20
        while ctl(rundir, "listport")["entries"]:  # the last ones are still going
            if time.monotonic() > deadline:
                raise SystemExit("peers did not go")
            time.sleep(0.1)
        before = _uss(supervisor)
        conns = []
        try:
            for i in range(32):
                c = socket.create_connection(("127.0.0.1", port), timeout=10,
                                             source_address=(f"127.0.0.{1 + i // 8}", 0))
                c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
                conns.append(c)
            deadline = time.monotonic() + 30
            while len(_peer_workers(supervisor)) < 32:
                if time.monotonic() > deadline:
                    raise SystemExit("32 pending connections did not get their workers")
                time.sleep(0.1)
            mem = [p.memory_full_info() for p in _peer_workers(supervisor)]
            out["rss_mib"] = statistics.median(m.rss for m in mem) / 2**20
            out["uss_mib"] = statistics.median(m.uss for m in mem) / 2**20
            out["pss_mib"] = statistics.median(m.pss for m in mem) / 2**20
            out["grown_mib"] = (_uss(supervisor) - before) / 2**20 / 32
        finally:
            for c in conns:
                c.close()
    finally:
        subprocess.run([sys.executable, "-m", "etherws.supervisor", "stop", "--rundir",
                        rundir], check=False)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30, help="upgrades timed (x4 for the burst)")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="etherws-prelogin.")
    try:
        rows = [("zygote", measure([], work, args.rounds)),
                ("fork+exec", measure(["--no-zygote"], work, args.rounds))]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'':10} {'101 in ms':>14} {'conn/s':>7} {'CPU ms':>7}  "
          f"{'one pending worker (MiB)':>26} {'switch grew':>12}")
    print(f"{'':10} {'median':>6} {'p95':>7} {'':>7} {'a conn':>7}  {'RSS':>8} {'USS':>8} "
          f"{'PSS':>8} {'MiB a conn':>12}")
    for name, r in rows:
        print(f"{name:10} {r['start_ms']:6.1f} {r['start_p95_ms']:7.1f} "
              f"{r['burst_per_s']:7.0f} {r['cpu_ms']:7.1f}  {r['rss_mib']:8.1f} "
              f"{r['uss_mib']:8.1f} {r['pss_mib']:8.1f} {r['grown_mib']:12.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

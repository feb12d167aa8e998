"""tools/bench-broker: the broker's switching alone, ring to ring, in frames per second.

Runs the broker's own code (``etherws.broker.service.Broker.switch``: each port's up
ring taken as views, ``Forwarder.forward`` with its ``Fdb``, each frame copied once into
each egress port's down ring) over real ring files and tables on /dev/shm, as the
broker maps them. This process plays the workers too: it fills port 1's up ring and
empties the down rings between passes; only the time inside ``switch`` is counted. No
wake-ups (the rings never run empty while a case runs): this is the pure switching
cost a regression would hide in.

``--memory`` instead measures a broker-like process (etherws.broker.service imported,
both tables and 8 ports' ring files mapped as the broker maps them) after filling the
default 8192-entry FDB through the same path: the "broker <= 60 MiB with a full FDB"
target, as RSS and as USS (its private memory; the ring files are shared with the
workers and said apart).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any, Iterator

import psutil

from etherws import ring
from etherws.broker.fdb import Fdb
from etherws.broker.service import Broker
from etherws.paths import RunDir
from etherws.runtime import rings, shm
from etherws.tables import PortKind

PROG = "tools/bench-broker"
BATCH = 64
"""Frames per ring take: the broker's FRAMES_PER_PORT."""
FDB_SIZE = 8192
"""The supervisor's default --fdb-size."""
PER_PORT = 1024
"""The broker's default --fdb-per-port."""
MIB = 1024 * 1024


def mac(n: int) -> bytes:
    """A locally administered unicast MAC numbered ``n`` (02:..)."""
    return bytes([0x02]) + n.to_bytes(5, "big")


def frame(dst: bytes, src: bytes, size: int) -> bytes:
    """An IPv4 Ethernet frame of ``size`` bytes (payload is zeros)."""
    return dst + src + b"\x08\x00" + bytes(size - 14)


class Switch:
    """A broker over ring files in a temporary run directory; this process as its workers."""

    def __init__(self, d: str, nports: int, capacity: int, per_port: int) -> None:
        self.rd = RunDir(d)
        ports = shm.create_port_table(self.rd.port_table, max(nports, 8))
        shm.create_fdb_table(self.rd.fdb_table, capacity)
        rings.make_bell(self.rd.broker_bell)
        self.workers: dict[int, rings.MappedRing] = {}
        for port in range(1, nports + 1):
            path = self.rd.ring(port, port)
            rings.create_ring(path, port, port)
            ports.claim(port - 1, port, PortKind.TAP, ring=port)
            self.workers[port] = rings.MappedRing(path)
        fdb = Fdb(shm.open_fdb_table(self.rd.fdb_table), 300.0, per_port)
        self.broker = Broker(self.rd, ports, fdb)
        self.broker.sync_ports()
        self.fdb = fdb
        self.out = 0  # frames the broker put into down rings
        self.switch_s = 0.0  # time spent in Broker.switch

    def feed(self, port: int, frames: list[bytes]) -> None:
        """Put ``frames`` into ``port``'s up ring and switch until the broker took them
        all, emptying the down rings as workers would."""
        up = self.workers[port].file.up
        todo = 0
        while todo < len(frames):
            while todo < len(frames) and up.put(frames[todo]):
                todo += 1
            up.commit()
            while up.tail != up.head:  # until the broker took all of it
                t0 = time.perf_counter()
                self.broker.switch(time.monotonic())
                self.switch_s += time.perf_counter() - t0
                self.drain()

    def drain(self) -> None:
        """Empty every down ring."""
        for m in self.workers.values():
            down = m.file.down
            while down.readable():
                self.out += len(down.take(4096))
            down.release()

    def close(self) -> None:
        """Unmap everything."""
        self.broker.close()
        for m in self.workers.values():
            m.close()


@contextlib.contextmanager
def switch(nports: int, capacity: int = FDB_SIZE, per_port: int = PER_PORT
           ) -> Iterator[Switch]:
    """A Switch in a temporary directory on /dev/shm, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="etwb-broker.", dir="/dev/shm") as d:
        sw = Switch(d, nports, capacity, per_port)
        try:
            yield sw
        finally:
            sw.close()


@dataclass
class CaseResult:
    """Frames per second of one case."""

    case: str
    frame_bytes: int
    frames: int
    seconds: float
    frames_per_s: float
    gbit_per_s: float
    us_per_batch: float
    out_frames_per_s: float


def _timed(name: str, sw: Switch, port: int, frames: list[bytes], size: int,
           seconds: float, once: bool = False) -> CaseResult:
    """Feed ``frames`` round and round for ``seconds`` of switching (once when ``once``)."""
    out0, s0, rounds = sw.out, sw.switch_s, 0
    while True:
        sw.feed(port, frames)
        rounds += 1
        elapsed = sw.switch_s - s0
        if once or elapsed >= seconds:
            break
    total = len(frames) * rounds
    return CaseResult(name, size, total, elapsed, total / elapsed,
                      total * size * 8 / elapsed / 1e9, elapsed / (total / BATCH) * 1e6,
                      (sw.out - out0) / elapsed)


def _unicast(size: int, seconds: float, full_fdb: bool) -> CaseResult:
    """Port 1 -> a station known on port 2 (optionally among 8190 other entries)."""
    with switch(8 if full_fdb else 2) as sw:
        a, b = mac(1), mac(2)
        sw.feed(2, [frame(a, b, 60)])  # learn b on port 2
        if full_fdb:  # fill every slot but the one a will take, no port over its limit
            n = 1000
            for port in (3, 4, 5, 6, 7, 8, 2, 1):
                mine = sw.fdb.port_count(port) + (port == 1)  # port 1 keeps room for a
                room = min(PER_PORT - mine, FDB_SIZE - 1 - len(sw.fdb))
                sw.feed(port, [frame(b"\xff" * 6, mac(n + k), 60) for k in range(room)])
                n += room
            assert len(sw.fdb) == FDB_SIZE - 1, len(sw.fdb)  # a's learn fills the last slot
        name = f"unicast to a known port, {size} B" + (", full FDB" if full_fdb else "")
        return _timed(name, sw, 1, [frame(b, a, size)] * (BATCH * 16), size, seconds)


def _flood(size: int, seconds: float, broadcast: bool, nports: int = 4) -> CaseResult:
    """Port 1 -> every other port: broadcast, or a unicast nobody has learned."""
    with switch(nports) as sw:
        dst = b"\xff" * 6 if broadcast else mac(999_999)
        what = "broadcast" if broadcast else "unknown unicast"
        return _timed(f"flood ({what}) to {nports - 1} ports, {size} B", sw, 1,
                      [frame(dst, mac(1), size)] * (BATCH * 16), size, seconds)


def _learning(count: int) -> CaseResult:
    """Every frame from a new source MAC (each learned once), to a known port."""
    with switch(2, count + 16, count + 16) as sw:
        dst = mac(0xFFFF_FFFF)
        sw.feed(2, [frame(mac(1), dst, 60)])
        frames = [frame(dst, mac(0x100_0000 + k), 64) for k in range(count)]
        return _timed(f"learning {count} new MACs, 64 B", sw, 1, frames, 64, 0.0, once=True)


def run_cases(seconds: float, learn_count: int) -> list[CaseResult]:
    """Every case of the micro-benchmark."""
    return [
        _unicast(1514, seconds, False),
        _unicast(64, seconds, False),
        _unicast(9014, seconds, False),
        _unicast(1514, seconds, True),
        _flood(1514, seconds, True),
        _flood(1514, seconds, False),
        _learning(learn_count),
    ]


def _rss_mib() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MiB, from /proc/self/status."""
    found = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) / 1024
    return found["VmRSS"], found["VmHWM"]


def memory_probe() -> dict[str, Any]:
    """A broker-like process with a full FDB: its RSS and USS before and after filling
    it, and the bytes of ring files it maps (shared with the workers)."""
    proc = psutil.Process()
    with switch(8) as sw:
        sw.drain()
        before = proc.memory_full_info()
        for port in range(1, 9):  # broadcasts from 1024 sources on each port
            sw.feed(port, [frame(b"\xff" * 6, mac(port << 16 | k), 60)
                           for k in range(PER_PORT)])
        full = len(sw.fdb) == FDB_SIZE
        after = proc.memory_full_info()
        entries = len(sw.fdb)
    return {"fdb_entries": entries, "fdb_capacity": FDB_SIZE, "full": full,
            "rss_before_fill_mib": round(before.rss / MIB, 1),
            "rss_mib": round(after.rss / MIB, 1), "uss_mib": round(after.uss / MIB, 1),
            "hwm_mib": round(_rss_mib()[1], 1),
            "ring_files_mib": round(8 * ring.file_size(ring.DEFAULT_CAPACITY) / MIB, 1)}


def _memory_subprocess() -> dict[str, Any] | None:
    """memory_probe in a fresh interpreter: this one is full of benchmark frames."""
    res = subprocess.run([sys.executable, "-m", "benchlib.broker", "--memory", "--json"],
                         capture_output=True, text=True, timeout=120, check=False)
    try:
        return dict(json.loads(res.stdout)["memory"])
    except (ValueError, KeyError):
        print(f"{PROG}: memory probe failed: {res.stderr.strip()[-300:]}", file=sys.stderr)
        return None


def _print(cases: list[CaseResult], memory: dict[str, Any] | None) -> None:
    header = ["case", "frames/s", "Gbit/s", "us/batch", "out frames/s"]
    rows = [header] + [[c.case, f"{c.frames_per_s:,.0f}", f"{c.gbit_per_s:.2f}",
                        f"{c.us_per_batch:.1f}", f"{c.out_frames_per_s:,.0f}"] for c in cases]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    print(f"{PROG}: the broker's switching, ring to ring (Broker.switch: Forwarder.forward "
          f"with Fdb, one copy per egress ring), {BATCH}-frame takes, one core")
    for r in rows:
        print("  ".join([r[0].ljust(widths[0])] + [c.rjust(w) for c, w in
                                                    zip(r[1:], widths[1:])]))
    if memory:
        print(f"memory: broker-like process with a full {memory['fdb_capacity']}-entry FDB "
              f"({memory['fdb_entries']} learned): RSS {memory['rss_mib']:.1f} MiB, USS "
              f"{memory['uss_mib']:.1f} MiB (before filling {memory['rss_before_fill_mib']:.1f},"
              f" peak {memory['hwm_mib']:.1f}; target <= 60); 8 ports' ring files "
              f"{memory['ring_files_mib']:.1f} MiB, shared with their workers")


def main(argv: list[str] | None = None) -> int:
    """Run the micro-benchmark; the exit status."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="0.2 s per case and 16384 MACs to learn (checks it runs)")
    p.add_argument("--seconds", type=float, default=2.0, metavar="S",
                   help="time per case (default 2)")
    p.add_argument("--memory", action="store_true",
                   help="only the full-FDB memory probe of a broker-like process")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    if args.memory:
        result: dict[str, Any] = {"memory": memory_probe()}
    else:
        seconds = 0.2 if args.quick else args.seconds
        cases = run_cases(seconds, 16384 if args.quick else 262144)
        result = {"cases": [asdict(c) for c in cases], "memory": _memory_subprocess()}
    if args.json:
        print(json.dumps(result, indent=2))
    elif args.memory:
        _print([], result["memory"])
    else:
        _print(cases, result["memory"])
    return 0


if __name__ == "__main__":
    sys.exit(main())

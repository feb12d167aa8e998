"""tools/bench-broker: the broker's hot path without network, in frames per second.

Runs the broker's own code (``etherws.broker.service.Broker``: ``handle``, which takes
``ipc.port_of`` and ``ipc.unpack`` on the way in and ``Forwarder.forward`` with its
``Fdb``, then ``deliver``, which packs each egress port's batch with ``ipc.pack``, a
flooded batch once) over in-memory tables; only the ZeroMQ send is replaced by counting
the frames. One ``time.monotonic()`` per MAX_MESSAGES_PER_WAKEUP messages, as ``drain``
reads the clock. ZeroMQ is left out on purpose: this is the pure code a regression
would hide in.

``--memory`` instead measures a broker-like process (etherws.broker.service and pyzmq
imported, a ROUTER bound, both tables mapped from tmpfs as the broker maps them) after
filling the default 8192-entry FDB through the same hot path: the "broker <= 60 MiB with
a full FDB" target.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any, cast

import zmq

from etherws import ipc
from etherws.broker.fdb import Fdb
from etherws.broker.service import MAX_MESSAGES_PER_WAKEUP, Broker
from etherws.tables import FdbTable, PortKind, PortTable

PROG = "tools/bench-broker"
BATCH = ipc.MAX_BATCH_FRAMES
"""Frames per message: the most a worker packs into one batch."""
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


def claim_ports(ports: PortTable, nports: int) -> None:
    """Ports 1..nports, TAP ports, in the first slots (as the supervisor adds them)."""
    for port in range(1, nports + 1):
        ports.claim(port - 1, port, PortKind.TAP)


class Switch(Broker):
    """The broker over in-memory tables, its ZeroMQ send replaced by counting."""

    def __init__(self, nports: int, capacity: int, per_port: int) -> None:
        ports = PortTable.format(bytearray(PortTable.size(nports)), nports)
        claim_ports(ports, nports)
        fdb = Fdb(FdbTable.format(bytearray(FdbTable.size(capacity)), capacity),
                  300.0, per_port)
        super().__init__(cast("zmq.Socket[bytes]", None), ports, fdb)  # _send never uses it
        self.sync_ports()
        self.sent = 0

    def _send(self, port: int, rid: bytes, msg: bytes, nframes: int) -> bool:
        self.sent += nframes
        return True

    def feed(self, messages: list[list[bytes]]) -> None:
        """Handle ``messages`` in order, reading the clock once per
        MAX_MESSAGES_PER_WAKEUP of them, as ``drain`` does (the real clock: what was
        learned before a case must not have aged out during it)."""
        step = MAX_MESSAGES_PER_WAKEUP
        for start in range(0, len(messages), step):
            now = time.monotonic()
            for parts in messages[start:start + step]:
                self.handle(parts, now)


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


def _messages(port: int, frames: list[bytes]) -> list[list[bytes]]:
    rid = ipc.routing_id(port)
    return [[rid, ipc.pack(frames[i:i + BATCH])] for i in range(0, len(frames), BATCH)]


def _timed(name: str, sw: Switch, messages: list[list[bytes]], size: int,
           seconds: float, once: bool = False) -> CaseResult:
    """Feed ``messages`` round and round for ``seconds`` (once only when ``once``)."""
    frames = sum(len(ipc.unpack(m[1])) for m in messages)
    sent0, rounds = sw.sent, 0
    t0 = time.perf_counter()
    while True:
        sw.feed(messages)
        rounds += 1
        elapsed = time.perf_counter() - t0
        if once or elapsed >= seconds:
            break
    total = frames * rounds
    return CaseResult(name, size, total, elapsed, total / elapsed,
                      total * size * 8 / elapsed / 1e9, elapsed / (total / BATCH) * 1e6,
                      (sw.sent - sent0) / elapsed)


def _unicast(size: int, seconds: float, full_fdb: bool) -> CaseResult:
    """Port 1 -> a station known on port 2 (optionally among 8190 other entries)."""
    nports = 8 if full_fdb else 2
    sw = Switch(nports, FDB_SIZE, PER_PORT)
    a, b = mac(1), mac(2)
    sw.feed(_messages(2, [frame(a, b, 60)]))  # learn b on port 2
    if full_fdb:  # fill every slot but the one a will take, no port over its limit
        n = 1000
        for port in (3, 4, 5, 6, 7, 8, 2, 1):
            mine = sw.fdb.port_count(port) + (port == 1)  # port 1 keeps room for a
            room = min(PER_PORT - mine, FDB_SIZE - 1 - len(sw.fdb))
            srcs = [frame(b"\xff" * 6, mac(n + k), 60) for k in range(room)]
            n += room
            sw.feed(_messages(port, srcs))
        assert len(sw.fdb) == FDB_SIZE - 1, len(sw.fdb)  # a's learn fills the last slot
    msgs = _messages(1, [frame(b, a, size)] * (BATCH * 16))
    name = f"unicast to a known port, {size} B" + (", full FDB" if full_fdb else "")
    return _timed(name, sw, msgs, size, seconds)


def _flood(size: int, seconds: float, broadcast: bool, nports: int = 4) -> CaseResult:
    """Port 1 -> every other port: broadcast, or a unicast nobody has learned."""
    sw = Switch(nports, FDB_SIZE, PER_PORT)
    dst = b"\xff" * 6 if broadcast else mac(999_999)
    msgs = _messages(1, [frame(dst, mac(1), size)] * (BATCH * 16))
    what = "broadcast" if broadcast else "unknown unicast"
    return _timed(f"flood ({what}) to {nports - 1} ports, {size} B", sw, msgs, size, seconds)


def _learning(count: int) -> CaseResult:
    """Every frame from a new source MAC (each learned once), to a known port."""
    sw = Switch(2, count + 16, count + 16)
    dst = mac(0xFFFF_FFFF)
    sw.feed(_messages(2, [frame(mac(1), dst, 60)]))
    msgs = _messages(1, [frame(dst, mac(0x100_0000 + k), 64) for k in range(count)])
    return _timed(f"learning {count} new MACs, 64 B", sw, msgs, 64, 0.0, once=True)


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
    """A broker-like process with a full FDB: its RSS before and after filling it."""
    from etherws.runtime import shm
    from etherws.broker.service import bind_router

    with tempfile.TemporaryDirectory(prefix="etwb-mem-", dir="/dev/shm") as d:
        claim_ports(shm.create_port_table(f"{d}/ports.tbl", 1024), 8)  # the supervisor's
        shm.create_fdb_table(f"{d}/fdb.tbl", FDB_SIZE)
        ctx = zmq.Context()
        try:
            sock = bind_router(ctx, f"ipc://{d}/data.sock")
        except zmq.ZMQError:
            ctx.term()
            raise
        try:
            fdb = Fdb(shm.open_fdb_table(f"{d}/fdb.tbl"), 300.0, PER_PORT)
            broker = Broker(sock, shm.open_port_table(f"{d}/ports.tbl"), fdb)
            broker.sync_ports()
            before, _ = _rss_mib()
            now = time.monotonic()
            for port in range(1, 9):  # broadcasts to ports without a worker: dropped
                srcs = [frame(b"\xff" * 6, mac(port << 16 | k), 60) for k in range(PER_PORT)]
                for i in range(0, len(srcs), BATCH):
                    broker.handle([ipc.routing_id(port), ipc.pack(srcs[i:i + BATCH])], now)
            del srcs
            full = len(fdb) == FDB_SIZE
            rss, hwm = _rss_mib()
            del broker
        finally:
            sock.close(linger=0)
            ctx.term()
    return {"fdb_entries": len(fdb), "fdb_capacity": FDB_SIZE, "full": full,
            "rss_before_fill_mib": round(before, 1), "rss_mib": round(rss, 1),
            "hwm_mib": round(hwm, 1)}


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
    print(f"{PROG}: the broker's hot path (Broker.handle: ipc.unpack, Forwarder.forward "
          f"with Fdb, ipc.pack), {BATCH}-frame batches, no network, one core")
    for r in rows:
        print("  ".join([r[0].ljust(widths[0])] + [c.rjust(w) for c, w in
                                                    zip(r[1:], widths[1:])]))
    if memory:
        print(f"memory: broker-like process with a full {memory['fdb_capacity']}-entry FDB "
              f"({memory['fdb_entries']} learned): RSS {memory['rss_mib']:.1f} MiB "
              f"(before filling {memory['rss_before_fill_mib']:.1f}, peak "
              f"{memory['hwm_mib']:.1f}; target <= 60)")


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

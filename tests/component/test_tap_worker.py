"""The TAP port worker against a real TAP, with this test process as the broker.

The kernel side is an AF_PACKET socket bound to the TAP in the root namespace: what it
sends, the kernel queues to the worker's fd; what the worker writes, it receives.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import zmq

from etherws import ipc, procargs, tuntap
from etherws.paths import RunDir
from etherws.shm import create_port_table
from etherws.tables import PortKind, PortSlot, PortTable
from etherws.workers.netdev import vlan_tag
from tests import support

pytestmark = pytest.mark.system  # real TAPs: needs root and /dev/net/tun

ROOT = Path(__file__).resolve().parents[2]
ETHERTYPE = 0x88B5  # IEEE "local experimental": nothing else on the host sends it
SOL_PACKET, PACKET_AUXDATA, PACKET_QDISC_BYPASS, PACKET_IGNORE_OUTGOING = 263, 8, 20, 23
PORT, SLOT = 1, 0


def make_frame(seq: int, size: int = 100) -> bytes:
    """A frame to a random unicast MAC, EtherType ETHERTYPE, ``seq`` in the payload."""
    head = b"\x02" + os.urandom(5) + b"\x02\x00\x00\x00\x00\x01" + struct.pack("!H", ETHERTYPE)
    body = struct.pack("!I", seq) + bytes(range(256)) * (size // 256 + 1)
    return (head + body)[:size]


def is_test_frame(frame: bytes) -> bool:
    """Ours: EtherType ETHERTYPE, untagged or behind one or two tags."""
    return any(frame[off:off + 2] == struct.pack("!H", ETHERTYPE) for off in (12, 16, 20))


class FakeBroker:
    """A ROUTER bound at the data endpoint, as the broker binds it."""

    def __init__(self, rundir: str) -> None:
        self.context = zmq.Context()
        self.sock = self.context.socket(zmq.ROUTER)
        for opt, value in ((zmq.ROUTER_MANDATORY, 1), (zmq.ROUTER_HANDOVER, 1),
                           (zmq.LINGER, 0), (zmq.SNDHWM, 1000), (zmq.RCVHWM, 1000),
                           (zmq.MAXMSGSIZE, ipc.MAX_MESSAGE)):
            self.sock.setsockopt(opt, value)
        self.sock.bind(RunDir(rundir).data_endpoint)
        self.received: list[bytes] = []  # every frame, ours or not, for the counters

    def collect(self, count: int, timeout_s: float = 10) -> list[bytes]:
        """Receive batches until ``count`` test frames arrived; returns those frames."""
        ours: list[bytes] = []
        end = support.deadline(timeout_s)
        while len(ours) < count:
            left_ms = int((end - time.monotonic()) * 1000)
            assert left_ms > 0 and self.sock.poll(left_ms), \
                f"broker got {len(ours)} of {count} frames"
            parts = self.sock.recv_multipart()
            assert len(parts) == 2 and parts[0] == ipc.routing_id(PORT)
            frames = ipc.unpack(parts[1])
            assert 1 <= len(frames) <= ipc.MAX_BATCH_FRAMES
            self.received += frames
            ours += [f for f in frames if is_test_frame(f)]
        return ours

    def drain(self) -> int:
        """Receive every batch waiting now; the number of test frames in them."""
        ours = 0
        while self.sock.poll(0):
            frames = ipc.unpack(self.sock.recv_multipart()[1])
            self.received += frames
            ours += sum(map(is_test_frame, frames))
        return ours

    def send(self, frames: list[bytes], timeout_s: float = 10) -> None:
        """Send one batch to the port, waiting until the worker has connected."""
        message = [ipc.routing_id(PORT), ipc.pack(frames)]
        end = support.deadline(timeout_s)
        while True:
            try:
                self.sock.send_multipart(message, zmq.NOBLOCK)
                return
            except zmq.ZMQError as e:  # EHOSTUNREACH until the DEALER is connected
                if e.errno != zmq.EHOSTUNREACH or time.monotonic() > end:
                    raise
                time.sleep(0.02)

    def close(self) -> None:
        """Close the socket and the context."""
        self.sock.close(linger=0)
        self.context.term()


class KernelEnd:
    """An AF_PACKET socket on an interface: the kernel side of a port."""

    def __init__(self, ifname: str, bypass_qdisc: bool = False) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_NONBLOCK, 0)
        self.sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        self.sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        if bypass_qdisc:  # straight to the driver: its drops come back as ENOBUFS
            self.sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
        self.sock.bind((ifname, 3))  # ETH_P_ALL

    def send(self, frame: bytes) -> bool:
        """Send one frame; False when the driver dropped it (ENOBUFS)."""
        try:
            self.sock.send(frame)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.ENOBUFS):
                return False
            raise
        return True

    def collect(self, count: int, timeout_s: float = 10) -> list[bytes]:
        """Receive until ``count`` test frames arrived (VLAN tags re-inserted)."""
        ours: list[bytes] = []
        end = support.deadline(timeout_s)
        while len(ours) < count:
            left = end - time.monotonic()
            assert left > 0, f"kernel side got {len(ours)} of {count} frames"
            if not select.select([self.sock], [], [], left)[0]:
                continue
            data, anc, _flags, _addr = self.sock.recvmsg(70000, 256)
            tag = vlan_tag(anc)
            frame = data[:12] + tag + data[12:] if tag else data
            if is_test_frame(frame):
                ours.append(frame)
        return ours

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


def prepare_link(name: str) -> None:
    """No IPv6 (no router solicitations, MLD reports: a quiet link), then up."""
    conf = Path(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6")
    if conf.exists():
        conf.write_text("1")
    support.run("ip", "link", "set", name, "up")


def ifindex(name: str) -> int:
    """The interface's index."""
    return socket.if_nametoindex(name)


def rss_kib(pid: int) -> int:
    """Resident set size of a process, KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


# --- fixtures -------------------------------------------------------------------
@pytest.fixture
def table(rundir: str) -> PortTable:
    """The port table with slot 0 claimed for port 1."""
    t = create_port_table(RunDir(rundir).port_table, 8)
    t.claim(SLOT, PORT, PortKind.TAP)
    return t


@pytest.fixture
def broker(rundir: str) -> Iterator[FakeBroker]:
    """This test process as the broker."""
    b = FakeBroker(rundir)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def tap() -> Iterator[str]:
    """A persistent TAP, up, deleted afterwards."""
    name = support.unique("etwt")
    tuntap.create_persistent_tap(name)
    try:
        prepare_link(name)
        yield name
    finally:
        tuntap.delete_persistent_tap(name)


class Worker(subprocess.Popen[bytes]):
    """A port worker process whose stderr goes to a file."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        with open(log, "w") as err:
            super().__init__(argv, cwd=ROOT, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=err)

    def stderr_text(self) -> str:
        """What the worker wrote to stderr so far."""
        return self.log.read_text()


class Spawner:
    """Starts port workers of one kind as port PORT in slot SLOT; stops them all."""

    def __init__(self, rundir: str, logdir: Path, module: str) -> None:
        self.rundir, self.logdir, self.module = rundir, logdir, module
        self.procs: list[Worker] = []

    def __call__(self, target: str) -> Worker:
        argv = [sys.executable, "-m", self.module, "--rundir", self.rundir, "--parent-pid",
                str(os.getpid()), "--port", str(PORT), "--slot", str(SLOT), target]
        proc = Worker(argv, self.logdir / f"worker{len(self.procs)}.err")
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        """SIGTERM (then SIGKILL) every worker started here."""
        for p in self.procs:
            support.kill_process(p)


@pytest.fixture
def spawn(rundir: str, tmp_path: Path) -> Iterator[Spawner]:
    """Start TAP workers; all stopped afterwards."""
    s = Spawner(rundir, tmp_path, "etherws.workers.tap")
    try:
        yield s
    finally:
        s.stop_all()


def slot(table: PortTable) -> PortSlot:
    """The port's slot now."""
    return table.read(SLOT)


def wait_running(table: PortTable, proc: Worker, after_ns: int = 0) -> None:
    """Until the worker has opened its medium (its first heartbeat)."""
    def beating() -> bool:
        assert proc.poll() is None, proc.stderr_text()
        return slot(table).heartbeat_ns > after_ns
    support.wait_until(beating, 10, "the worker's first heartbeat")


def wait_counters(table: PortTable, broker: FakeBroker, tx: list[bytes]) -> None:
    """Until the slot's rx matches what the broker got and tx what it sent."""
    want = (len(broker.received), sum(map(len, broker.received)),
            len(tx), sum(map(len, tx)))
    support.wait_until(
        lambda: (lambda s: (s.rx, s.rx_bytes, s.tx, s.tx_bytes) == want)(slot(table)),
        5, f"counters rx/rx_bytes/tx/tx_bytes == {want}, have {slot(table)}")


# --- tests ----------------------------------------------------------------------
def test_frames_flow_both_ways_and_are_counted(tap: str, table: PortTable,
                                               broker: FakeBroker, spawn: Spawner) -> None:
    proc = spawn(tap)
    wait_running(table, proc)
    kernel = KernelEnd(tap)
    try:
        up = [make_frame(i, size) for i, size in enumerate([14, 60, 61, 1514] * 10)]
        for f in up:
            assert kernel.send(f)
        assert broker.collect(len(up)) == up

        down = [make_frame(1000 + i, 64 + i * 20) for i in range(70)]
        batches = [down[:1], down[1:65], down[65:]]
        for batch in batches:
            broker.send(batch)
        assert kernel.collect(len(down)) == down
        wait_counters(table, broker, down)
        s = slot(table)
        assert (s.errors, s.drops) == (0, 0)
        support.wait_until(lambda: slot(table).heartbeat_ns > s.heartbeat_ns, 2,
                           "the heartbeat to advance")
        assert time.monotonic_ns() - slot(table).heartbeat_ns < 1_000_000_000
    finally:
        kernel.close()


def test_bad_frames_and_messages_from_the_broker_are_counted(
        tap: str, table: PortTable, broker: FakeBroker, spawn: Spawner) -> None:
    proc = spawn(tap)
    wait_running(table, proc)
    kernel = KernelEnd(tap)
    try:
        good = make_frame(1)
        broker.send([b"\x02" * 10, good])  # the kernel refuses a frame shorter than 14 bytes
        broker.sock.send_multipart([ipc.routing_id(PORT), b"\x09not a batch"])
        assert kernel.collect(1) == [good]
        support.wait_until(lambda: (slot(table).drops, slot(table).errors) == (1, 1), 5,
                           "one drop and one error")
        assert (slot(table).tx, slot(table).tx_bytes) == (1, len(good))
    finally:
        kernel.close()


@pytest.mark.parametrize("target, message", [
    ("lo", "cannot attach to TAP 'lo': it exists and is not a single-queue TAP"),
    ("x" * 16, "invalid interface name"),
    ("a/b", "invalid interface name"),
])
def test_unusable_target_exits_with_config_error(target: str, message: str,
                                                 table: PortTable, spawn: Spawner) -> None:
    proc = spawn(target)
    assert proc.wait(timeout=10 * support.SCALE) == procargs.EXIT_CONFIG
    lines = proc.stderr_text().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert slot(table).heartbeat_ns == 0


def test_slot_of_another_port_is_refused(tap: str, table: PortTable, rundir: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "etherws.workers.tap", "--rundir", rundir, "--parent-pid",
         str(os.getpid()), "--port", "2", "--slot", str(SLOT), tap],
        cwd=ROOT, capture_output=True, text=True, timeout=10 * support.SCALE)
    assert proc.returncode == procargs.EXIT_CONFIG
    assert "slot 0 of the port table belongs to port 1, not 2" in proc.stderr


def test_sigterm_exits_zero_and_the_tap_stays(tap: str, table: PortTable,
                                              broker: FakeBroker, spawn: Spawner) -> None:
    proc = spawn(tap)
    wait_running(table, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5 * support.SCALE) == 0
    assert "stopped by signal" in proc.stderr_text()
    assert support.link_exists(tap)


def test_respawn_after_kill9_reattaches_and_continues_counters(
        tap: str, table: PortTable, broker: FakeBroker, spawn: Spawner) -> None:
    index = ifindex(tap)
    kernel = KernelEnd(tap)
    try:
        first = spawn(tap)
        wait_running(table, first)
        up, down = [make_frame(1), make_frame(3)], [make_frame(2), make_frame(4)]
        kernel.send(up[0])
        assert broker.collect(1) == up[:1]
        broker.send(down[:1])
        assert kernel.collect(1) == down[:1]
        # The kernel has the frame before the worker adds it to tx: wait, then kill.
        wait_counters(table, broker, down[:1])
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=5 * support.SCALE)
        assert ifindex(tap) == index  # persistent: the device outlived its worker

        killed_at = time.monotonic_ns()
        second = spawn(tap)
        wait_running(table, second, after_ns=killed_at)
        assert ifindex(tap) == index
        kernel.send(up[1])
        assert broker.collect(1) == up[1:]
        broker.send(down[1:])
        assert kernel.collect(1) == down[1:]
        wait_counters(table, broker, down)  # the second worker continued the first's
    finally:
        kernel.close()


def test_deleted_tap_ends_the_worker(tap: str, table: PortTable, broker: FakeBroker,
                                     spawn: Spawner) -> None:
    proc = spawn(tap)
    wait_running(table, proc)
    support.run("ip", "link", "del", tap)
    assert proc.wait(timeout=5 * support.SCALE) == 1
    assert f"TAP {tap} was deleted" in proc.stderr_text()


def test_broker_restart_traffic_resumes(tap: str, table: PortTable, rundir: str,
                                        spawn: Spawner) -> None:
    first = FakeBroker(rundir)
    kernel = KernelEnd(tap)
    try:
        proc = spawn(tap)
        wait_running(table, proc)
        kernel.send(make_frame(1))
        first.collect(1)
        first.close()
        beat = slot(table).heartbeat_ns
        support.wait_until(lambda: slot(table).heartbeat_ns > beat, 2,
                           "a heartbeat without a broker")
        second = FakeBroker(rundir)
        try:
            second.send([make_frame(2)])  # waits for the worker to reconnect
            kernel.collect(1)
            kernel.send(make_frame(3))
            assert len(second.collect(1)) == 1
            assert proc.poll() is None
        finally:
            second.close()
    finally:
        kernel.close()


def test_stalled_broker_drops_early_and_memory_stays_bounded(
        tap: str, table: PortTable, broker: FakeBroker, spawn: Spawner) -> None:
    """The broker reads nothing: the worker stops reading, the kernel drops, we count."""
    proc = spawn(tap)
    wait_running(table, proc)
    kernel = KernelEnd(tap, bypass_qdisc=True)
    try:
        offered = refused = 0
        rss: list[int] = []
        for _ in range(8):
            for i in range(5000):
                offered += 1
                refused += not kernel.send(make_frame(i, 1000))
            rss.append(rss_kib(proc.pid))
        assert refused > 0, "the worker never stopped reading"
        support.wait_until(lambda: slot(table).drops >= refused, 3,
                           f"{refused} kernel drops counted, have {slot(table).drops}")
        beat = slot(table).heartbeat_ns
        support.wait_until(lambda: slot(table).heartbeat_ns > beat, 2,
                           "a heartbeat while stalled")
        # Bounded by the high-water mark: no growth once the queue is full.
        assert rss[-1] < 200_000 and rss[-1] - rss[len(rss) // 2] < 20_000, rss

        # The broker catches up: every frame offered was delivered or counted as a drop.
        delivered = 0

        def accounted() -> bool:
            nonlocal delivered
            delivered += broker.drain()
            return delivered + slot(table).drops == offered
        support.wait_until(accounted, 20, f"{offered} frames delivered or dropped")
        last = make_frame(99)
        assert kernel.send(last)
        assert broker.collect(1) == [last]
    finally:
        kernel.close()


def test_sigterm_while_stalled_exits_promptly(tap: str, table: PortTable,
                                              broker: FakeBroker, spawn: Spawner) -> None:
    proc = spawn(tap)
    wait_running(table, proc)
    kernel = KernelEnd(tap, bypass_qdisc=True)
    try:
        for i in range(20000):
            kernel.send(make_frame(i, 1000))
        support.wait_until(lambda: slot(table).drops > 0, 3, "the worker to be stalled")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=2 * support.SCALE) == 0
    finally:
        kernel.close()

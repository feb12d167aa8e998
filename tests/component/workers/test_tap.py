"""The TAP port worker against a real TAP, with this test process as the broker.

The kernel side is an AF_PACKET socket bound to the TAP in the root namespace: what it
sends, the kernel queues to the worker's fd; what the worker writes, it receives. The
fakes and the shared fixtures are in ``fakes`` and ``conftest``.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
import zmq

from etherws import session
from etherws.paths import RunDir
from etherws.runtime import procargs, tuntap
from etherws.tables import BrokerView, PortKind, PortTable
from etherws.workers.link import SEND_FRAMES_PER_WAKEUP
from tests import support
from tests.component.fakes import (
    PORT,
    RING_GENERATION,
    ROOT,
    SLOT,
    WORKER_MODULES,
    FakeBroker,
    KernelEnd,
    Spawner,
    assert_config_error,
    make_frame,
    prepare_link,
    slot,
    wait_counters,
    worker_argv,
)

pytestmark = pytest.mark.system  # real TAPs: needs root and /dev/net/tun

OpenKernelEnd = Callable[..., KernelEnd]


def ifindex(name: str) -> int:
    """The interface's index."""
    return socket.if_nametoindex(name)


def rss_kib(pid: int) -> int:
    """Resident set size of a process, KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def wait_heartbeat(table: PortTable, what: str) -> None:
    """Until the slot's heartbeat is newer than it is now (within 2 s)."""
    beat = slot(table).heartbeat_ns
    support.wait_until(lambda: slot(table).heartbeat_ns > beat, 2, what)


# --- fixtures -------------------------------------------------------------------
@pytest.fixture
def port_kind() -> PortKind:
    """TAP workers, in a TAP slot."""
    return PortKind.TAP


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


# --- tests ----------------------------------------------------------------------
def test_frames_flow_both_ways_and_are_counted(tap: str, table: PortTable, broker: FakeBroker,
                                               spawn: Spawner,
                                               kernel_end: OpenKernelEnd) -> None:
    spawn.running(tap)
    kernel = kernel_end(tap)
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
    wait_heartbeat(table, "the heartbeat to advance")
    assert time.monotonic_ns() - slot(table).heartbeat_ns < 1_000_000_000


def test_bad_frames_and_messages_from_the_broker_are_counted(
        tap: str, table: PortTable, broker: FakeBroker, spawn: Spawner,
        kernel_end: OpenKernelEnd) -> None:
    spawn.running(tap)
    kernel = kernel_end(tap)
    good = make_frame(1)
    broker.send([b"\x02" * 10, good])  # the kernel refuses a frame shorter than 14 bytes
    broker.send_broken_record()
    assert kernel.collect(1) == [good]
    support.wait_until(lambda: (slot(table).drops, slot(table).errors) == (1, 1), 5,
                       "one drop and one error")
    assert (slot(table).tx, slot(table).tx_bytes) == (1, len(good))


@pytest.mark.parametrize("target, message", [
    ("lo", "cannot attach to TAP 'lo': it exists and is not a single-queue TAP"),
    ("x" * 16, "invalid interface name"),
    ("a/b", "invalid interface name"),
])
def test_unusable_target_exits_with_config_error(target: str, message: str,
                                                 table: PortTable, spawn: Spawner) -> None:
    assert_config_error(spawn(target), message)
    assert slot(table).heartbeat_ns == 0


def test_slot_of_another_port_is_refused(tap: str, table: PortTable, rundir: str) -> None:
    proc = subprocess.run(
        worker_argv(WORKER_MODULES[PortKind.TAP], rundir, tap, port=2),
        cwd=ROOT, capture_output=True, text=True, timeout=10 * support.SCALE)
    assert proc.returncode == procargs.EXIT_CONFIG
    assert "slot 0 of the port table belongs to port 1, not 2" in proc.stderr


def test_sigterm_exits_zero_and_the_tap_stays(tap: str, table: PortTable,
                                              broker: FakeBroker, spawn: Spawner) -> None:
    proc = spawn.running(tap)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5 * support.SCALE) == 0
    assert "stopped by signal" in proc.stderr_text()
    assert support.link_exists(tap)


def test_respawn_after_kill9_reattaches_and_continues_counters(
        tap: str, table: PortTable, broker: FakeBroker, spawn: Spawner,
        kernel_end: OpenKernelEnd) -> None:
    index = ifindex(tap)
    kernel = kernel_end(tap)
    first = spawn.running(tap)
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
    spawn.running(tap, after_ns=killed_at)
    assert ifindex(tap) == index
    kernel.send(up[1])
    assert broker.collect(1) == up[1:]
    broker.send(down[1:])
    assert kernel.collect(1) == down[1:]
    wait_counters(table, broker, down)  # the second worker continued the first's


def test_deleted_tap_ends_the_worker(tap: str, table: PortTable, broker: FakeBroker,
                                     spawn: Spawner) -> None:
    proc = spawn.running(tap)
    support.run("ip", "link", "del", tap)
    assert proc.wait(timeout=5 * support.SCALE) == 1
    assert f"TAP {tap} was deleted" in proc.stderr_text()


def test_broker_restart_traffic_resumes(tap: str, table: PortTable, rundir: str,
                                        spawn: Spawner, kernel_end: OpenKernelEnd) -> None:
    first = FakeBroker(rundir)
    kernel = kernel_end(tap)
    proc = spawn.running(tap)
    kernel.send(make_frame(1))
    first.collect(1)
    first.close()
    wait_heartbeat(table, "a heartbeat without a broker")
    second = FakeBroker(rundir)
    try:
        second.send([make_frame(2)])  # waits for the worker to reconnect
        kernel.collect(1)
        kernel.send(make_frame(3))
        assert len(second.collect(1)) == 1
        assert proc.poll() is None
    finally:
        second.close()


def test_stalled_broker_drops_early_and_memory_stays_bounded(
        tap: str, table: PortTable, broker: FakeBroker, spawn: Spawner,
        kernel_end: OpenKernelEnd) -> None:
    """The broker reads nothing: the worker stops reading, the kernel drops, we count."""
    proc = spawn.running(tap)
    kernel = kernel_end(tap, bypass_qdisc=True)
    offered = refused = 0
    rss: list[int] = []
    for _ in range(8):
        for i in range(5000):
            offered += 1
            refused += not kernel.send(make_frame(i, 1000))
        rss.append(rss_kib(proc.pid))
    assert refused > 0, "the worker never stopped reading"
    support.wait_until(lambda: slot(table).drops >= refused, 10,
                       f"{refused} kernel drops counted, have {slot(table).drops}")
    wait_heartbeat(table, "a heartbeat while stalled")
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


def test_a_pause_asked_by_the_broker_leaves_the_frames_to_the_kernel(
        tap: str, table: PortTable, broker: FakeBroker, spawn: Spawner,
        kernel_end: OpenKernelEnd) -> None:
    """The broker found the port its frames go to full (a hold in its slot): the worker reads
    nothing until then, though the broker itself takes everything."""
    spawn.running(tap)
    kernel = kernel_end(tap, bypass_qdisc=True)
    first = make_frame(1)
    assert kernel.send(first)
    assert broker.collect(1) == [first]  # connected and reading
    BrokerView(table).hold(SLOT, time.monotonic_ns() + 3600 * 10**9)
    sent = delivered = 0
    while slot(table).drops == 0:  # the TAP's queue overflows: the worker is not reading
        assert sent < 100_000, "the kernel never dropped a frame"
        for i in range(500):
            sent += kernel.send(make_frame(i, 1000))
        delivered += broker.drain()
    # The pause may have begun just after a read: at most one batch got through.
    assert delivered <= SEND_FRAMES_PER_WAKEUP
    BrokerView(table).hold(SLOT, 0)  # the pause is over: frames flow again
    support.wait_until(lambda: broker.drain() > 0, 10, "frames after the pause")


def test_sigterm_while_stalled_exits_promptly(tap: str, table: PortTable, broker: FakeBroker,
                                              spawn: Spawner,
                                              kernel_end: OpenKernelEnd) -> None:
    proc = spawn.running(tap)
    kernel = kernel_end(tap, bypass_qdisc=True)
    for i in range(20000):
        kernel.send(make_frame(i, 1000))
    support.wait_until(lambda: slot(table).drops > 0, 10, "the worker to be stalled")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=2 * support.SCALE) == 0


# --- the session with the broker -------------------------------------------------------
@pytest.fixture
def session_router(rundir: str) -> Iterator[zmq.Socket[bytes]]:
    """This test as the broker's session ROUTER."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    s = ctx.socket(zmq.ROUTER)
    s.setsockopt(zmq.LINGER, 0)
    s.bind(RunDir(rundir).session_endpoint)
    try:
        yield s
    finally:
        s.close(linger=0)
        support.term_context(ctx, "the session router's context")


def next_message(router: zmq.Socket[bytes]) -> tuple[bytes, session.Message]:
    assert router.poll(int(10 * support.SCALE * 1000)), "the worker said nothing"
    rid, data = router.recv_multipart()
    return rid, session.decode(data)


def test_the_worker_attaches_again_to_a_new_broker_and_detaches_on_stop(
        tap: str, table: PortTable, broker: FakeBroker, spawn: Spawner,
        session_router: zmq.Socket[bytes]) -> None:
    proc = spawn.running(tap)
    _, first = next_message(session_router)
    assert first == session.Message(session.ATTACH, PORT, RING_GENERATION, proc.pid)
    BrokerView(table).started(4242)  # a restarted broker
    _, again = next_message(session_router)
    assert again == first
    proc.send_signal(signal.SIGTERM)
    _, bye = next_message(session_router)
    assert bye == session.Message(session.DETACH, PORT, RING_GENERATION, proc.pid)
    assert proc.wait(timeout=5 * support.SCALE) == 0


def test_a_worker_the_broker_refuses_exits_with_the_reason(
        tap: str, table: PortTable, broker: FakeBroker, spawn: Spawner,
        session_router: zmq.Socket[bytes]) -> None:
    proc = spawn(tap)
    rid, _ = next_message(session_router)
    no = session.Message(session.REFUSED, PORT, reason="port 1 has a live worker already")
    session_router.send_multipart([rid, session.encode(no)])
    assert proc.wait(timeout=5 * support.SCALE) == procargs.EXIT_CONFIG
    assert "the broker refused port 1: port 1 has a live worker already" in proc.stderr_text()


def test_frames_queued_in_the_down_ring_while_the_worker_is_down_are_delivered_after(
        tap: str, table: PortTable, broker: FakeBroker, spawn: Spawner,
        kernel_end: OpenKernelEnd) -> None:
    kernel = kernel_end(tap)
    first = spawn.running(tap)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=5 * support.SCALE)
    queued = [make_frame(i) for i in range(20)]
    broker.send(queued)  # into the down ring; no worker runs
    spawn.running(tap, after_ns=time.monotonic_ns())
    assert kernel.collect(len(queued)) == queued

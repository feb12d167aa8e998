"""The real broker process, with this test playing three port workers on their rings.

Nothing here sleeps for correctness. To show that a frame did *not* go somewhere, a test
first makes sure the broker has handled it, then sends a marker that must be the next
thing the port receives: a port's down ring is a FIFO, so anything the broker had put
there earlier would arrive first. "The broker has handled it" is seen either from a
frame reaching another port or through a barrier:

- ``barrier(port)``: the broker gives an up ring's space back (its published tail) only
  after switching what it took, so a tail equal to the head means all of it is handled;
- ``table_barrier()``: a flush of a port that does not exist is served in the same loop
  iteration as, and after, the re-read of a changed port table.
"""

from __future__ import annotations

import collections
import contextlib
import os
import random
import select
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import zmq

import etherws
from etherws import ring, session
from etherws.broker.service import HOLD_NS
from etherws.loopguard import is_probe
from etherws.paths import RunDir
from etherws.runtime import rings, shm
from etherws.tables import (
    PortKind,
    PortSlot,
    fdb_key,
    split_key,
)
from tests import support

ROOT = str(Path(etherws.__file__).resolve().parent.parent)
TEST_TYPE = b"\x88\xb5"
SYNC_TYPE = b"\x88\xb6"
BCAST = b"\xff" * 6
NO_SUCH_PORT = 999
WAIT_S = 10.0


def mac(n: int) -> bytes:
    return bytes([2, 0, 0, 0, 0, n])


A, B, C = mac(1), mac(2), mac(3)


def eth(dst: bytes, src: bytes, tag: str, size: int = 0) -> bytes:
    """A test frame; ``tag`` tells frames apart in assertion messages."""
    payload = tag.encode()
    return dst + src + TEST_TYPE + payload + bytes(max(0, size - 14 - len(payload)))


class WorkerEnd:
    """This test as one port's worker: the producer of its up ring, the consumer of its
    down ring, waiting on its own doorbell."""

    def __init__(self, rd: RunDir, port: int, generation: int) -> None:
        path = rd.ring(port, generation)
        self.mapped = rings.MappedRing(path)
        self.up = self.mapped.file.up
        self.down = self.mapped.file.down
        self.bell = rings.Bell(rings.bell_path(path))
        self.broker_bell = rings.Bell(rd.broker_bell)

    def send(self, frames: list[bytes]) -> None:
        """Put and publish frames, and ring the broker if it sleeps."""
        end = support.deadline(WAIT_S)
        for f in frames:
            while not self.up.put(f):  # full: publish, and wait for the broker like a worker
                assert time.monotonic() < end, "the broker never made room in the up ring"
                self.up.commit()
                self.broker_bell.ring()
                select.select([], [], [], 0.001)
        self.up.commit()
        rings.fence()
        if self.up.armed:
            self.broker_bell.ring()

    def take(self) -> list[bytes]:
        frames = [bytes(f) for f in self.down.take(10_000)]
        self.down.release()
        return frames

    def wait(self, timeout_ms: int) -> None:
        """Sleep until the broker rings or ``timeout_ms`` passes."""
        self.down.arm(True)
        rings.fence()
        if not self.down.readable():
            p = select.poll()
            p.register(self.bell.fileno(), select.POLLIN)
            p.poll(timeout_ms)
        self.down.arm(False)
        self.bell.drain()

    def close(self) -> None:
        self.bell.close()
        self.broker_bell.close()
        self.mapped.close()


class Switch:
    """A run directory with tables and rings for ports 1..3 (slots 0..2), a broker, and
    this test as the three ports' workers."""

    def __init__(self, rundir: str) -> None:
        self.rd = RunDir(rundir)
        self.ports = shm.create_port_table(self.rd.port_table, 16)
        self.fdb = shm.create_fdb_table(self.rd.fdb_table, 64)
        rings.make_bell(self.rd.broker_bell)
        self.workers: dict[int, WorkerEnd] = {}
        for port in (1, 2, 3):
            self.add_port(port, generation=port)
        self.proc: subprocess.Popen[bytes] | None = None
        self.inbox: dict[int, collections.deque[bytes]] = collections.defaultdict(
            collections.deque)
        self.probes: dict[int, list[bytes]] = collections.defaultdict(list)
        """The loop guard's probes each port received, kept apart from the test frames."""

    def add_port(self, port: int, generation: int) -> None:
        """Create the port's rings and claim its slot (as the supervisor does)."""
        rings.create_ring(self.rd.ring(port, generation), port, generation)
        old = self.workers.pop(port, None)
        if old is not None:
            old.close()
        self.workers[port] = WorkerEnd(self.rd, port, generation)
        self.ports.claim(port - 1, port, PortKind.TAP, ring=generation)

    # --- processes ----------------------------------------------------------------------
    def start_broker(self) -> None:
        """Start a broker and wait until it has written a fresh heartbeat."""
        since = time.monotonic_ns()
        proc = self.proc = subprocess.Popen(
            [sys.executable, "-m", "etherws.broker", "--rundir", self.rd.root,
             "--parent-pid", str(os.getpid())], cwd=ROOT)
        support.wait_until(lambda: self.ports.broker_heartbeat_ns() > since
                           or proc.poll() is not None, WAIT_S, "the broker to start")
        assert proc.poll() is None, f"broker exited with {proc.returncode}"

    def close(self) -> None:
        if self.proc is not None:
            support.kill_process(self.proc)
        for w in self.workers.values():
            w.close()

    # --- traffic --------------------------------------------------------------------------
    def send(self, port: int, *frames: bytes) -> None:
        self.workers[port].send(list(frames))

    def take_all(self, port: int) -> None:
        """Move everything waiting on ``port`` into its inbox (the probes apart)."""
        for f in self.workers[port].take():
            (self.probes[port] if is_probe(f) else self.inbox[port]).append(f)

    def recv(self, port: int, timeout_s: float = WAIT_S) -> bytes:
        """The next test frame ``port`` receives; fails the test at the deadline."""
        end = support.deadline(timeout_s)
        while not self.inbox[port]:
            if time.monotonic() > end:
                raise AssertionError(f"port {port} received nothing in {timeout_s}s")
            self.take_all(port)
            if not self.inbox[port]:
                self.workers[port].wait(50)
        return self.inbox[port].popleft()

    def expect(self, port: int, *frames: bytes) -> None:
        """``port`` receives exactly these frames next, in this order."""
        for want in frames:
            got = self.recv(port)
            assert got == want, f"port {port}: got {got[14:]!r}, expected {want[14:]!r}"

    def deliver(self, port: int, frame: bytes, *to: int) -> None:
        """``port`` sends ``frame``; each of the ports ``to`` receives it next."""
        self.send(port, frame)
        for receiver in to:
            self.expect(receiver, frame)

    # --- barriers and table views -------------------------------------------------------
    def barrier(self, port: int) -> None:
        """Return once the broker has handled every frame ``port`` sent so far: it gives
        a ring's space back only after switching what was in it."""
        up = self.workers[port].up
        support.wait_until(lambda: up.tail == up.head, WAIT_S,
                           f"the broker to handle port {port}'s frames")

    def table_barrier(self) -> None:
        """Return once the broker has seen the port table as it is now."""
        self.flush(NO_SUCH_PORT, "the broker to see the port table")

    def flush(self, port: int, what: str) -> None:
        """Request a flush of ``port``'s addresses (0: all) and wait until it is served."""
        ticket = self.ports.request_flush(port)
        support.wait_until(lambda: self.ports.flush_done(ticket), WAIT_S, what)

    def learned(self) -> dict[bytes, int]:
        """Test MAC -> port, from the shared FDB (the sync addresses, 02:ff:..., left out)."""
        out = {}
        for _, key, port, _ in self.fdb.entries():
            _, addr = split_key(key)
            if addr[1] == 0:
                out[addr] = port
        return out

    def seen_ns(self, addr: bytes) -> int:
        return next(seen for _, key, _, seen in self.fdb.entries() if key == fdb_key(0, addr))

    def slot(self, port: int) -> PortSlot:
        return self.ports.read(port - 1)


@contextlib.contextmanager
def running_switch(rundir: str) -> Iterator[Switch]:
    """A Switch with ports 1..3 and a broker started; closed afterwards."""
    sw = Switch(rundir)
    try:
        sw.start_broker()
        yield sw
    finally:
        sw.close()


@pytest.fixture
def switch(rundir: str) -> Iterator[Switch]:
    with running_switch(rundir) as sw:
        yield sw


# --- forwarding -------------------------------------------------------------------------------
def test_broadcast_floods_to_the_others_and_not_back(switch: Switch) -> None:
    switch.deliver(1, eth(BCAST, A, "bcast"), 2, 3)
    # Next at port 1 the marker, not "bcast": it never came back.
    switch.deliver(2, eth(BCAST, B, "marker"), 1, 3)
    assert switch.learned() == {A: 1, B: 2}


def test_learned_unicast_goes_to_one_port_only(switch: Switch) -> None:
    switch.deliver(1, eth(BCAST, A, "hello"), 2, 3)
    switch.deliver(2, eth(A, B, "reply"), 1)
    # Next at port 2: its own reply did not come back; at port 3: the reply was not flooded.
    switch.deliver(1, eth(BCAST, A, "marker"), 2, 3)


def test_shut_port_neither_sends_nor_receives(switch: Switch) -> None:
    switch.deliver(3, eth(BCAST, C, "c-hello"), 1, 2)
    switch.ports.set_shut(2, True)
    switch.table_barrier()
    from_shut = [eth(BCAST, mac(9), "from-shut"), eth(A, mac(9), "from-shut-uni")]
    switch.send(3, *from_shut)
    switch.barrier(3)
    to_shut = eth(C, A, "to-shut")  # known unicast to a shut port: dropped, not flooded
    bcast = eth(BCAST, A, "bcast-while-shut")
    switch.send(1, to_shut, bcast)
    switch.expect(2, bcast)
    switch.deliver(2, eth(BCAST, B, "marker"), 1)
    assert mac(9) not in switch.learned()
    switch.ports.set_shut(2, False)
    switch.table_barrier()
    # Next at port 3: nothing sent while it was shut, not even the marker.
    switch.deliver(1, eth(BCAST, A, "marker-after-shut"), 3)


def test_deleted_port_gets_nothing_and_its_addresses_vanish(switch: Switch) -> None:
    switch.deliver(3, eth(BCAST, C, "c-hello"), 1, 2)
    assert switch.learned()[C] == 3
    switch.ports.release(2)
    support.wait_until(lambda: C not in switch.learned(), WAIT_S, "port 3's addresses to go")
    assert all(port != 3 for _, _, port, _ in switch.fdb.entries())
    switch.deliver(1, eth(BCAST, A, "bcast-while-deleted"), 2)
    switch.send(3, eth(BCAST, mac(9), "from-deleted"))  # a ring nobody switches now
    switch.table_barrier()
    marker = eth(BCAST, B, "marker")
    switch.deliver(2, marker, 1)
    assert mac(9) not in switch.learned()
    switch.add_port(3, generation=33)  # back, as a new port 3 with new rings
    switch.table_barrier()
    switch.deliver(2, marker, 3)  # the broadcast sent while it was deleted never came
    assert mac(9) not in switch.learned()  # nor did the old rings' frame


def test_flush_request_served(switch: Switch) -> None:
    for port, src in ((1, A), (2, B), (3, C)):
        switch.send(port, eth(BCAST, src, f"hello-{port}"))
    for port in (1, 2, 3):
        switch.barrier(port)
    assert switch.learned() == {A: 1, B: 2, C: 3}
    switch.flush(1, "flush of port 1")
    assert switch.learned() == {B: 2, C: 3}
    switch.flush(0, "flush of all")
    assert list(switch.fdb.entries()) == [] and switch.fdb.in_use == 0


# --- never blocking, counting what is dropped -------------------------------------------------
def test_slow_port_drops_are_counted_and_the_others_still_served(rundir: str) -> None:
    # Port 3 is a worker that never reads.
    with running_switch(rundir) as sw:
        drops_2 = sw.slot(2).broker_drops
        drops_3 = sw.slot(3).broker_drops
        beat = sw.ports.broker_heartbeat_ns()
        sent = 0
        end = support.deadline(30)
        while sw.slot(3).broker_drops == drops_3:
            assert time.monotonic() < end, "port 3 never filled up"
            for _ in range(50):
                sw.send(1, eth(BCAST, A, f"bulk-{sent}", 1500))
                sent += 1
            sw.take_all(2)  # port 2 keeps reading; port 3 never does
        marker = eth(BCAST, A, "marker")
        sw.send(1, marker)
        while sw.recv(2) != marker:
            pass  # the bulk frames before it
        lost_2 = sw.slot(2).broker_drops - drops_2
        assert lost_2 <= 0.1 * sent, f"the healthy port lost {lost_2} of {sent} frames"
        support.wait_until(lambda: sw.ports.broker_heartbeat_ns() > beat, 2.0,
                           "a heartbeat while port 3 is stalled")
        # A flood that one slow port could not take does not pause the sender.
        assert sw.slot(1).hold_until_ns == 0


def test_a_sender_whose_unicast_fills_a_port_is_asked_to_pause(rundir: str) -> None:
    with running_switch(rundir) as sw:
        sw.deliver(3, eth(BCAST, C, "C is on port 3"), 1, 2)
        sw.barrier(3)
        drops_3 = sw.slot(3).broker_drops
        end = support.deadline(30)
        while sw.slot(3).broker_drops == drops_3:
            assert time.monotonic() < end, "port 3 never filled up"
            before = time.monotonic_ns()
            for i in range(50):
                sw.send(1, eth(C, A, f"to C {i}", 1500))
            sw.barrier(1)
        hold_until = sw.slot(1).hold_until_ns
        assert before < hold_until <= time.monotonic_ns() + HOLD_NS
        assert sw.slot(2).hold_until_ns == sw.slot(3).hold_until_ns == 0


def test_a_broken_up_ring_is_one_error_and_switching_goes_on(switch: Switch) -> None:
    w = switch.workers[1]
    pos = w.up._head % w.up.capacity
    w.up.put(eth(BCAST, A, "lost"))
    struct.pack_into("<I", w.up.data, pos, w.up.capacity)  # a length past the ring
    w.send([])  # publish and ring
    support.wait_until(lambda: switch.slot(1).broker_errors == 1, WAIT_S, "one error")
    good = eth(BCAST, A, "good")
    switch.send(1, b"short", good, b"\x00" * 13)  # good frames with two bad ones between
    switch.expect(2, good)
    switch.expect(3, good)
    assert switch.slot(1).broker_errors == 3
    assert switch.ports.read(0).errors == 3


def test_random_bytes_and_indices_in_an_up_ring_never_stop_the_broker(
        switch: Switch) -> None:
    """What a compromised worker could write: the broker counts, drops, and goes on."""
    w = switch.workers[1]
    noise = random.Random(1)
    data = w.up.data
    for round_ in range(300):
        start = noise.randrange(0, len(data) - 4096)
        data[start:start + 4096] = noise.randbytes(4096)
        w.up._set(ring.HEAD, noise.choice([noise.getrandbits(64), w.up.tail + noise.randrange(
            0, w.up.capacity + 64, 8)]))
        w.broker_bell.ring()
        if round_ % 50 == 0:
            beat = switch.ports.broker_heartbeat_ns()
            support.wait_until(lambda: switch.ports.broker_heartbeat_ns() > beat, 2.0,
                               "the broker's heartbeat")
    assert switch.proc is not None and switch.proc.poll() is None
    support.wait_until(lambda: switch.slot(1).broker_errors > 0, WAIT_S, "errors counted")
    # The producer starts over where the broker left the ring; traffic flows again.
    w.up._set(ring.HEAD, w.up.tail)
    w.up._head = w.up.tail
    switch.take_all(2)
    switch.take_all(3)
    switch.inbox.clear()
    switch.barrier(1)
    switch.take_all(2)
    switch.inbox.clear()
    after = eth(BCAST, A, "after the noise")
    switch.send(1, after)
    while switch.recv(2) != after:
        pass  # frames the noise happened to make valid


# --- life cycle -------------------------------------------------------------------------------
def test_heartbeat_advances(switch: Switch) -> None:
    first = switch.ports.broker_heartbeat_ns()
    support.wait_until(lambda: switch.ports.broker_heartbeat_ns() > first, 2.0,
                       "a new heartbeat")
    support.wait_until(
        lambda: time.monotonic_ns() - switch.ports.broker_heartbeat_ns() < 0.6e9,
        2.0, "a heartbeat less than 0.6 s old")


def _learn_a_b_c(switch: Switch) -> None:
    hellos = {port: eth(BCAST, src, f"hello-{port}") for port, src in ((1, A), (2, B), (3, C))}
    for port, hello in hellos.items():
        switch.send(port, hello)
    for port in hellos:  # the two others', in either order
        got = {switch.recv(port), switch.recv(port)}
        assert got == {h for p, h in hellos.items() if p != port}
    assert switch.learned() == {A: 1, B: 2, C: 3}


def _kill_9(switch: Switch) -> None:
    assert switch.proc is not None
    switch.proc.kill()
    assert switch.proc.wait(timeout=WAIT_S * support.SCALE) == -signal.SIGKILL


def test_kill_9_keeps_the_fdb_and_unicast_works_without_relearning(switch: Switch) -> None:
    _learn_a_b_c(switch)
    b_seen = switch.seen_ns(B)
    _kill_9(switch)
    switch.start_broker()
    assert switch.learned() == {A: 1, B: 2, C: 3}
    assert switch.fdb.in_use == len(list(switch.fdb.entries()))
    switch.deliver(1, eth(B, A, "after-restart"), 2)
    # Next at port 3, not the unicast: B was known without a frame from it.
    switch.deliver(1, eth(BCAST, A, "marker"), 3)
    assert switch.seen_ns(B) == b_seen  # and nothing re-learned it


def test_restart_forgets_the_ports_deleted_meanwhile(switch: Switch) -> None:
    _learn_a_b_c(switch)
    _kill_9(switch)
    switch.ports.release(2)  # port 3 is deleted while no broker runs
    switch.start_broker()
    assert switch.learned() == {A: 1, B: 2}


def test_sigterm_exits_0(switch: Switch) -> None:
    assert switch.proc is not None
    switch.proc.send_signal(signal.SIGTERM)
    assert switch.proc.wait(timeout=WAIT_S * support.SCALE) == 0


# --- the session ------------------------------------------------------------------------------
@pytest.fixture
def dealer(switch: Switch) -> Iterator[zmq.Socket[bytes]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(switch.rd.session_endpoint)
    try:
        yield s
    finally:
        s.close(linger=0)
        support.term_context(ctx, "the session test's context")


def ask(sock: zmq.Socket[bytes], m: session.Message) -> session.Message:
    sock.send(session.encode(m))
    assert sock.poll(int(WAIT_S * support.SCALE * 1000)), "no answer from the broker"
    return session.decode(sock.recv())


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_worker_attaches_with_its_ports_ring_generation(
        switch: Switch, dealer: zmq.Socket[bytes]) -> None:
    assert switch.proc is not None and switch.ports.broker_pid() == switch.proc.pid
    me = os.getpid()
    assert ask(dealer, session.Message(session.ATTACH, 1, 1, me)) == \
        session.Message(session.ATTACHED, 1, 1, switch.proc.pid)
    refused = ask(dealer, session.Message(session.ATTACH, 2, 99, me))
    assert refused.kind == session.REFUSED and "generation 63 is not port 2's" in refused.reason
    refused = ask(dealer, session.Message(session.ATTACH, 9, 1, me))
    assert refused.kind == session.REFUSED and "does not exist" in refused.reason


def test_a_second_live_worker_is_refused_and_a_dead_ones_port_handed_over(
        switch: Switch, dealer: zmq.Socket[bytes]) -> None:
    me, gone = os.getpid(), dead_pid()
    assert ask(dealer, session.Message(session.ATTACH, 3, 3, me)).kind == session.ATTACHED
    refused = ask(dealer, session.Message(session.ATTACH, 3, 3, gone))
    assert refused.kind == session.REFUSED and f"live worker already (pid {me})" in \
        refused.reason
    # A clean stop detaches; then another worker may have the port.
    dealer.send(session.encode(session.Message(session.DETACH, 3, 3, me)))
    assert ask(dealer, session.Message(session.ATTACH, 3, 3, gone)).kind == session.ATTACHED
    # The attached worker is dead (kill -9, no detach): its successor takes over.
    assert ask(dealer, session.Message(session.ATTACH, 3, 3, me)).kind == session.ATTACHED


def test_malformed_session_messages_are_counted_and_switching_goes_on(
        switch: Switch, dealer: zmq.Socket[bytes]) -> None:
    before = switch.ports.header().broker_malformed
    for bad in (b"", b"A" + bytes(3), b"K" + bytes(16)):  # K: a broker's message
        dealer.send(bad)
    dealer.send_multipart([b"two", b"parts"])
    support.wait_until(lambda: switch.ports.header().broker_malformed == before + 4,
                       WAIT_S, "four malformed messages counted")
    switch.deliver(1, eth(BCAST, A, "still switching"), 2, 3)


def test_frames_queued_in_the_rings_while_the_broker_is_down_are_switched_after(
        switch: Switch) -> None:
    _learn_a_b_c(switch)
    _kill_9(switch)
    queued = [eth(B, A, f"queued {i}") for i in range(50)]
    switch.send(1, *queued)  # into port 1's up ring; no broker runs
    switch.start_broker()
    switch.expect(2, *queued)

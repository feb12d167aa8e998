"""The real broker process, with this test playing three port workers over DEALER sockets.

Nothing here sleeps for correctness. To show that a frame did *not* go somewhere, a test
first makes sure the broker has handled it, then sends a marker that must be the next
thing the port receives: the broker's output to one port is a FIFO, so anything it had
sent there earlier would arrive first. "The broker has handled it" is seen either from a
frame reaching another port or through a barrier:

- ``barrier(port)``: a malformed message from ``port`` bumps the broker's malformed count once all
  of that port's earlier messages have been switched (one pipe, in order);
- ``table_barrier()``: a flush of a port that does not exist is served in the same loop
  iteration as, and after, the re-read of a changed port table.

Sync frames (EtherType 0x88b6) connect every DEALER before a test and are ignored by
``recv``: the broker cannot send to a worker whose connection it has not seen yet.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Mapping

import pytest
import zmq

import etherws
from etherws import ipc
from etherws.broker.service import HOLD_NS
from etherws.paths import RunDir
from etherws.runtime import shm
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


class Switch:
    """A run directory with tables for ports 1..3 (slots 0..2), a broker, three DEALERs."""

    def __init__(self, rundir: str, ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
        self.rd = RunDir(rundir)
        self.ctx = ctx
        self.ports = shm.create_port_table(self.rd.port_table, 16)
        self.fdb = shm.create_fdb_table(self.rd.fdb_table, 64)
        for port in (1, 2, 3):
            self.ports.claim(port - 1, port, PortKind.TAP)
        self.proc: subprocess.Popen[bytes] | None = None
        self.sockets: list[zmq.Socket[bytes]] = []
        self.dealers: dict[int, zmq.Socket[bytes]] = {}
        self.inbox: dict[int, collections.deque[bytes]] = collections.defaultdict(
            collections.deque)
        self.synced: set[int] = set()

    # --- processes and sockets ----------------------------------------------------------
    def start_broker(self) -> None:
        """Start a broker and wait until it has written a fresh heartbeat."""
        since = time.monotonic_ns()
        proc = self.proc = subprocess.Popen(
            [sys.executable, "-m", "etherws.broker", "--rundir", self.rd.root,
             "--parent-pid", str(os.getpid())], cwd=ROOT)
        support.wait_until(lambda: self.ports.broker_heartbeat_ns() > since
                           or proc.poll() is not None, WAIT_S, "the broker to start")
        assert proc.poll() is None, f"broker exited with {proc.returncode}"

    def socket(self, routing_id: bytes, rcvhwm: int = 1000) -> zmq.Socket[bytes]:
        s: zmq.Socket[bytes] = self.ctx.socket(zmq.DEALER)
        self.sockets.append(s)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.ROUTING_ID, routing_id)
        s.setsockopt(zmq.RCVHWM, rcvhwm)
        s.setsockopt(zmq.SNDTIMEO, int(WAIT_S * support.SCALE * 1000))
        s.connect(self.rd.data_endpoint)
        return s

    def connect(self, port: int, rcvhwm: int = 1000) -> None:
        self.dealers[port] = self.socket(ipc.routing_id(port), rcvhwm)

    def close(self) -> None:
        for s in self.sockets:
            s.close(linger=0)
        if self.proc is not None:
            support.kill_process(self.proc)

    # --- traffic --------------------------------------------------------------------------
    def send(self, port: int, *frames: bytes) -> None:
        self.dealers[port].send(ipc.pack(list(frames)))

    def take_all(self, port: int) -> None:
        """Move everything waiting on ``port`` into its inbox (sync frames only mark it)."""
        s = self.dealers[port]
        while True:
            try:
                msg = s.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            for f in ipc.unpack(msg):
                if f[12:14] == SYNC_TYPE:
                    self.synced.add(port)
                else:
                    self.inbox[port].append(f)

    def recv(self, port: int, timeout_s: float = WAIT_S) -> bytes:
        """The next test frame ``port`` receives; fails the test at the deadline."""
        end = support.deadline(timeout_s)
        while not self.inbox[port]:
            if time.monotonic() > end:
                raise AssertionError(f"port {port} received nothing in {timeout_s}s")
            if self.dealers[port].poll(50):
                self.take_all(port)
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

    def sync(self, ports: tuple[int, ...] = (1, 2, 3)) -> None:
        """Flood sync frames until every one of ``ports`` receives them."""
        self.synced -= set(ports)
        end = support.deadline(WAIT_S)
        while not set(ports) <= self.synced:
            assert time.monotonic() < end, f"ports {set(ports) - self.synced} never synced"
            for p in ports:
                self.send(p, BCAST + bytes([2, 0xFF, 0, 0, 0, p]) + SYNC_TYPE)
            for p in ports:
                if self.dealers[p].poll(20):
                    self.take_all(p)

    # --- barriers and table views -------------------------------------------------------
    def barrier(self, port: int) -> None:
        """Return once the broker has handled every message ``port`` sent so far."""
        before = self.ports.header().broker_malformed
        self.dealers[port].send(b"\x00")
        support.wait_until(lambda: self.ports.header().broker_malformed > before, WAIT_S,
                           f"the broker to handle port {port}'s messages")

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


@pytest.fixture
def ctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    c: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        yield c
    finally:
        support.term_context(c, "the test's context")


@contextlib.contextmanager
def running_switch(rundir: str, ctx: zmq.Context[zmq.Socket[bytes]],
                   rcvhwm: Mapping[int, int] | None = None) -> Iterator[Switch]:
    """A Switch with ports 1..3 connected and a broker started; closed afterwards.

    ``rcvhwm`` gives a port a receive high-water mark other than the default 1000.
    """
    sw = Switch(rundir, ctx)
    try:
        for port in (1, 2, 3):
            sw.connect(port, (rcvhwm or {}).get(port, 1000))
        sw.start_broker()
        yield sw
    finally:
        sw.close()


@pytest.fixture
def switch(rundir: str, ctx: zmq.Context[zmq.Socket[bytes]]) -> Iterator[Switch]:
    with running_switch(rundir, ctx) as sw:
        yield sw


# --- forwarding -------------------------------------------------------------------------------
def test_broadcast_floods_to_the_others_and_not_back(switch: Switch) -> None:
    switch.sync()
    switch.deliver(1, eth(BCAST, A, "bcast"), 2, 3)
    # Next at port 1 the marker, not "bcast": it never came back.
    switch.deliver(2, eth(BCAST, B, "marker"), 1, 3)
    assert switch.learned() == {A: 1, B: 2}


def test_learned_unicast_goes_to_one_port_only(switch: Switch) -> None:
    switch.sync()
    switch.deliver(1, eth(BCAST, A, "hello"), 2, 3)
    switch.deliver(2, eth(A, B, "reply"), 1)
    # Next at port 2: its own reply did not come back; at port 3: the reply was not flooded.
    switch.deliver(1, eth(BCAST, A, "marker"), 2, 3)


def test_shut_port_neither_sends_nor_receives(switch: Switch) -> None:
    switch.sync()
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
    switch.sync()
    switch.deliver(3, eth(BCAST, C, "c-hello"), 1, 2)
    assert switch.learned()[C] == 3
    switch.ports.release(2)
    support.wait_until(lambda: C not in switch.learned(), WAIT_S, "port 3's addresses to go")
    assert all(port != 3 for _, _, port, _ in switch.fdb.entries())
    switch.deliver(1, eth(BCAST, A, "bcast-while-deleted"), 2)
    switch.send(3, eth(BCAST, mac(9), "from-deleted"))
    switch.barrier(3)
    marker = eth(BCAST, B, "marker")
    switch.deliver(2, marker, 1)
    assert mac(9) not in switch.learned()
    switch.ports.claim(2, 3, PortKind.TAP)  # back, as a new port 3
    switch.table_barrier()
    switch.deliver(2, marker, 3)  # the broadcast sent while it was deleted never came


def test_flush_request_served(switch: Switch) -> None:
    switch.sync()
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
def test_slow_port_drops_are_counted_and_the_others_still_served(
        rundir: str, ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    # Port 3 is a worker that will stop reading.
    with running_switch(rundir, ctx, rcvhwm={3: 1}) as sw:
        sw.sync()
        drops_2 = sw.slot(2).broker_drops  # sync may have lost some before
        drops_3 = sw.slot(3).broker_drops  # the DEALERs were connected
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


def test_a_sender_whose_unicast_fills_a_port_is_asked_to_pause(
        rundir: str, ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    with running_switch(rundir, ctx, rcvhwm={3: 1}) as sw:
        sw.sync()
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


def test_malformed_messages_are_counted(switch: Switch) -> None:
    switch.sync()
    before = switch.ports.header().broker_malformed
    bad = [b"", b"\x02" + ipc.pack([b"x"])[1:], b"\x01\x00", b"\x01\x00\x05abc"]
    for msg in bad:
        switch.dealers[1].send(msg)
    switch.dealers[1].send_multipart([ipc.pack([eth(BCAST, A, "x")]), b"extra part"])
    stranger = switch.socket(b"not-a-port")
    stranger.send(ipc.pack([eth(BCAST, A, "stranger")]))
    support.wait_until(lambda: switch.ports.header().broker_malformed == before + 6, WAIT_S,
                       "six malformed messages")
    good = eth(BCAST, A, "good")
    switch.send(1, b"short", good, b"\x00" * 13)  # a good batch with two bad frames in it
    switch.expect(2, good)
    switch.expect(3, good)
    assert switch.slot(1).broker_errors == 2
    assert switch.ports.read(0).errors == 2
    assert switch.ports.header().broker_malformed == before + 6


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
    switch.sync()
    _learn_a_b_c(switch)
    b_seen = switch.seen_ns(B)
    _kill_9(switch)
    switch.start_broker()
    assert switch.learned() == {A: 1, B: 2, C: 3}
    assert switch.fdb.in_use == len(list(switch.fdb.entries()))
    switch.sync()  # the DEALERs reconnect by themselves
    switch.deliver(1, eth(B, A, "after-restart"), 2)
    # Next at port 3, not the unicast: B was known without a frame from it.
    switch.deliver(1, eth(BCAST, A, "marker"), 3)
    assert switch.seen_ns(B) == b_seen  # and nothing re-learned it


def test_restart_forgets_the_ports_deleted_meanwhile(switch: Switch) -> None:
    switch.sync()
    _learn_a_b_c(switch)
    _kill_9(switch)
    switch.ports.release(2)  # port 3 is deleted while no broker runs
    switch.start_broker()
    assert switch.learned() == {A: 1, B: 2}


def test_sigterm_exits_0(switch: Switch) -> None:
    assert switch.proc is not None
    switch.proc.send_signal(signal.SIGTERM)
    assert switch.proc.wait(timeout=WAIT_S * support.SCALE) == 0

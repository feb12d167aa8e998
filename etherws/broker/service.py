"""The broker process: a ZeroMQ ROUTER around the learning bridge (I/O shell).

Every port worker connects a DEALER (routing id ``ipc.routing_id(port)``) to the data
socket and sends batches (``etherws.ipc``); the broker learns, decides with
``Forwarder`` and sends each egress port its frames in batches. It never blocks on a
port: with ROUTER_MANDATORY a send to a full port raises ``zmq.Again`` and a send to a
port that is not connected (its worker is restarting) raises EHOSTUNREACH, and either
way the frames are dropped and counted in that port's slot (without MANDATORY a ROUTER
drops silently, even to unknown ids; measured with pyzmq 27).

The port table tells which ports exist and which are shut (re-read whenever its
generation moves); the FDB lives in shared memory, so a restarted broker keeps what was
learned. The broker also serves flush requests and writes a heartbeat.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import time

import zmq

from etherws import config, ipc
from etherws.broker.fdb import Fdb
from etherws.broker.forwarding import Forwarder
from etherws.paths import RunDir
from etherws.runtime import lifeline, logsetup, malloctune, procargs, shm
from etherws.runtime.signals import StopSignal
from etherws.tables import BrokerView, PortTable, TableError

log = logging.getLogger("etherws.broker")

POLL_TIMEOUT_S = 0.25
HEARTBEAT_INTERVAL_S = 0.25
"""Half the 0.5 s the supervisor may rely on, so a busy loop iteration cannot miss it."""
EXPIRE_INTERVAL_S = 1.0
MAX_MESSAGES_PER_WAKEUP = 256
"""Bounded work between two looks at the port table, flush requests and the heartbeat."""
HOLD_NS = 1_000_000
"""How long a port's worker stops reading its medium when everything it sent went to a
full port: its queues (up to ~190 batches) outlast that, so the slow port does not run
dry, and the frames the sender makes meanwhile wait, or die, in the kernel instead of
being read, switched and dropped here (2x UDP overload at MTU 9000 between tools/bench's
hosts: 80k of 172k frames read from the TAP were dropped at the tunnel port)."""


class Broker:
    """The broker's state around one bound ROUTER socket."""

    def __init__(self, sock: zmq.Socket[bytes], ports: PortTable, fdb: Fdb,
                 port_security: bool = True) -> None:
        self.sock = sock
        self.ports = ports
        self.view = BrokerView(ports)
        self.fdb = fdb
        self.forwarder = Forwarder(fdb, port_security)
        self._slot: dict[int, int] = {}  # port -> its slot
        self._rid: dict[int, bytes] = {}
        self._generation: int | None = None
        self._next_heartbeat = 0.0
        self._next_expire = 0.0

    # --- the shared tables ------------------------------------------------------------
    def sync_ports(self) -> int | None:
        """Re-read the ports if the table changed; returns the addresses forgotten, or
        None when nothing changed."""
        generation = self.ports.generation  # before the slots: a change in between
        if generation == self._generation:  # bumps it again and is seen next time
            return None
        self._generation = generation
        slots: dict[int, int] = {}
        shut: dict[int, bool] = {}
        for slot, port, is_shut in self.ports.ports():
            if port not in slots:
                slots[port] = slot
                shut[port] = is_shut
        self._slot = slots
        self._rid = {port: ipc.routing_id(port) for port in slots}
        self.forwarder.set_ports(shut)
        forgotten = self.fdb.retain_ports(slots)
        log.debug("port table generation %d: %d ports, %d addresses forgotten",
                  generation, len(slots), forgotten)
        return forgotten

    def serve_flush(self) -> None:
        """Carry out a pending flush request from the supervisor."""
        pending = self.view.pending_flush()
        if pending is None:
            return
        request, port = pending
        n = self.fdb.flush_all() if port == 0 else self.fdb.flush_port(port)
        self.view.flush_served(request)
        log.debug("flush %d: %d addresses of %s forgotten", request, n,
                  f"port {port}" if port else "all ports")

    def housekeeping(self, now: float) -> None:
        """Heartbeat and ageing, each at its own interval."""
        if now >= self._next_heartbeat:
            self.view.heartbeat(time.monotonic_ns())
            self._next_heartbeat = now + HEARTBEAT_INTERVAL_S
        if now >= self._next_expire:
            self.fdb.expire(now)
            self._next_expire = now + EXPIRE_INTERVAL_S

    # --- the data plane ---------------------------------------------------------------
    def drain(self, now: float) -> int:
        """Handle up to MAX_MESSAGES_PER_WAKEUP waiting messages; returns how many."""
        recv = self.sock.recv_multipart
        for n in range(MAX_MESSAGES_PER_WAKEUP):
            try:
                parts = recv(zmq.NOBLOCK)
            except zmq.Again:
                return n
            self.handle(parts, now)
        return MAX_MESSAGES_PER_WAKEUP

    def handle(self, parts: list[bytes], now: float) -> None:
        """Switch one message ``[routing id, batch]`` received from a worker."""
        try:
            if len(parts) != 2:
                raise ipc.IpcError(f"message of {len(parts)} parts")
            port = ipc.port_of(parts[0])
            frames = ipc.unpack(parts[1])
        except ipc.IpcError:
            self.view.count_malformed()
            return
        result = self.forwarder.forward(port, frames, now)
        slot = self._slot.get(port)
        if result.malformed and slot is not None:
            self.view.add_errors(slot, result.malformed)
        if result.secured and slot is not None:
            self.view.add_drops(slot, result.secured)
        for shut_port, n in result.shut.items():  # a shut port's drops: listport shows them
            shut_slot = self._slot.get(shut_port)
            if shut_slot is not None:
                self.view.add_drops(shut_slot, n)
        if not result.egress:
            return
        if not self.deliver(result.egress) and len(result.egress) == 1 and slot is not None:
            # All of it went to one port, which is full: the sender's worker pauses
            # (link.PortLoop). Not for frames to several ports: a flood must not let one
            # slow port throttle a sender for all the others.
            self.view.hold(slot, int(now * 1e9) + HOLD_NS)

    def deliver(self, egress: dict[int, list[bytes]]) -> bool:
        """Send every port its frames; what a port cannot take now is dropped and counted.
        False when a port's queue was full."""
        room = True
        packed: dict[int, bytes] = {}  # id(list) -> message: a flood is packed once
        for port, frames in egress.items():
            rid = self._rid.get(port)
            if rid is None:
                continue
            for batch in ipc.batches(frames):
                if batch is frames:  # one batch: a flood's list is shared by its ports
                    msg = packed.get(id(frames))
                    if msg is None:
                        msg = packed[id(frames)] = ipc.pack(frames)
                else:
                    msg = ipc.pack(batch)
                room = self._send(port, rid, msg, len(batch)) and room
        return room

    def _send(self, port: int, rid: bytes, msg: bytes, nframes: int) -> bool:
        """Send one batch; False when the port's queue is full (the batch is dropped)."""
        full = False
        try:
            self.sock.send_multipart([rid, msg], zmq.NOBLOCK)
            return True
        except zmq.Again:
            full = True  # the port's pipe is full: a slow worker never stalls the others
        except zmq.ZMQError as e:
            if e.errno != errno.EHOSTUNREACH:  # not connected, e.g. its worker restarts
                raise
        self.view.add_drops(self._slot[port], nframes)
        return not full

    # --- the loop ---------------------------------------------------------------------
    def run(self, stop: StopSignal) -> None:
        """Serve until ``stop`` is requested (a signal also wakes the poll at once)."""
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(stop.fileno(), zmq.POLLIN)
        timeout_ms = int(POLL_TIMEOUT_S * 1000)
        while not stop.requested:
            events = dict(poller.poll(timeout_ms))
            if stop.fileno() in events:
                stop.drain()
            self.sync_ports()
            self.serve_flush()
            if self.sock in events:
                self.drain(time.monotonic())
            self.housekeeping(time.monotonic())


def bind_router(ctx: zmq.Context[zmq.Socket[bytes]],
                endpoint: str) -> zmq.Socket[bytes]:
    """The broker's ROUTER, bound at ``endpoint`` with a socket file only we can use."""
    sock = ctx.socket(zmq.ROUTER)
    try:
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # Again/EHOSTUNREACH instead of silence
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a restarted worker reuses its routing id
        # Twice the workers' mark towards them: the broker drops what a port's pipe
        # cannot take, and a pipe that libzmq's lazy credit updates show full too early
        # would drop a healthy port's burst; the broker's memory target has the room.
        sock.setsockopt(zmq.SNDHWM, 2 * ipc.HWM)
        sock.setsockopt(zmq.RCVHWM, ipc.HWM)
        sock.setsockopt(zmq.MAXMSGSIZE, ipc.MAX_MESSAGE)
        sock.setsockopt(zmq.LINGER, 0)
        old = os.umask(0o077)
        try:
            sock.bind(endpoint)
        finally:
            os.umask(old)
    except zmq.ZMQError:
        sock.close(linger=0)
        raise
    return sock


def _parser() -> argparse.ArgumentParser:
    p = procargs.child_parser("etherws-broker",
                              "etherws broker: learns addresses and switches frames")
    config.add_child_arguments(p, "broker")
    p.add_argument("--fdb-per-port", type=int, default=config.FDB_PER_PORT, metavar="N",
                   help=f"most addresses learned on one port (default {config.FDB_PER_PORT})")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the broker until SIGTERM/SIGINT; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        config.check_child(args, "broker")
    except config.ConfigError as exc:
        parser.error(str(exc))
    if args.fdb_per_port < 1:
        parser.error("--fdb-per-port must be at least 1")
    lifeline.die_with_parent(args.parent_pid)
    malloctune.keep_freed_memory()
    logsetup.configure(args, "broker")
    with StopSignal() as stop:  # early: a stop during start-up is clean
        status = _serve(RunDir(args.rundir), args, stop)
    log.info("stopped, exit status %d", status)
    return status


def _serve(rundir: RunDir, args: argparse.Namespace, stop: StopSignal) -> int:
    try:
        ports = shm.open_port_table(rundir.port_table)
        fdb = Fdb(shm.open_fdb_table(rundir.fdb_table), args.ageout_s, args.fdb_per_port)
    except (OSError, TableError) as e:
        log.error("cannot open the shared tables in %s: %s", rundir.root, e)
        return procargs.EXIT_CONFIG
    ctx = zmq.Context()
    try:
        try:
            sock = bind_router(ctx, rundir.data_endpoint)
        except zmq.ZMQError as e:
            log.error("cannot bind %s: %s", rundir.data_endpoint, e)
            return procargs.EXIT_CONFIG
        try:
            broker = Broker(sock, ports, fdb, port_security=not args.no_port_security)
            broker.sync_ports()  # forgets the addresses of ports deleted while we were away
            broker.housekeeping(time.monotonic())
            log.info("started on %s: %d ports, %d of %d addresses kept, ageout %gs",
                     rundir.data_endpoint, len(broker.forwarder.ports), len(fdb),
                     fdb.table.capacity, fdb.ageout_s)
            broker.run(stop)
        finally:
            sock.close(linger=0)
    finally:
        ctx.term()
    return 0

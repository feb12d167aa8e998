"""The broker process: switches frames between the ports' rings (I/O shell).

Every port has a ring file (``etherws.ring``) that the supervisor created with it; the
broker maps the rings of every port in the port table (re-read whenever its generation
moves). Each pass takes a bounded batch from every port's up ring, learns and decides
with ``Forwarder`` exactly as a learning bridge does, and copies each frame once into
each egress port's down ring, behind its virtio-net header if it came with one (a
super-frame: ``etherws.gso``; the egress worker cuts it up for a port that cannot take
it). What a down ring cannot take is dropped and counted in that port's slot; the
broker never waits for a port. A sender whose frames all went to one full ring is asked
to pause (the slot's hold word). Each port's VLAN setting, storm and rate limits come
from its slot as well, re-read with the rest (``Forwarder`` applies them; a frame a VLAN
rule rewrites is copied from its new bytes, its header's offsets moved); a port whose
VLAN setting changes forgets the addresses it had learned.

An accepted peer's frames are switched only once its worker has attached: the worker
writes the claims of the peer's token (a VLAN, a MAC quota: ``etherws.token``) into its
slot before it attaches, and the broker reads them then, and only then (a worker that
parses network input later cannot lift them); until then its frames wait in its ring.

Nothing in a ring is trusted: a worker parses network input and may be compromised.
A ring whose indices or records are invalid is counted as one error of its port, its
contents are dropped, and switching goes on.

Around the rings, a ZeroMQ ROUTER at ``RunDir.session_endpoint`` serves the session
(``etherws.session``): workers attach (their port and ring generation, checked against
the port table; a second live worker for a port is refused) and detach.

When a pass moves nothing the broker arms every up ring, looks again (after a fence,
see ``runtime.rings``) and sleeps on its doorbell; a worker rings it only while it is
armed, so a busy switch makes no wake-up calls. The FDB lives in shared memory and the
frames in the ring files, so a restarted broker keeps what was learned and what was
queued. The broker also serves flush requests and writes a heartbeat.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from typing import cast

import zmq

from etherws import config, session
from etherws.broker.fdb import Fdb
from etherws.broker.forwarding import Forwarder, PortPolicy, claimed
from etherws.broker.loops import LoopShell, draw_switch_id
from etherws.broker.portrings import PortRings, alive, bind_session, open_rings
from etherws.frame import Frame
from etherws.paths import RunDir
from etherws.ratelimit import storm_limit
from etherws.ring import RingError
from etherws.runtime import lifeline, logsetup, malloctune, procargs, rings, shm
from etherws.runtime.signals import StopSignal
from etherws.tables import BrokerView, PortKind, PortTable, TableError
from etherws.vlan import PortVlan

log = logging.getLogger("etherws.broker")

POLL_TIMEOUT_S = 0.25
HEARTBEAT_INTERVAL_S = 0.25
"""Half the 0.5 s the supervisor may rely on, so a busy loop iteration cannot miss it."""
EXPIRE_INTERVAL_S = 1.0
FRAMES_PER_PORT = 64
"""Frames taken from one port's up ring per pass: ports are served in turn, a busy port
cannot starve the others."""
WARN_INTERVAL_S = 60.0
"""A port's broken ring is logged at most this often (each one is counted)."""
MAX_SESSION_MESSAGES = 64
"""Session messages answered per look (bounded work: a worker cannot stall switching)."""
PASSES_PER_LOOK = 64
"""Bounded work between two looks at the port table, flush requests and the heartbeat."""
HOLD_NS = 1_000_000
"""How long a port's worker stops reading its medium when everything it sent went to a
full ring: the ring outlasts that, so the slow port does not run dry, and the frames the
sender makes meanwhile wait, or die, in the kernel instead of being read, switched and
dropped here (2x UDP overload at MTU 9000 between tools/bench's hosts: 80k of 172k
frames read from the TAP were dropped at the tunnel port)."""


class Broker:
    """The broker's state: the ports' rings, the FDB, the forwarding rules."""

    def __init__(self, rundir: RunDir, ports: PortTable, fdb: Fdb,
                 port_security: bool = True, isolate: bool = False,
                 loop_guard: bool = True) -> None:
        self.rundir = rundir
        self.ports = ports
        self.view = BrokerView(ports)
        self.fdb = fdb
        self.forwarder = Forwarder(fdb, port_security, guard=loop_guard)
        self.loops = LoopShell(self.view, self.forwarder, fdb,
                               self.view.switch_id(draw_switch_id())) if loop_guard else None
        self.isolate = isolate
        """Server ports (accepted peers) are isolated from each other (``--isolate``)."""
        self.rings: dict[int, PortRings] = {}  # port -> its rings
        self._generation: int | None = None
        self._next_heartbeat = 0.0
        self._next_expire = 0.0
        self._broken: set[int] = set()  # ports whose rings could not be opened (logged)
        self.attached: dict[int, int] = {}  # port -> the pid of its attached worker
        self.claims: dict[int, tuple[int, int]] = {}  # peer port -> its token's claims
        self._peers: set[int] = set()  # accepted peers' ports (PortKind.SERVER)
        self._gated: set[int] = set()  # peers not attached yet: their frames wait
        self._warned: dict[int, float] = {}  # port -> when its broken ring may be logged

    # --- the shared tables ------------------------------------------------------------
    def sync_ports(self) -> int | None:
        """Re-read the ports if the table changed; returns the addresses forgotten, or
        None when nothing changed."""
        generation = self.ports.generation  # before the slots: a change in between
        if generation == self._generation:  # bumps it again and is seen next time
            return None
        self._generation = generation
        current: dict[int, tuple[int, int]] = {}
        policies: dict[int, PortPolicy] = {}
        peers: set[int] = set()
        for slot, port, is_shut in self.ports.ports():
            if port not in current:
                current[port] = (slot, self.ports.ring(slot))
                policies[port] = self._policy(slot, is_shut, port)
                if self.ports.read(slot).kind == PortKind.SERVER:
                    peers.add(port)
        self._peers = peers
        self._gated = {p for p in peers if p not in self.attached}
        self.claims = {p: c for p, c in self.claims.items() if p in peers}
        for port, pr in list(self.rings.items()):
            if current.get(port) != (pr.slot, pr.generation):
                pr.close()
                del self.rings[port]
        for port, (slot, ring) in current.items():
            if port not in self.rings and ring:
                self._open(port, slot, ring)
        forgotten = 0
        for port, policy in policies.items():
            old = self.forwarder.policy(port)
            if old is not None and old.vlan != policy.vlan:  # learned in VLANs it left
                forgotten += self.fdb.flush_port(port)
        now = time.monotonic()
        self.forwarder.set_ports({p: v for p, v in policies.items() if p in self.rings}, now)
        if self.loops is not None:
            self.loops.set_ports({p: pr.slot for p, pr in self.rings.items()},
                                 {p: v.shut for p, v in policies.items()}, now)
        forgotten += self.fdb.retain_ports(current)
        log.debug("port table generation %d: %d ports, %d addresses forgotten",
                  generation, len(current), forgotten)
        return forgotten

    def _policy(self, slot: int, shut: bool, port: int) -> PortPolicy:
        """A slot's shut flag, VLAN setting, storm and rate limits, and the claims of
        its peer's token as read when the peer's worker attached."""
        rules = self.ports.rules(slot)
        kind = self.ports.read(slot).kind
        tunnel = kind in (PortKind.CLIENT, PortKind.SERVER)
        policy = PortPolicy(shut, PortVlan.from_words(rules.vlan, rules.trunk),
                            storm_limit(rules.storm, tunnel), rules.rate_bps,
                            isolated=self.isolate and kind == PortKind.SERVER)
        claims = self.claims.get(port)
        return policy if claims is None else claimed(policy, *claims)

    def _attached_peer(self, pr: PortRings) -> None:
        """A peer's worker attached: read its token's claims, apply them, and only then
        let its frames through. Once per port in this broker's life: a worker that sends
        another attach (it may be compromised by then) cannot change them."""
        if pr.port not in self._peers or pr.port in self.claims:
            return
        self.claims[pr.port] = claims = self.ports.token(pr.slot)
        if claims != (0, 0):
            log.info("port %d: token claims VLAN %d, %d MACs (0: none)", pr.port, *claims)
        shut = self.ports.read(pr.slot).shut
        self.forwarder.update_port(pr.port, self._policy(pr.slot, shut, pr.port),
                                   time.monotonic())
        self._gated.discard(pr.port)

    def _open(self, port: int, slot: int, generation: int) -> None:
        try:
            self.rings[port] = open_rings(self.rundir, port, slot, generation)
            self._broken.discard(port)
        except (OSError, RingError) as e:
            if port not in self._broken:
                self._broken.add(port)
                log.error("port %d: cannot use its rings: %s", port, e)

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
        if self.loops is not None:
            self.loops.tick(now, self.inject)

    def inject(self, egress: dict[int, list[Frame]]) -> None:
        """Frames of the broker's own (the loop guard's probes) into the down rings, the
        workers woken."""
        filled: set[PortRings] = set()
        self.deliver(egress, filled)
        for pr in filled:
            pr.down.commit()
        if filled:
            rings.fence()
            for pr in filled:
                if pr.down.armed:
                    pr.bell.ring()

    # --- the data plane ---------------------------------------------------------------
    def switch(self, now: float) -> int:
        """One pass over every port's up ring; returns the frames taken."""
        moved = 0
        filled: set[PortRings] = set()
        freed: list[PortRings] = []
        gated = self._gated
        for pr in list(self.rings.values()):
            up = pr.up
            if not up.readable() or pr.port in gated:
                continue
            try:
                frames = up.take(FRAMES_PER_PORT)
            except RingError as e:
                dropped = up.resync()
                self.view.add_errors(pr.slot, 1)
                if now >= self._warned.get(pr.port, 0.0):  # a hostile worker: no log flood
                    self._warned[pr.port] = now + WARN_INTERVAL_S
                    log.warning("port %d: invalid up ring, %d bytes dropped: %s (counted "
                                "as errors; said once a minute)", pr.port, dropped, e)
                freed.append(pr)
                continue
            moved += len(frames)
            self.handle(pr, frames, now, filled)
            del frames  # views into the ring: gone before its space is given back
            up.release()
            freed.append(pr)
        for pr in filled:
            pr.down.commit()
        if filled or freed:
            rings.fence()
            for pr in filled:
                if pr.down.armed:
                    pr.bell.ring()
            for pr in freed:
                if pr.up.waiting:
                    pr.bell.ring()
        return moved

    def handle(self, pr: PortRings, frames: list[memoryview], now: float,
               filled: set[PortRings]) -> None:
        """Learn from and deliver the frames one port sent."""
        headers = pr.up.headers
        result = self.forwarder.forward(pr.port, frames, now, headers)
        view, slot = self.view, pr.slot
        if result.malformed:
            view.add_errors(slot, result.malformed)
        if result.secured:
            view.add_drops(slot, result.secured)
        if result.vlan or result.storm or result.rate:
            view.add_policed(slot, result.vlan, result.storm, result.rate)
        if result.loop:
            view.add_loop_drops(slot, result.loop)
        if result.probes and self.loops is not None:
            onward, bad = self.loops.received(pr.port, result.probes, now)
            if bad:
                view.add_errors(slot, bad)
            if onward:
                self.deliver(onward, filled)
        for shut_port, n in result.shut.items():  # a shut port's drops: listport shows them
            shut = self.rings.get(shut_port)
            if shut is not None:
                view.add_drops(shut.slot, n)
        if not result.egress:
            return
        if not self.deliver(result.egress, filled, headers) and len(result.egress) == 1:
            # All of it went to one port, which is full: the sender's worker pauses
            # (link.PortLoop). Not for frames to several ports: a flood must not let one
            # slow port throttle a sender for all the others.
            view.hold(slot, int(now * 1e9) + HOLD_NS)

    def deliver(self, egress: dict[int, list[Frame]], filled: set[PortRings],
                headers: dict[int, bytes | memoryview] | None = None) -> bool:
        """Copy every port's frames (each behind its virtio-net header, if ``headers``
        has one) into its down ring; what a ring cannot take is dropped and counted.
        False when a ring was full."""
        room = True
        for port, frames in egress.items():
            pr = self.rings.get(port)
            if pr is None:
                continue
            # a VLAN rule's rewritten frames are bytes among the views: put_many takes
            # any buffer, its annotation only says the list is not mixed
            sent = pr.down.put_many(cast("list[memoryview]", frames), headers)
            if sent:
                filled.add(pr)
            if sent < len(frames):
                self.view.add_drops(pr.slot, len(frames) - sent)
                room = False
        return room

    # --- the loop ---------------------------------------------------------------------
    # --- the session ------------------------------------------------------------------
    def serve_session(self, sock: zmq.Socket[bytes]) -> None:
        """Answer every session message waiting on the ROUTER."""
        for _ in range(MAX_SESSION_MESSAGES):
            try:
                parts = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            reply = self.on_session(parts)
            if reply is not None:
                try:
                    sock.send_multipart([parts[0], reply], zmq.NOBLOCK)
                except zmq.ZMQError:  # gone again, or not reading: it asks again
                    pass

    def on_session(self, parts: list[bytes]) -> bytes | None:
        """The answer to one message ``[routing id, message]``, or None."""
        try:
            if len(parts) != 2:
                raise session.SessionError(f"message of {len(parts)} parts")
            m = session.decode(parts[1])
        except session.SessionError:
            self.view.count_malformed()
            return None
        if m.kind == session.DETACH:
            if self.attached.get(m.port) == m.pid:
                del self.attached[m.port]
                log.info("port %d: worker %d detached", m.port, m.pid)
            return None
        if m.kind != session.ATTACH:
            self.view.count_malformed()
            return None
        pr = self.rings.get(m.port)
        old = self.attached.get(m.port)
        why = session.check_attach(m, None if pr is None else pr.generation, old,
                                   old is not None and alive(old))
        if why:
            log.warning("port %d: worker %d refused: %s", m.port, m.pid, why)
            return session.encode(session.Message(session.REFUSED, m.port, reason=why))
        if old != m.pid:
            log.info("port %d: worker %d attached%s", m.port, m.pid,
                     f" (after {old})" if old is not None else "")
            if self.loops is not None:
                self.loops.attached(m.port, time.monotonic())
        self.attached[m.port] = m.pid
        assert pr is not None  # check_attach refuses a port without rings
        self._attached_peer(pr)
        return session.encode(session.Message(session.ATTACHED, m.port, m.generation,
                                              os.getpid()))

    # --- the loop ---------------------------------------------------------------------
    def run(self, stop: StopSignal, bell: rings.Bell, sock: zmq.Socket[bytes]) -> None:
        """Serve until ``stop`` is requested (a signal also wakes the poll at once)."""
        poller = zmq.Poller()
        poller.register(bell.fileno(), zmq.POLLIN)
        poller.register(stop.fileno(), zmq.POLLIN)
        poller.register(sock, zmq.POLLIN)
        timeout_ms = int(POLL_TIMEOUT_S * 1000)
        while not stop.requested:
            self.sync_ports()
            self.serve_flush()
            self.serve_session(sock)
            moved = 0
            for _ in range(PASSES_PER_LOOK):
                n = self.switch(time.monotonic())
                moved += n
                if not n:
                    break
            self.housekeeping(time.monotonic())
            if moved:
                continue
            if not self._arm(True):
                poller.poll(timeout_ms)
            self._arm(False)
            bell.drain()
            stop.drain()

    def _arm(self, on: bool) -> bool:
        """Ask (or stop asking) every worker to ring; True when a ring is readable."""
        # A gated peer's ring waits for its attach, which wakes the poll by itself.
        live = [pr for pr in self.rings.values() if pr.port not in self._gated]
        for pr in self.rings.values():
            pr.up.arm(on and pr.port not in self._gated)
        if not on:
            return False
        rings.fence()
        return any(pr.up.readable() for pr in live)

    def close(self) -> None:
        """Unmap every ring."""
        for pr in self.rings.values():
            pr.close()
        self.rings.clear()


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
        fdb = Fdb(shm.open_fdb_table(rundir.fdb_table), args.ageout_s, args.fdb_per_port,
                  args.move_hold_s)
        bell = rings.Bell(rundir.broker_bell)
    except (OSError, TableError) as e:
        log.error("cannot open the shared tables in %s: %s", rundir.root, e)
        return procargs.EXIT_CONFIG
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    broker = Broker(rundir, ports, fdb, port_security=not args.no_port_security,
                    isolate=args.isolate, loop_guard=not args.no_loop_guard)
    try:
        try:
            sock = bind_session(ctx, rundir.session_endpoint)
        except zmq.ZMQError as e:
            log.error("cannot bind %s: %s", rundir.session_endpoint, e)
            return procargs.EXIT_CONFIG
        try:
            broker.sync_ports()  # forgets the addresses of ports deleted while we were away
            broker.housekeeping(time.monotonic())
            broker.view.started(os.getpid())  # the workers attach to us now
            log.info("started: %d ports, %d of %d addresses kept, ageout %gs",
                     len(broker.forwarder.ports), len(fdb), fdb.table.capacity,
                     fdb.ageout_s)
            broker.run(stop, bell, sock)
        finally:
            sock.close(linger=0)
    finally:
        broker.close()
        bell.close()
        ctx.term()
    return 0

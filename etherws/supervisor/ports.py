"""The switch's ports and the processes behind them (I/O: spawns, reaps, touches TAPs).

A port has a number (the configuration file's, or the next from 1; never reused while
the supervisor runs, except that of an addport that failed), an optional name, a slot
in the shared port table, and a worker process restarted by the policy in
``policy.py``. The
broker and the WebSocket listener are supervised the same way, without a port number.

Tunnel ports differ in what an exit means. A server port (one accepted peer) is never
restarted: its connection is gone with it, the remote side reconnects, so the port
goes away. A client port whose worker gave up ("failed" in its status file: the first
connection failed without --retry) is stopped and waits for ``addport`` to remove it;
any other exit of a client worker is a crash, and its restarts always keep retrying.
"""

from __future__ import annotations

import logging
import secrets as random_source
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

from etherws.paths import RunDir
from etherws.portconfig import PortSpec
from etherws.runtime import portstatus, rings, tuntap
from etherws.runtime.procargs import EXIT_AUTH_FAILED
from etherws.supervisor.children import (
    Child,
    Launcher,
    exit_reason,
    reap_strays,
    stop_children,
)
from etherws.supervisor.policy import RestartPolicy, State
from etherws.supervisor.zygote import ZygoteChild
from etherws.tables import PortKind, PortSlot, PortTable
from etherws.wsurl import Secrets

log = logging.getLogger(__name__)

WORKER_MODULES = {
    PortKind.TAP: "etherws.workers.tap",
    PortKind.NETDEV: "etherws.workers.netdev",
    PortKind.CLIENT: "etherws.workers.client",
    PortKind.SERVER: "etherws.workers.peer",
}
TUNNELS = (PortKind.CLIENT, PortKind.SERVER)


@dataclass
class Port:
    """One port of the switch."""

    number: int
    kind: PortKind
    target: str
    slot: int
    child: Child
    created_tap: bool = False
    shut: bool = False
    spec: PortSpec | None = None
    """The port as ``save`` would write it (None: an accepted peer, never saved)."""
    secrets: Secrets = field(default_factory=Secrets)
    """What a client port's worker reads on stdin (``save`` writes them to files)."""
    declared: bool = False
    """In the configuration file: its TAP stays when the switch stops."""
    ring: str = ""
    """The path of the port's ring file (removed with the port)."""

    @property
    def name(self) -> str | None:
        """The port's name, if it has one."""
        return self.spec.name if self.spec is not None else None


@dataclass
class PeerTotals:
    """The counters of accepted peers that are gone (server ports come and go)."""

    peers: int = 0
    rx: int = 0
    tx: int = 0
    rx_bytes: int = 0
    tx_bytes: int = 0
    drops: int = 0
    errors: int = 0

    def add(self, slot: PortSlot) -> None:
        """Fold in the last counters of one peer's slot."""
        self.peers += 1
        self.rx += slot.rx
        self.tx += slot.tx
        self.rx_bytes += slot.rx_bytes
        self.tx_bytes += slot.tx_bytes
        self.drops += slot.drops
        self.errors += slot.errors


class PortManager:
    """Owns every port and the broker: spawn, restart, watch heartbeats, remove."""

    def __init__(self, table: PortTable, child_args: Callable[[str], list[str]],
                 rundir: str) -> None:
        self.table = table
        self.rundir = rundir
        self.ports: dict[int, Port] = {}
        self._child_args = child_args  # module -> argv prefix with rundir, pid, logging
        self._next_port = 1
        self._next_slot = 0
        # The switch is nothing without its broker: its restarts wait 1 s at most, and a
        # broker that crash-loops (FATAL) ends the supervisor with an error, so that the
        # service manager restarts the whole tree (OTP's escalation) rather than a switch
        # that forwards nothing staying up.
        self.broker = Child(child_args("etherws.broker"), RestartPolicy(max_delay_s=1.0))
        self.escalation = ""
        """Why the supervisor must stop with an error ("" while all is well)."""
        self.gone_peers = PeerTotals()
        """What accepted peers that are gone carried, dropped and got wrong."""
        self.peer_refused: Callable[[str, float], None] = lambda peer, now: None
        """Called with a peer's address when its worker refused it a login (the server
        counts failures per source)."""
        # Started by the WebSocket server, if there is one; watched like a worker.
        self.listener: Child | None = None
        self.zygote: ZygoteChild | None = None
        self.offload = True
        """TAP and netdev ports take super-frames (the switch runs without --no-offload):
        a netdev interface keeps its offloads."""
        self.peer_launcher: Launcher | None = None
        """How peer workers start when not with fork+exec (the zygote's fork)."""

    # --- ports ----------------------------------------------------------------
    def find_target(self, target: str) -> Port | None:
        """The port whose target (interface name, URL) is ``target``."""
        return next((p for p in self.ports.values() if p.target == target), None)

    def find(self, ref: int | str) -> Port | None:
        """The port ``ref`` names: its number, its name, or (for a TAP or netdev port)
        its interface."""
        if isinstance(ref, int):
            return self.ports.get(ref)
        named = next((p for p in self.ports.values() if p.name == ref), None)
        if named is not None:
            return named
        return next((p for p in self.ports.values() if p.target == ref
                     and p.kind in (PortKind.TAP, PortKind.NETDEV)), None)

    def reserve(self, number: int) -> None:
        """Numbers up to ``number`` are declared: new ports are numbered after it."""
        self._next_port = max(self._next_port, number + 1)

    def peers_by_state(self) -> tuple[int, list[str]]:
        """Accepted peers that are up (their tunnel runs), and the addresses of those
        still in their opening handshake."""
        up, pending = 0, []
        for p in self.ports.values():
            if p.kind is PortKind.SERVER:
                link = self.link(p)
                if link is not None and link["state"] == "up":
                    up += 1
                else:
                    pending.append(p.target)
        return up, pending

    def add(self, kind: PortKind, target: str, now: float, created_tap: bool = False,
            options: tuple[str, ...] = (), secrets: bytes | None = None,
            fd: int | None = None, number: int | None = None) -> Port:
        """Create a port and start its worker; raises LookupError when the table is full
        or ``number`` (default: the next free one) is taken.

        ``options`` go to the worker's command line, ``secrets`` to its stdin, ``fd``
        (a peer's connection) is inherited by it; the caller still closes its own ``fd``.
        """
        if number is not None and number in self.ports:
            raise LookupError(f"port number {number} is taken")
        slot = self.table.free_slot(self._next_slot)
        if slot is None:
            raise LookupError(f"all {self.table.nslots} port slots are in use")
        if number is None:
            number = self._next_port
            while number in self.ports:  # a declared number above the counter
                number += 1
        head = self._child_args(WORKER_MODULES[kind]) + [
            "--port", str(number), "--slot", str(slot)]
        if fd is not None:
            head += ["--fd", str(fd)]
        child = Child(head + list(options) + ["--", target], stdin_data=secrets,
                      pass_fds=() if fd is None else (fd,),
                      launcher=self.peer_launcher if kind is PortKind.SERVER else None)
        if kind is PortKind.CLIENT and "--retry" not in options:
            # addport has had its answer by the time a restart happens: the port exists
            # and must come back whatever the server does meanwhile
            child.restart_argv = head + list(options) + ["--retry", "--", target]
        # A new generation for every port: a port deleted and another created with its
        # number never share a ring, and a ring file left over is never taken for ours.
        generation = random_source.randbits(63) | 1
        ring = RunDir(self.rundir).ring(number, generation)
        rings.create_ring(ring, number, generation)  # OSError (ENOSPC): the port fails
        port = Port(number, kind, target, slot, child, created_tap, ring=ring)
        self.table.claim(slot, number, kind, ring=generation)
        try:
            port.child.spawn(now)
        except OSError:  # fork failed (EAGAIN, ENOMEM): nothing may be left behind
            self.table.release(slot)
            rings.remove_ring(ring)
            raise
        self._next_port = max(self._next_port, number + 1)
        self._next_slot = (slot + 1) % self.table.nslots
        self.ports[number] = port
        log.info("port %d: %s %s added (pid %s)", number, kind.label, target, port.child.pid)
        return port

    def remove(self, port: Port, keep_device: bool = False, unnumber: bool = False) -> None:
        """Stop the worker, free the slot, delete a TAP we created or that the file
        declared (unless ``keep_device``). ``unnumber``: the port never really existed
        (its addport failed), so its number is given out again."""
        port.child.stop()
        if port.kind is PortKind.SERVER:  # its counters outlive it, in the server's totals
            self.gone_peers.add(self.table.read(port.slot))
        self.table.release(port.slot)
        del self.ports[port.number]
        if unnumber and port.number == self._next_port - 1:
            self._next_port -= 1
        portstatus.remove(self.rundir, port.number)
        rings.remove_ring(port.ring)
        if (port.created_tap or port.declared) and not keep_device:
            try:
                tuntap.delete_persistent_tap(port.target)
            except OSError as exc:
                log.warning("port %d: could not delete TAP %s: %s", port.number,
                            port.target, exc)
        log.info("port %d: %s %s removed", port.number, port.kind.label, port.target)

    def restart(self, port: Port, now: float) -> None:
        """Operator restart: forget the crash history, start the worker now."""
        port.child.stop()
        port.child.life.reset()
        port.child.kill_reason = ""
        port.child.spawn(now, restart=True)
        log.info("port %d: restarted by request (pid %s)", port.number, port.child.pid)

    def set_shut(self, port: Port, shut: bool) -> None:
        """Shut a port (no frames in or out) or open it again."""
        self.table.set_shut(port.slot, shut)
        port.shut = shut
        if port.spec is not None:
            port.spec = replace(port.spec, shut=shut)

    # --- supervision -------------------------------------------------------------
    def link(self, port: Port) -> dict[str, object] | None:
        """A tunnel port's link status as its worker last wrote it, or None."""
        return portstatus.read(self.rundir, port.number) if port.kind in TUNNELS else None

    def _supervised(self) -> Iterator[tuple[str, Child, int, Port | None]]:
        yield "broker", self.broker, self.table.broker_heartbeat_ns(), None
        if self.listener is not None:
            yield "listener", self.listener, self.table.listener_heartbeat_ns(), None
        if self.zygote is not None:
            yield "zygote", self.zygote, self.zygote.beat_ns, None
        for port in list(self.ports.values()):
            yield f"port {port.number}", port.child, self.table.heartbeat_ns(port.slot), port

    def _ended(self, name: str, child: Child, rc: int, port: Port | None, now: float) -> None:
        """A process ended without being asked to: decide what follows."""
        killed, child.kill_reason = child.kill_reason, ""
        reason = killed or exit_reason(rc)
        if port is not None and port.kind is PortKind.SERVER:
            if rc == EXIT_AUTH_FAILED:
                self.peer_refused(port.target, now)
                reason = "refused a login"
            log.log(logging.INFO if rc in (0, EXIT_AUTH_FAILED) else logging.WARNING,
                    "%s: peer %s gone (%s)", name, port.target, reason)
            self.remove(port)
            return
        if port is not None and port.kind is PortKind.CLIENT and rc == 0:
            link = self.link(port)
            if link is not None and link["state"] == "failed":
                child.life.stopped()
                child.life.reason = str(link["error"])
                log.info("%s: gave up: %s", name, link["error"])
                return
        state = child.life.exited(now, reason, counted=bool(killed))
        if state is State.FATAL and child is self.broker:
            self.escalation = f"the broker crash-loops ({child.life.reason})"
        level = logging.ERROR if state is State.FATAL else logging.WARNING
        log.log(level, "%s: %s; %s", name, reason,
                "giving up (FATAL)" if state is State.FATAL else
                f"restart in {child.life.next_start_at - now:.1f}s"
                if child.life.next_start_at is not None else "")

    def tick(self, now: float) -> None:
        """Reap exits, watch heartbeats, start due restarts."""
        for name, child, hb_ns, port in self._supervised():
            rc = child.poll()
            if rc is not None and child.life.state is not State.STOPPED:
                self._ended(name, child, rc, port, now)
                if port is not None and port.number not in self.ports:
                    continue
            if child.popen is not None:
                self._watch(name, child, hb_ns, now)
            if child.life.due(now):
                try:
                    child.spawn(now, restart=True)
                except OSError as exc:  # fork failed: count it like a crash, retry later
                    child.life.exited(now, f"cannot start: {exc}")
                    log.error("%s: cannot start: %s", name, exc)
                    continue
                log.info("%s: restarted (pid %s)", name, child.pid)
        if self.zygote is not None:  # only then is anything adopted
            known = {c.pid for _, c, _, _ in self._supervised() if c.pid is not None}
            for pid in reap_strays(known):
                log.warning("reaped process %d, which no port knew", pid)

    def _watch(self, name: str, child: Child, hb_ns: int, now: float) -> None:
        """Note a running process's heartbeat (``hb_ns``) and kill it when it is hung."""
        last = hb_ns / 1e9 if hb_ns > child.spawned_ns else None
        if last is not None:
            child.life.heartbeat(now)
        hung = child.life.hung(now, last)
        if hung and last is not None:  # silent: blocked, stopped, or starved of CPU?
            hung = child.life.hung(now, last, runnable=child.runnable())
        if hung:
            log.warning("%s: %s; killing it", name, hung)
            child.kill_reason = hung
            child.kill()

    def stop_all(self, timeout_s: float = 3.0) -> None:
        """Orderly stop: every worker, then the broker; TAPs we created are deleted,
        unless the configuration file declares them (the next start adopts them).

        All workers get SIGTERM at once and share one deadline, so a few hung ones
        cannot make the stop take longer than ``timeout_s`` (plus the SIGKILL reap).
        """
        extra = [c for c in (self.listener, self.zygote) if c is not None]
        stop_children([p.child for p in self.ports.values()] + extra, timeout_s)
        for port in list(self.ports.values()):
            self.remove(port, keep_device=port.declared)
        stop_children([self.broker], timeout_s)


"""The switch's ports and the processes behind them (I/O: spawns, reaps, touches TAPs).

A port has a number (from 1, never reused while the supervisor runs), a slot in the
shared port table, and a worker process restarted by the policy in ``policy.py``. The
broker is supervised the same way, without a port number.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Callable, Iterator

from etherws import tables, tuntap
from etherws.supervisor.children import Child, exit_reason, stop_children
from etherws.supervisor.policy import RestartPolicy, State
from etherws.tables import PortKind, PortTable

log = logging.getLogger(__name__)

WORKER_MODULES = {
    PortKind.TAP: "etherws.workers.tap",
    PortKind.NETDEV: "etherws.workers.netdev",
}


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
    kill_reason: str = ""


class PortManager:
    """Owns every port and the broker: spawn, restart, watch heartbeats, remove."""

    def __init__(self, table: PortTable, child_args: Callable[[str], list[str]]) -> None:
        self.table = table
        self.ports: dict[int, Port] = {}
        self._child_args = child_args  # module -> argv prefix with rundir, pid, logging
        self._next_port = 1
        self._next_slot = 0
        # The switch is nothing without its broker: never give up on it (no FATAL); keep
        # retrying at the backoff cap instead.
        self.broker = Child(child_args("etherws.broker"),
                            RestartPolicy(max_crashes=sys.maxsize))
        self.broker_kill_reason = ""

    # --- ports ----------------------------------------------------------------
    def find_target(self, target: str) -> Port | None:
        """The port whose target (interface name, URL) is ``target``."""
        return next((p for p in self.ports.values() if p.target == target), None)

    def add(self, kind: PortKind, target: str, created_tap: bool, now: float) -> Port:
        """Create a port and start its worker; raises LookupError when the table is full."""
        slot = self.table.free_slot(self._next_slot)
        if slot is None:
            raise LookupError(f"all {self.table.nslots} port slots are in use")
        number = self._next_port
        argv = self._child_args(WORKER_MODULES[kind]) + [
            "--port", str(number), "--slot", str(slot), "--", target]
        port = Port(number, kind, target, slot, Child(argv), created_tap)
        self.table.claim(slot, number, kind)
        try:
            port.child.spawn(now)
        except OSError:  # fork failed (EAGAIN, ENOMEM): nothing may be left behind
            self.table.release(slot)
            raise
        self._next_port += 1
        self._next_slot = (slot + 1) % self.table.nslots
        self.ports[number] = port
        log.info("port %d: %s %s added (pid %s)", number, kind.label, target, port.child.pid)
        return port

    def remove(self, port: Port) -> None:
        """Stop the worker, free the slot, delete a TAP we created."""
        port.child.stop()
        self.table.release(port.slot)
        del self.ports[port.number]
        if port.created_tap:
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
        port.kill_reason = ""
        port.child.spawn(now, restart=True)
        log.info("port %d: restarted by request (pid %s)", port.number, port.child.pid)

    def set_shut(self, port: Port, shut: bool) -> None:
        """Shut a port (no frames in or out) or open it again."""
        self.table.set_shut(port.slot, shut)
        port.shut = shut

    # --- supervision -------------------------------------------------------------
    def _supervised(self) -> Iterator[tuple[str, Child, int, Port | None]]:
        hb = self.table.words[tables.H_BROKER_HEARTBEAT]
        yield "broker", self.broker, hb, None
        for port in list(self.ports.values()):
            b = self.table.base(port.slot)
            yield f"port {port.number}", port.child, self.table.words[b + tables.S_HEARTBEAT], port

    def tick(self, now: float) -> None:
        """Reap exits, watch heartbeats, start due restarts."""
        for name, child, hb_ns, port in self._supervised():
            rc = child.poll()
            if rc is not None and child.life.state not in (State.STOPPED,):
                reason = self._take_kill_reason(port) or exit_reason(rc)
                state = child.life.exited(now, reason)
                level = logging.ERROR if state is State.FATAL else logging.WARNING
                log.log(level, "%s: %s; %s", name, reason,
                        "giving up (FATAL)" if state is State.FATAL else
                        f"restart in {child.life.next_start_at - now:.1f}s"
                        if child.life.next_start_at is not None else "")
            if child.popen is not None:
                last = hb_ns / 1e9 if hb_ns > child.spawned_ns else None
                if last is not None:
                    child.life.heartbeat(now)
                hung = child.life.hung(now, last)
                if hung:
                    log.warning("%s: %s; killing it", name, hung)
                    self._set_kill_reason(port, hung)
                    child.kill()
            if child.life.due(now):
                try:
                    child.spawn(now, restart=True)
                except OSError as exc:  # fork failed: count it like a crash, retry later
                    child.life.exited(now, f"cannot start: {exc}")
                    log.error("%s: cannot start: %s", name, exc)
                    continue
                log.info("%s: restarted (pid %s)", name, child.pid)

    def _take_kill_reason(self, port: Port | None) -> str:
        if port is None:
            reason, self.broker_kill_reason = self.broker_kill_reason, ""
        else:
            reason, port.kill_reason = port.kill_reason, ""
        return reason

    def _set_kill_reason(self, port: Port | None, reason: str) -> None:
        if port is None:
            self.broker_kill_reason = reason
        else:
            port.kill_reason = reason

    def stop_all(self, timeout_s: float = 3.0) -> None:
        """Orderly stop: every worker, then the broker; TAPs we created are deleted.

        All workers get SIGTERM at once and share one deadline, so a few hung ones
        cannot make the stop take longer than ``timeout_s`` (plus the SIGKILL reap).
        """
        stop_children([p.child for p in self.ports.values()], timeout_s)
        for port in list(self.ports.values()):
            self.remove(port)
        stop_children([self.broker], timeout_s)


"""The broker's side of the loop guard: probes out, probes in, blocks applied (I/O glue).

``etherws.loopguard`` decides; this sends its probes into the ports' down rings, feeds it
the probes ``Forwarder`` took out of the traffic, floods the other switches' probes on
(never out of a blocked port, never back where they came from), and carries its
decisions into the forwarder, the FDB (a blocked port forgets what it learned, so its
stations are learned again on the path that stays) and the port table (``listport``
shows the port as ``loop``; the supervisor turns it into an event).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence

from etherws.broker.fdb import Fdb
from etherws.broker.forwarding import Forwarder
from etherws.frame import Frame
from etherws.loopguard import LoopGuard, parse
from etherws.tables import BrokerView

log = logging.getLogger("etherws.broker")

Deliver = Callable[[dict[int, list[Frame]]], None]
"""Copies frames into the ports' down rings (and wakes their workers)."""


def draw_switch_id() -> int:
    """A random 63-bit switch id (positive, never 0)."""
    return int.from_bytes(os.urandom(8), "big") >> 1 | 1


class LoopShell:
    """The loop guard of one broker."""

    def __init__(self, view: BrokerView, forwarder: Forwarder, fdb: Fdb,
                 switch: int) -> None:
        self.view = view
        self.forwarder = forwarder
        self.fdb = fdb
        self.guard = LoopGuard(switch, os.urandom(16))  # a key of this broker's only
        self._slots: dict[int, int] = {}  # port -> slot
        self._up_since: dict[int, float] = {}  # port -> when its worker attached
        self._live: set[int] = set()  # ports with rings, not shut
        self._restored = False

    def attached(self, port: int, now: float) -> None:
        """``port``'s worker attached: the port came up (the newest is blocked first)."""
        self._up_since[port] = now
        self._push_ports()

    def set_ports(self, slots: Mapping[int, int], shut: Mapping[int, bool],
                  now: float) -> None:
        """The ports with rings (port -> slot) and their shut flags; the first call after
        a start blocks again the ports a broker before us had blocked."""
        self._slots = dict(slots)
        for p in [p for p in self._up_since if p not in slots]:
            del self._up_since[p]
        self._live = {p for p in slots if not shut.get(p)}
        self._push_ports()
        if not self._restored:
            self._restored = True
            for port, slot in slots.items():
                if port in self._live and self.view.loop_since_ns(slot):
                    self.guard.restore(port, now)
                    log.warning("port %d: still blocked by the loop guard", port)
        for port, slot in slots.items():  # a port gone from the guard is not blocked
            if port not in self.guard.blocked and self.view.loop_since_ns(slot):
                self.view.set_loop(slot, 0)
        self.forwarder.set_blocked(self.guard.blocked)

    def _push_ports(self) -> None:
        """Tell the guard the live ports and when each came up."""
        self.guard.set_ports({p: self._up_since.get(p, 0.0) for p in self._live})

    def received(self, in_port: int, probes: Sequence[Frame], now: float) -> tuple[
            dict[int, list[Frame]], int]:
        """Feed the probes that came in by ``in_port`` to the guard; the other switches'
        probes to flood on, and how many probes were malformed."""
        onward: list[Frame] = []
        malformed = 0
        for f in probes:
            probe = parse(f)
            if probe is None:
                malformed += 1
                continue
            self.guard.received(in_port, probe, now)
            if self.guard.onward(in_port, probe, now):
                onward.append(f)
        if not onward:
            return {}, malformed
        return {p: onward for p in self.forwarder.flood_targets(in_port)}, malformed

    def tick(self, now: float, deliver: Deliver) -> None:
        """Send the round of probes when it is due, and carry out the guard's decisions
        (``now``: ``time.monotonic()``, the clock of the port table's ns words too)."""
        if not self.guard.due(now):
            return
        now_ns = int(now * 1e9)
        deliver({p: [f] for p, f in self.guard.probes(now).items()})
        changes = self.guard.decide(now)
        if not changes:
            return
        self.forwarder.set_blocked(self.guard.blocked)
        for change in changes:
            slot = self._slots.get(change.port)
            if slot is None:
                continue
            if change.blocked:
                self.view.set_loop(slot, now_ns)
                forgotten = self.fdb.flush_port(change.port)
                how = ("its own frames come back to it" if change.other == change.port
                       else f"this switch's probes come back between it and port "
                            f"{change.other}")
                log.warning("port %d: blocked by the loop guard: %s (%d addresses "
                            "forgotten; it is retried once the loop is gone)",
                            change.port, how, forgotten)
            else:
                self.view.set_loop(slot, 0)
                log.warning("port %d: the loop guard opened it again (no loop through it "
                            "any more)", change.port)

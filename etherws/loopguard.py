"""Loop guard: finds Ethernet loops with probe frames and blocks one port of each (pure).

Browser VMs and plain peers never run STP, so etherws does what "loop protect" does on
managed switches (MikroTik, HP, Cisco's keepalive): every INTERVAL_S the broker sends a
small probe frame out of every port, naming its switch and the port it left by. The
probes are multicast to ``PROBE_DST``: switches that know nothing of them (etherws 1.3,
Linux bridges, VXLAN fabrics) flood them like any other group frame, and an etherws
switch floods the probes of the others too (never learning their source), so a probe
follows every path a broadcast would. A switch that receives one of its own probes has
a loop: the probe left by port ``p`` and came back in by ``q`` (``p == q``: the port's
own frames come back). A probe carries a tag (HMAC of its switch, port and round with a
key only its broker knows): only the sending switch checks it, so a peer cannot make up
"your probe of port X came back by my port" to have another port blocked; all it can
send back are the probes it got, which name its own port. Each round of probes has a
sequence number and a switch floods
another's probe once only (``onward``): a probe caught in a loop its sender is not on
makes one lap, not a storm, while the loop waits to be cut.

Which port to block must be agreed: if both ends of a two-tunnel loop blocked a tunnel
each, possibly not the same one, the switches would be cut apart. So only one switch
acts: each switch's probes carry a flag "I see a loop among my forwarding ports", and a
switch blocks only when it has seen the loop for SETTLE_S (time for the others' flags to
arrive) and no switch with a higher id flags one. That switch blocks one port of the
loop, the one that came up last (the redundant link an operator just added), and the
loop is gone for everybody. Its probes then stop flagging; the next highest switch that
still sees a loop (a second one elsewhere) acts after it.

A blocked port forwards nothing but the probes: the switch still sends its own out of
it and reads those that come in, so it knows whether the loop would close again through
the port. The port is retried (opened) once its hold time has passed and none of the
switch's probes has crossed it for FRESH_S; a port blocked again within MAX_HOLD_S of
being opened is held twice as long as before (backoff), up to MAX_HOLD_S. A port that
goes away (its tunnel removed) is forgotten at once.

The guard treats the switch as one segment: it ignores VLANs (probes are untagged and
cross every port), as "loop protect" does on an access switch.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

PROBE_DST = bytes.fromhex("036574687773")
"""A locally administered multicast address (``03:65:74:68:77:73``): flooded by every
bridge; not 01:80:C2:00:00:0x, which Linux's bridge never forwards."""
ETHERTYPE = 0x88B6
"""IEEE 802 local experimental ethertype 2."""
MAGIC = b"etherws-loop/1"
PROBE_LEN = 60
"""The shortest Ethernet frame (without FCS): the probe fits in it."""
_HEAD = 6 + 6 + 2 + len(MAGIC)
_TAG = 8
_BODY = 8 + 4 + 4 + 1 + _TAG
_FLAG_LOOPED = 1

INTERVAL_S = 0.5
"""Probes a port gets: two a second, each 60 bytes."""
FRESH_S = 1.25
"""A loop is current while one of its probes came back this recently (2.5 intervals:
one lost probe does not end it)."""
FLAG_S = 3.0
"""How long another switch's "I see a loop" holds after its last probe said so. Longer
than FRESH_S: when the switch that acted has cut the loop, the others' own evidence
goes stale before its last flag does, so they never act on a loop already cut."""
SETTLE_S = 1.5
"""A loop seen this long before anything is blocked: the flags of every switch on it
have arrived by then (they see it within an interval of each other)."""
HOLD_S = 5.0
"""A blocked port is held at least this long."""
MAX_HOLD_S = 120.0
"""The longest hold, and how long after being opened a port's next block doubles it."""


ONWARD_PER_S = 50.0
"""Other switches' probes flooded on per second and ingress port (a burst of as many):
plenty for any real segment (two a second per port of every switch), and a hostile peer
that sends made-up probes cannot use the switch to flood them everywhere."""
_SEEN_ONWARD_S = 5.0
"""How long a probe flooded on is remembered, so its copies are not: longer than a lap."""
_MAX_SEEN_ONWARD = 4096
MAX_FLAGS = 1024
"""Other switches whose "I see a loop" is kept at once: a peer that makes up probes with
ever new switch ids cannot grow the table."""


@dataclass(frozen=True)
class Probe:
    """A probe as read from the wire: its switch, the port it left by, its round, its
    loop flag, its tag (``sign``)."""

    switch: int
    port: int
    seq: int
    looped: bool
    tag: bytes = bytes(_TAG)


def sign(key: bytes, switch: int, port: int, seq: int) -> bytes:
    """The tag of a probe: only the switch holding ``key`` can make it, or check it."""
    data = switch.to_bytes(8, "big") + port.to_bytes(4, "big") + seq.to_bytes(4, "big")
    return hmac.new(key, data, hashlib.sha256).digest()[:_TAG]


def probe_frame(switch: int, port: int, seq: int, looped: bool,
                tag: bytes = bytes(_TAG)) -> bytes:
    """The probe switch ``switch`` sends out of ``port`` in round ``seq``."""
    src = bytes([0x02]) + (switch & 0xFFFF_FFFF_FF).to_bytes(5, "big")
    body = (MAGIC + switch.to_bytes(8, "big") + port.to_bytes(4, "big")
            + (seq & 0xFFFF_FFFF).to_bytes(4, "big") + bytes([_FLAG_LOOPED if looped else 0])
            + tag[:_TAG].ljust(_TAG, b"\0"))
    return (PROBE_DST + src + ETHERTYPE.to_bytes(2, "big") + body).ljust(PROBE_LEN, b"\0")


def is_probe(frame: bytes | memoryview) -> bool:
    """True when ``frame`` is addressed as a probe (decided on the destination alone, so a
    broken probe is still never switched as data)."""
    return frame[:6] == PROBE_DST


def parse(frame: bytes | memoryview) -> Probe | None:
    """The probe in ``frame``, or None when it is not one of this version (malformed)."""
    if len(frame) < _HEAD + _BODY or frame[:6] != PROBE_DST \
            or frame[12:14] != ETHERTYPE.to_bytes(2, "big") or frame[14:_HEAD] != MAGIC:
        return None
    body = bytes(frame[_HEAD:_HEAD + _BODY])
    return Probe(int.from_bytes(body[:8], "big"), int.from_bytes(body[8:12], "big"),
                 int.from_bytes(body[12:16], "big"), bool(body[16] & _FLAG_LOOPED),
                 body[17:17 + _TAG])


@dataclass
class _Block:
    since: float
    hold: float


@dataclass(frozen=True)
class Change:
    """A port blocked or opened; ``other`` is the port the probe came back in by (or left
    by) that made the loop, for the log."""

    port: int
    blocked: bool
    other: int = 0


class LoopGuard:
    """One switch's loop guard; the broker feeds it probes and asks it what to do."""

    def __init__(self, switch: int, key: bytes, *, interval: float = INTERVAL_S,
                 fresh: float = FRESH_S, flag: float = FLAG_S, settle: float = SETTLE_S,
                 hold: float = HOLD_S, max_hold: float = MAX_HOLD_S) -> None:
        if switch <= 0:
            raise ValueError("a switch id is positive")
        if len(key) < 16:
            raise ValueError("a probe key has at least 16 bytes")
        self.switch = switch
        self.key = key
        self.interval, self.fresh, self.flag = interval, fresh, flag
        self.settle, self.hold, self.max_hold = settle, hold, max_hold
        self._order: dict[int, tuple[float, int]] = {}  # port -> its "came up" sort key
        self._seen: dict[tuple[int, int], tuple[float, float]] = {}
        """(left by, came in by) -> (first, last) time one of our probes took that path,
        first reset when the path went stale."""
        self._flags: dict[int, float] = {}  # other switch -> last time it flagged a loop
        self._blocked: dict[int, _Block] = {}
        self._opened: dict[int, tuple[float, float]] = {}  # port -> (when opened, its hold)
        self._next_probe = 0.0
        self._seq = 0
        self._onward: dict[tuple[int, int, int], float] = {}  # probes flooded on -> when
        self._budget: dict[int, tuple[float, float]] = {}  # ingress port -> (tokens, at)

    # --- what the broker tells it -------------------------------------------------------
    def set_ports(self, ports: Mapping[int, float]) -> None:
        """The live ports, each with when it came up (a sort key: the latest is blocked
        first); ports gone are forgotten, blocked or not."""
        self._order = {p: (t, p) for p, t in ports.items()}
        for table in (self._blocked, self._opened, self._budget):
            for p in [p for p in table if p not in ports]:
                del table[p]
        for path in [k for k in self._seen if k[0] not in ports or k[1] not in ports]:
            del self._seen[path]

    def restore(self, port: int, now: float) -> None:
        """``port`` was blocked before the broker restarted: blocked again, held anew."""
        self._blocked[port] = _Block(now, self.hold)

    def received(self, in_port: int, probe: Probe, now: float) -> None:
        """A probe came in by ``in_port``."""
        if probe.switch == self.switch:
            if probe.port in self._order and in_port in self._order and hmac.compare_digest(
                    probe.tag, sign(self.key, self.switch, probe.port, probe.seq)):
                path = (probe.port, in_port)
                first, last = self._seen.get(path, (now, now))
                self._seen[path] = (first if now - last <= self.fresh else now, now)
        elif probe.looped:
            if probe.switch not in self._flags and len(self._flags) >= MAX_FLAGS:
                self._expire_flags(now)
                if len(self._flags) >= MAX_FLAGS:
                    return
            self._flags[probe.switch] = now

    def onward(self, in_port: int, probe: Probe, now: float) -> bool:
        """True when another switch's ``probe`` that came in by ``in_port`` is to be
        flooded on: the first copy of it, within the port's budget, not by a blocked port
        (the guard's own probes never are)."""
        if probe.switch == self.switch or in_port in self._blocked:
            return False
        key = (probe.switch, probe.port, probe.seq)
        if key in self._onward and now - self._onward[key] <= _SEEN_ONWARD_S:
            return False
        tokens, at = self._budget.get(in_port, (ONWARD_PER_S, now))
        tokens = min(ONWARD_PER_S, tokens + (now - at) * ONWARD_PER_S)
        if tokens < 1.0:
            self._budget[in_port] = (tokens, now)
            return False
        self._budget[in_port] = (tokens - 1.0, now)
        if len(self._onward) >= _MAX_SEEN_ONWARD:
            self._onward = {k: t for k, t in self._onward.items()
                            if now - t <= _SEEN_ONWARD_S}
            if len(self._onward) >= _MAX_SEEN_ONWARD:  # all fresh: a flood of made-up ones
                self._onward.clear()
        self._onward[key] = now
        return True

    # --- what it tells the broker -----------------------------------------------------
    @property
    def blocked(self) -> frozenset[int]:
        """The ports blocked now."""
        return frozenset(self._blocked)

    def due(self, now: float) -> bool:
        """True when the next round of probes is due."""
        return now >= self._next_probe

    def probes(self, now: float) -> dict[int, bytes]:
        """The probe for every live port, blocked ones included; the next round is due
        an interval later."""
        self._next_probe = now + self.interval
        self._seq = (self._seq + 1) & 0xFFFF_FFFF
        looped = bool(self._loops(now))
        return {p: probe_frame(self.switch, p, self._seq, looped,
                               sign(self.key, self.switch, p, self._seq))
                for p in sorted(self._order)}

    def looped(self, now: float) -> bool:
        """True when a loop among the forwarding ports is current (the flag we send)."""
        return bool(self._loops(now))

    def decide(self, now: float) -> list[Change]:
        """Ports to open (hold over, no probe crossed them lately) and at most one port to
        block (see the module docstring)."""
        changes = [self._open(p, now) for p in sorted(self._blocked)
                   if self._openable(p, now)]
        loops = [path for path, (first, _) in self._loops(now).items()
                 if now - first >= self.settle]
        if loops and not self._higher_flags(now):
            ports = {p for path in loops for p in path}
            victim = max(ports, key=lambda p: self._order[p])
            other = next((q for a, b in loops for q in (a, b)
                          if victim in (a, b) and q != victim), victim)
            changes.append(self._block(victim, now, other))
        return changes

    # --- inside -----------------------------------------------------------------------
    def _loops(self, now: float) -> dict[tuple[int, int], tuple[float, float]]:
        """The current paths of our probes between two forwarding ports."""
        return {k: v for k, v in self._seen.items()
                if now - v[1] <= self.fresh and k[0] not in self._blocked
                and k[1] not in self._blocked}

    def _expire_flags(self, now: float) -> None:
        for switch, at in list(self._flags.items()):
            if now - at > self.flag:
                del self._flags[switch]

    def _higher_flags(self, now: float) -> bool:
        self._expire_flags(now)
        return any(s > self.switch for s in self._flags)

    def _openable(self, port: int, now: float) -> bool:
        block = self._blocked[port]
        if now - block.since < block.hold:
            return False
        return not any(port in path and now - last <= self.fresh
                       for path, (_, last) in self._seen.items())

    def _open(self, port: int, now: float) -> Change:
        self._opened[port] = (now, self._blocked.pop(port).hold)
        return Change(port, False)

    def _block(self, port: int, now: float, other: int) -> Change:
        hold = self.hold
        opened = self._opened.pop(port, None)
        if opened is not None and now - opened[0] < self.max_hold:
            hold = min(opened[1] * 2, self.max_hold)
        self._blocked[port] = _Block(now, hold)
        return Change(port, True, other)

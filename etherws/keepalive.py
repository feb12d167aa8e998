"""When a tunnel pings its peer and when it gives the peer up (pure: ``now`` comes in).

RFC 6455 §5.5.2: a ping may be sent at any time and the peer answers with a pong.
etherws pings a tunnel that has been silent ``interval_s`` (nothing at all received:
our own traffic proves nothing about the peer), and declares the peer dead when
nothing — a pong or any other byte — arrived within ``timeout_s`` of that ping. A
busy tunnel therefore never pings; an idle one pings every ``interval_s``.

Defaults: ``config.DEFAULT_PING_S`` each (20 s + 20 s). Times are float seconds on
the caller's monotonic clock.
"""

from __future__ import annotations

from enum import Enum

from etherws.config import DEFAULT_PING_S


class Verdict(Enum):
    """What the connection should do now."""

    WAIT = "wait"
    PING = "ping"
    DEAD = "dead"


class Keepalive:
    """The silence timer of one connection."""

    def __init__(self, now: float, interval_s: float = DEFAULT_PING_S,
                 timeout_s: float = DEFAULT_PING_S) -> None:
        if interval_s <= 0 or timeout_s <= 0:
            raise ValueError("ping interval and timeout must be positive")
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.last_heard = now
        """When the peer was last heard from (or when the connection started)."""
        self.ping_sent: float | None = None
        """When the unanswered ping went out; None while none is outstanding."""

    def heard(self, now: float) -> None:
        """Something arrived from the peer: it is alive, any ping is answered."""
        self.last_heard = now
        self.ping_sent = None

    def check(self, now: float) -> Verdict:
        """PING (once per silence: the caller sends it), DEAD, or WAIT."""
        if self.ping_sent is not None:
            return Verdict.DEAD if now - self.ping_sent >= self.timeout_s else Verdict.WAIT
        if now - self.last_heard >= self.interval_s:
            self.ping_sent = now
            return Verdict.PING
        return Verdict.WAIT

"""When a tunnel client tries to connect again (pure: the clock and the dice come in).

After a failure the first retry is at once, then after 1 s, doubling up to 60 s, each
delay but the first moved by a random ±20 %; a connection that stayed up 1 s counts as
healthy and the next drop starts the sequence again from "at once": a tunnel whose far
side restarts (a killed peer worker, a restarted switch) is back as soon as it can be,
however often that happens. A server that refuses, or drops links within a second of
accepting them, sees the delays climb, so a flapping server is not hammered.

Delays after consecutive failures (before jitter): 0, 1, 2, 4, 8, 16, 32, 60, 60 ...
With jitter the capped delay lies in [48, 72] s.

Times are float seconds on the caller's monotonic clock; the jitter is the caller's
random number in [-1, 1] (``random.uniform(-1, 1)``), so tests pass fixed values.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackoffPolicy:
    """The numbers of the policy; the defaults are the documented ones."""

    first_s: float = 1.0
    """Delay before the second retry (the first is immediate)."""
    cap_s: float = 60.0
    """Largest delay before jitter."""
    jitter: float = 0.2
    """Fraction by which a delay may move either way."""
    healthy_s: float = 1.0
    """A connection up this long resets the sequence."""

    def __post_init__(self) -> None:
        if not (0 < self.first_s <= self.cap_s and 0 <= self.jitter < 1 and self.healthy_s >= 0):
            raise ValueError(f"inconsistent backoff policy {self}")

    def delay_s(self, failures: int, jitter: float) -> float:
        """The wait after ``failures`` consecutive failures (>= 1), jitter applied."""
        if failures < 1:
            raise ValueError("failures counts from 1")
        if not -1.0 <= jitter <= 1.0:
            raise ValueError(f"jitter {jitter} is outside [-1, 1]")
        if failures == 1:
            return 0.0
        # 2.0 ** n stays finite for any n a process lives to see; min() caps it.
        base = min(self.first_s * 2.0 ** min(failures - 2, 64), self.cap_s)
        return base * (1.0 + self.jitter * jitter)


class Backoff:
    """Consecutive failures and the last connection's start: when to try next."""

    def __init__(self, policy: BackoffPolicy | None = None) -> None:
        self.policy = policy or BackoffPolicy()
        self.failures = 0
        """Failures since the last healthy connection (or since the start)."""
        self.up_since: float | None = None
        """When the current connection came up; None while there is none."""

    def connected(self, now: float) -> None:
        """A connection is up (the failure count stays until it proves healthy)."""
        self.up_since = now

    def healthy(self, now: float) -> bool:
        """True when the current connection has been up ``healthy_s``; resets the count."""
        if self.up_since is None or now - self.up_since < self.policy.healthy_s:
            return False
        self.failures = 0
        return True

    def failed(self, now: float, jitter: float) -> float:
        """An attempt failed or the connection dropped: the time of the next attempt."""
        self.healthy(now)
        self.up_since = None
        self.failures += 1
        return now + self.policy.delay_s(self.failures, jitter)

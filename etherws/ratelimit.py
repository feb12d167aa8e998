"""Rate limits (pure: ``now`` comes in): failed logins per source address, and when a
source must wait; token buckets.

A source that failed ``limit`` times within ``window_s`` is refused without any hashing
until its oldest failure in the window is ``window_s`` old: a password flood costs the
switch a canned answer per connection, not a bcrypt verification. At most ``max_keys``
sources are remembered (the least recently failed are forgotten first), so a flood from
many addresses cannot grow the table without bound.

``TokenBucket`` is the switch's policer: storm control (frames a second) and a port's rate
limit (bytes a second) in the broker.
"""

from __future__ import annotations

from collections import OrderedDict, deque

from etherws.tables import STORM_DEFAULT, STORM_OFF

DEFAULT_LIMIT = 5
DEFAULT_WINDOW_S = 60.0
MAX_KEYS = 4096


class FailureLimiter:
    """Failures per key in a sliding window; see the module docstring."""

    def __init__(self, limit: int = DEFAULT_LIMIT, window_s: float = DEFAULT_WINDOW_S,
                 max_keys: int = MAX_KEYS) -> None:
        if limit < 1 or window_s <= 0 or max_keys < 1:
            raise ValueError("limit, window_s and max_keys must be positive")
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def failed(self, key: str, now: float) -> None:
        """``key`` failed to log in at ``now``."""
        times = self._recent(key, now) or deque()
        times.append(now)
        while len(times) > self.limit:
            times.popleft()
        self._failures[key] = times
        self._failures.move_to_end(key)
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)

    def retry_after(self, key: str, now: float) -> float:
        """Seconds until ``key`` may try again; 0 when it may now."""
        if not self.blocked(key, now):
            return 0.0
        # Positive while blocked, even where the float sum rounds the wait away.
        return max(self._failures[key][0] + self.window_s - now, 1e-6)

    def blocked(self, key: str, now: float) -> bool:
        """True while ``key`` must wait: ``limit`` failures within the window."""
        times = self._recent(key, now)
        return times is not None and len(times) >= self.limit

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def __len__(self) -> int:
        return len(self._failures)


class TokenBucket:
    """A token bucket: ``rate`` tokens a second, at most ``burst`` saved (pure: ``now`` in).

    Tokens are frames for storm control and bytes for a rate limit. ``take`` spends
    ``n`` tokens when the bucket holds them and says whether it did: a policer (the
    excess is dropped by the caller), not a shaper (nothing waits). A new bucket is full.
    ``now`` is float seconds of a monotonic clock; a clock that goes back adds nothing.
    """

    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = float(rate)
        self.burst = float(burst)
        self._tokens = self.burst
        self._at = now

    def take(self, n: float, now: float) -> bool:
        """Spend ``n`` tokens at ``now`` if there are that many; True when spent."""
        if now > self._at:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
        if self._tokens >= n:
            self._tokens -= n
            return True
        return False

    @property
    def tokens(self) -> float:
        """Tokens held after the last ``take``."""
        return self._tokens


STORM_DEFAULT_PPS = 10_000
"""Storm control's default on tunnel ports (client and server), in broadcast, multicast
and unknown-unicast frames a second. A busy LAN's ARP, ND, mDNS and DHCP are some
hundreds a second; a loop through two tunnels circulates as many as the broker can
switch (some hundred thousand). TAP and netdev ports have no default limit: they carry
the host's own traffic, and Linux's bridge limits none either."""
STORM_BURST_S = 0.1
"""A storm bucket holds this many seconds of its rate (at least ``MIN_STORM_BURST``)."""
MIN_STORM_BURST = 64
"""One batch of the broker's, so a limit far below it still lets a burst of ARP through."""
RATE_BURST_S = 0.1
"""A rate bucket holds this many seconds of its rate (at least ``MIN_RATE_BURST``):
enough for TCP's bursts at the limit without letting much more through."""
MIN_RATE_BURST = 128 * 1024
"""Bytes: the longest frame (``frame.MAX_FRAME``) twice, so any frame can pass."""


def storm_bucket(pps: int, now: float) -> TokenBucket:
    """Storm control's bucket for a limit of ``pps`` frames a second."""
    return TokenBucket(pps, max(pps * STORM_BURST_S, MIN_STORM_BURST), now)


def rate_bucket(bits_per_s: int, now: float) -> TokenBucket:
    """A rate limit's bucket, in bytes, for ``bits_per_s``."""
    rate = bits_per_s / 8
    return TokenBucket(rate, max(rate * RATE_BURST_S, MIN_RATE_BURST), now)


def storm_limit(word: int, tunnel: bool) -> int:
    """The storm limit a port's table word means, frames a second (0: none): the word
    itself, or ``STORM_DEFAULT_PPS`` on a tunnel port that was given none."""
    if word == STORM_OFF:
        return 0
    if word == STORM_DEFAULT:
        return STORM_DEFAULT_PPS if tunnel else 0
    return word

"""Failed logins per source address, and when a source must wait (pure: ``now`` comes in).

A source that failed ``limit`` times within ``window_s`` is refused without any hashing
until its oldest failure in the window is ``window_s`` old: a password flood costs the
switch a canned answer per connection, not a bcrypt verification. At most ``max_keys``
sources are remembered (the least recently failed are forgotten first), so a flood from
many addresses cannot grow the table without bound.
"""

from __future__ import annotations

from collections import OrderedDict, deque

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
        times = self._recent(key, now)
        if times is None or len(times) < self.limit:
            return 0.0
        return max(0.0, times[0] + self.window_s - now)

    def blocked(self, key: str, now: float) -> bool:
        """True while ``key`` must wait."""
        return self.retry_after(key, now) > 0

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

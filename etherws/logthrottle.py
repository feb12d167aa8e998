"""Log lines that an outsider can provoke, at most one per key per interval (pure).

A refused remote-control connection is worth a log line; a thousand a second from one
scanner are not. ``Throttle.report`` says whether to log now, and how many reports of the
same key it held back since the last line, so the next line can say "(and N more)".
At most ``max_keys`` keys are remembered (the least recently reported are forgotten
first): a flood from many sources cannot grow the table without bound.
"""

from __future__ import annotations

from collections import OrderedDict

DEFAULT_INTERVAL_S = 60.0
MAX_KEYS = 4096


class Throttle:
    """One report per key per ``interval_s``; see the module docstring."""

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S, max_keys: int = MAX_KEYS) -> None:
        if interval_s <= 0 or max_keys < 1:
            raise ValueError("interval_s and max_keys must be positive")
        self.interval_s = interval_s
        self.max_keys = max_keys
        # key -> (time of the last line, reports held back since)
        self._last: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def report(self, key: str, now: float) -> int | None:
        """An event of ``key`` at ``now``: None to stay silent, else the number of its
        events held back since its last line (0 for a first or a rare one)."""
        seen = self._last.get(key)
        if seen is not None and now - seen[0] < self.interval_s:
            self._last[key] = (seen[0], seen[1] + 1)
            return None
        held = seen[1] if seen is not None else 0
        self._last[key] = (now, 0)
        self._last.move_to_end(key)
        while len(self._last) > self.max_keys:
            self._last.popitem(last=False)
        return held

    def __len__(self) -> int:
        return len(self._last)

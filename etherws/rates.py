"""Per-port rates from two listPort snapshots, for ``etherws-ctl top`` (pure).

A snapshot is the entries of one listPort reply and the monotonic time it arrived. A
port's rates are its counter differences over the time between two snapshots; a port
that was not in the first snapshot, or whose counters went backwards (another port
under the same number, a slot reused), has no rates yet rather than wrong ones.
Rows are sorted by traffic (bytes per second in and out), busiest first, then by
frames per second, then by port number, so an idle switch keeps a stable order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

COUNTERS = ("rx", "tx", "rx_bytes", "tx_bytes", "drops")
"""The listPort counters top turns into rates."""

Entry = Mapping[str, Any]


@dataclass(frozen=True)
class Snapshot:
    """One listPort result and the (monotonic) time it arrived."""

    at_s: float
    entries: Sequence[Entry]


@dataclass(frozen=True)
class Rates:
    """Per-second rates of one port (or of all of them)."""

    rx_fps: float = 0.0
    tx_fps: float = 0.0
    rx_bps: float = 0.0
    """Bits per second."""
    tx_bps: float = 0.0
    drops_ps: float = 0.0

    @property
    def traffic_bps(self) -> float:
        """Bits per second in and out: what top sorts by."""
        return self.rx_bps + self.tx_bps

    @property
    def frames_ps(self) -> float:
        """Frames per second in and out."""
        return self.rx_fps + self.tx_fps

    def __add__(self, other: Rates) -> Rates:
        return Rates(self.rx_fps + other.rx_fps, self.tx_fps + other.tx_fps,
                     self.rx_bps + other.rx_bps, self.tx_bps + other.tx_bps,
                     self.drops_ps + other.drops_ps)


@dataclass(frozen=True)
class Row:
    """A port as top shows it: its latest listPort entry and its rates (None: not
    known yet)."""

    entry: Entry
    rates: Rates | None


def _counter(entry: Entry, key: str) -> int | None:
    value = entry.get(key)
    # bool is an int in Python; a counter never is one
    return value if isinstance(value, int) and not isinstance(value, bool) \
        and value >= 0 else None


def _same_port(a: Entry, b: Entry) -> bool:
    return all(a.get(k) == b.get(k) for k in ("port", "type", "target"))


def rates(before: Entry, after: Entry, dt_s: float) -> Rates | None:
    """The rates of one port between two of its entries ``dt_s`` apart, or None when
    they cannot be known (no time passed, a counter missing or gone backwards, or the
    entries are of different ports)."""
    if dt_s <= 0 or not _same_port(before, after):
        return None
    deltas: list[float] = []
    for key in COUNTERS:
        a, b = _counter(before, key), _counter(after, key)
        if a is None or b is None or b < a:
            return None
        deltas.append((b - a) / dt_s)
    rx, tx, rx_bytes, tx_bytes, drops = deltas
    return Rates(rx, tx, rx_bytes * 8, tx_bytes * 8, drops)


def _sort_key(row: Row) -> tuple[float, float, int]:
    r = row.rates or Rates()
    port = row.entry.get("port")
    return (-r.traffic_bps, -r.frames_ps, port if isinstance(port, int) else 0)


def rows(before: Snapshot | None, after: Snapshot) -> list[Row]:
    """Every port of ``after`` with its rates since ``before``, busiest first."""
    earlier: dict[Any, Entry] = {}
    if before is not None:
        earlier = {e.get("port"): e for e in before.entries}
    dt_s = after.at_s - before.at_s if before is not None else 0.0
    out = []
    for entry in after.entries:
        prev = earlier.get(entry.get("port"))
        out.append(Row(entry, rates(prev, entry, dt_s) if prev is not None else None))
    out.sort(key=_sort_key)
    return out


def total(shown: Sequence[Row]) -> Rates:
    """The switch's rates: the sum over the ports whose rates are known."""
    sum_ = Rates()
    for row in shown:
        if row.rates is not None:
            sum_ = sum_ + row.rates
    return sum_

"""What ``etherws-ctl top`` shows: columns, cells and the plain-text table (pure).

The live view (rich) and the plain repeated tables (stdout not a terminal) show the same
cells, made here from ``rates.Row``; rates not known yet show as ``-``.
"""

from __future__ import annotations

from collections.abc import Sequence

from etherws.ctl.render import (
    Column,
    duration,
    number,
    percent,
    port_state,
    size,
    table,
    text,
)
from etherws.rates import Rates, Row

COLUMNS = (
    Column("PORT", True), Column("NAME"), Column("TYPE"), Column("TARGET"),
    Column("STATE"), Column("LINK"), Column("RX/s", True), Column("TX/s", True),
    Column("RX Mbit/s", True), Column("TX Mbit/s", True), Column("DROPS/s", True),
    Column("CPU", True), Column("RSS", True), Column("RESTARTS", True),
    Column("UPTIME", True),
)


def per_second(value: float | None) -> str:
    """A count per second: ``0``, ``950``, ``12.3K``; ``-`` when not known."""
    return size(round(value)) if value is not None else "-"


def mbit(bits_per_s: float | None) -> str:
    """Bits per second as Mbit/s with one decimal: ``0.0``, ``941.2``; ``-`` if unknown."""
    return "-" if bits_per_s is None else f"{bits_per_s / 1e6:.1f}"


def cells(row: Row) -> list[str]:
    """One port's cells, in COLUMNS' order."""
    e, r = row.entry, row.rates

    def rate(get: str) -> float | None:
        return None if r is None else float(getattr(r, get))
    return [
        number(e.get("port")), text(e.get("name")), text(e.get("type")),
        text(e.get("target")), port_state(e), text(e.get("link")),
        per_second(rate("rx_fps")), per_second(rate("tx_fps")),
        mbit(rate("rx_bps")), mbit(rate("tx_bps")), per_second(rate("drops_ps")),
        percent(e.get("cpu")), size(e.get("rss")), number(e.get("restarts")),
        duration(e.get("uptime")),
    ]


def summary(shown: Sequence[Row], sum_: Rates, clock: str) -> str:
    """The line above the table: ``12:00:05  3 ports  rx 1.2K/s 12.3 Mbit/s  tx ...``."""
    count = len(shown)
    return (f"{clock}  {count} port{'' if count == 1 else 's'}  "
            f"rx {per_second(sum_.rx_fps)}/s {mbit(sum_.rx_bps)} Mbit/s  "
            f"tx {per_second(sum_.tx_fps)}/s {mbit(sum_.tx_bps)} Mbit/s  "
            f"drops {per_second(sum_.drops_ps)}/s")


def plain(shown: Sequence[Row], sum_: Rates, clock: str) -> str:
    """One refresh as plain text: the summary line, then the table."""
    return summary(shown, sum_, clock) + "\n" + table(COLUMNS, [cells(r) for r in shown])

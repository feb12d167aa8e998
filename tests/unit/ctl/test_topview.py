"""top's cells and plain table: every column, unknown rates as ``-``."""

from __future__ import annotations

from etherws.ctl import topview
from etherws.rates import Rates, Row

ENTRY = {"port": 3, "name": "uplink", "type": "client", "target": "wss://gw.example/",
         "state": "up", "shut": False, "link": "up", "cpu": 1.25, "rss": 21000000,
         "restarts": 2, "uptime": 185.0}


def test_cells_follow_the_columns() -> None:
    row = Row(ENTRY, Rates(rx_fps=12345.0, tx_fps=950.0, rx_bps=941.24e6, tx_bps=0.0,
                           drops_ps=3.0))
    cells = topview.cells(row)
    assert len(cells) == len(topview.COLUMNS)
    assert dict(zip([c.title for c in topview.COLUMNS], cells)) == {
        "PORT": "3", "NAME": "uplink", "TYPE": "client", "TARGET": "wss://gw.example/",
        "STATE": "up", "LINK": "up", "RX/s": "12.3K", "TX/s": "950",
        "RX Mbit/s": "941.2", "TX Mbit/s": "0.0", "DROPS/s": "3", "CPU": "1.2%",
        "RSS": "21.0M", "RESTARTS": "2", "UPTIME": "3m05s"}


def test_unknown_rates_and_missing_fields_show_as_dashes() -> None:
    cells = topview.cells(Row({"port": 1, "state": "fatal", "shut": True}, None))
    assert cells == ["1", "-", "-", "-", "fatal,shut", "-", "-", "-", "-", "-", "-",
                     "-", "-", "-", "-"]


def test_units() -> None:
    assert [topview.per_second(v) for v in (None, 0.0, 0.4, 999.6, 1500.0, 2.5e6)] == \
        ["-", "0", "0", "1.0K", "1.5K", "2.5M"]
    assert [topview.mbit(v) for v in (None, 0.0, 49999.0, 1e9)] == \
        ["-", "0.0", "0.0", "1000.0"]


def test_plain_is_a_summary_line_then_the_table() -> None:
    rows = [Row(ENTRY, Rates(rx_fps=10.0, rx_bps=8e6)), Row({**ENTRY, "port": 4}, None)]
    text = topview.plain(rows, Rates(rx_fps=10.0, rx_bps=8e6), "12:00:05")
    lines = text.splitlines()
    assert lines[0] == ("12:00:05  2 ports  rx 10/s 8.0 Mbit/s  tx 0/s 0.0 Mbit/s  "
                        "drops 0/s")
    assert lines[1].split()[:4] == ["PORT", "NAME", "TYPE", "TARGET"]
    assert lines[2].split()[:11] == ["3", "uplink", "client", "wss://gw.example/", "up",
                                     "up", "10", "0", "8.0", "0.0", "0"]
    assert lines[3].split()[6:11] == ["-", "-", "-", "-", "-"]
    assert topview.summary(rows[:1], Rates(), "x").startswith("x  1 port  ")

"""etherws.ctl.render: etherws-ctl's tables and units."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etherws.ctl import render
from etherws.ctl.render import Column

PORT_UP = {"port": 1, "type": "tap", "target": "ethws0", "state": "up", "shut": False,
           "pid": 4242, "restarts": 0, "uptime": 12.5, "cpu": 0.3, "rss": 21000000, "rx": 10,
           "tx": 12, "rx_bytes": 980, "tx_bytes": 1200, "drops": 0, "errors": 0, "reason": "",
           "next_retry": None}
PORT_BACKOFF = {**PORT_UP, "port": 12, "type": "client", "target": "wss://example.net/",
                "state": "backoff", "shut": True, "pid": None, "restarts": 3, "uptime": None,
                "cpu": None, "rss": None, "rx": 100000, "drops": 5,
                "reason": "exited with status 1", "next_retry": 4.2}


# --- units ---------------------------------------------------------------------------------
@pytest.mark.parametrize("seconds, text", [
    (None, "-"), (0, "0s"), (0.9, "0s"), (12.5, "12s"), (59.99, "59s"), (60, "1m00s"),
    (184, "3m04s"), (3599, "59m59s"), (3600, "1h00m"), (7500, "2h05m"), (86399, "23h59m"),
    (86400, "1d00h"), (273600, "3d04h"), (400 * 86400, "400d00h"), (-5, "0s"),
])
def test_duration(seconds: float | None, text: str) -> None:
    assert render.duration(seconds) == text


@pytest.mark.parametrize("nbytes, text", [
    (None, "-"), (0, "0"), (980, "980"), (999, "999"), (1000, "1.0K"), (1200, "1.2K"),
    (3_400_000, "3.4M"), (21_000_000, "21.0M"), (5_600_000_000, "5.6G"),
    (999_960, "1.0M"),                 # would round to "1000.0K"
    (999_949, "999.9K"),
    (7_300_000_000_000, "7.3T"), (10**18, "1000.0P"),
])
def test_size(nbytes: int | None, text: str) -> None:
    assert render.size(nbytes) == text


@pytest.mark.parametrize("value, text", [(None, "-"), (0, "0.0%"), (0.3, "0.3%"),
                                         (12.345, "12.3%"), (250, "250.0%")])
def test_percent(value: float | None, text: str) -> None:
    assert render.percent(value) == text


@pytest.mark.parametrize("fn, value, text", [
    (render.number, None, "-"), (render.number, 0, "0"), (render.number, 17, "17"),
    (render.text, None, "-"), (render.text, "", "-"), (render.text, "eth0", "eth0"),
])
def test_cells(fn: Any, value: Any, text: str) -> None:
    assert fn(value) == text


@given(st.floats(0, 999 * 86400, allow_nan=False))
def test_duration_is_short(seconds: float) -> None:
    assert len(render.duration(seconds)) <= 7


@given(st.integers(0, 10**17))
def test_size_is_short(nbytes: int) -> None:
    assert len(render.size(nbytes)) <= 6


# --- tables ----------------------------------------------------------------------------------
def test_table_alignment() -> None:
    cols = (Column("N", True), Column("NAME"), Column("COUNT", True))
    out = render.table(cols, [["1", "a", "5"], ["12", "longer", "1234567"]])
    assert out.split("\n") == [
        " N  NAME      COUNT",
        " 1  a             5",
        "12  longer  1234567",
    ]


def test_table_without_rows_is_its_header() -> None:
    assert render.table((Column("A"), Column("B", True)), []) == "A  B"


def test_table_strips_trailing_blanks() -> None:
    out = render.table((Column("A"), Column("LONGTITLE")), [["x", ""]])
    assert out.split("\n") == ["A  LONGTITLE", "x"]


def test_table_refuses_ragged_rows() -> None:
    with pytest.raises(ValueError):
        render.table((Column("A"), Column("B")), [["1"]])


words = st.text(alphabet="abcxyz0123456789:-./", min_size=1, max_size=12)


@given(st.lists(st.booleans(), min_size=1, max_size=5).flatmap(
    lambda numeric: st.tuples(st.just(numeric),
                              st.lists(st.lists(words, min_size=len(numeric),
                                                max_size=len(numeric)), max_size=6))))
def test_table_property(case: tuple[list[bool], list[list[str]]]) -> None:
    numeric, rows = case
    cols = [Column(f"C{i}", n) for i, n in enumerate(numeric)]
    lines = render.table(cols, rows).split("\n")
    assert len(lines) == len(rows) + 1
    assert lines[0].split() == [c.title for c in cols]
    for line, row in zip(lines[1:], rows):
        assert line.split() == row
        assert line == line.rstrip()
    # Every column ends (right-aligned) or starts (left-aligned) at one offset on all lines.
    for i, col in enumerate(cols):
        edges = set()
        for line, cells in zip(lines, [[c.title for c in cols]] + rows):
            start = _cell_start(line, cells, i)
            edges.add(start + len(cells[i]) if col.numeric else start)
        assert len(edges) == 1


def _cell_start(line: str, cells: list[str], index: int) -> int:
    pos = 0
    for i, cell in enumerate(cells):
        pos = line.index(cell, pos)
        if i == index:
            return pos
        pos += len(cell)
    raise AssertionError("unreachable")


# --- listport ----------------------------------------------------------------------------
def test_ports() -> None:
    assert render.ports({"entries": [PORT_UP]}).split("\n") == [
        "PORT  TYPE  TARGET  STATE   PID  RESTARTS  UPTIME   CPU    RSS  RX  TX  DROPS",
        "   1  tap   ethws0  up     4242         0     12s  0.3%  21.0M  10  12      0",
    ]


def test_ports_with_a_reason() -> None:
    lines = render.ports({"entries": [PORT_UP, PORT_BACKOFF]}).split("\n")
    assert lines[0].endswith("DROPS  REASON")
    assert lines[1].endswith("0")  # no reason: nothing after DROPS
    assert "backoff,shut" in lines[2]
    assert lines[2].endswith("      5  exited with status 1, retry in 4s")
    assert lines[2].split()[4:9] == ["-", "3", "-", "-", "-"]


@pytest.mark.parametrize("entry, reason", [
    ({"reason": "exited with status 1"}, "exited with status 1"),
    ({"reason": "", "next_retry": 125}, "retry in 2m05s"),
    ({"reason": "killed by SIGSEGV", "next_retry": 0.5}, "killed by SIGSEGV, retry in 0s"),
    ({}, ""),
])
def test_port_reason(entry: dict[str, Any], reason: str) -> None:
    assert render.port_reason(entry) == reason


@pytest.mark.parametrize("state, shut, text", [
    ("up", False, "up"), ("up", True, "up,shut"), ("fatal", True, "fatal,shut"),
    (None, False, "-"),
])
def test_port_state(state: str | None, shut: bool, text: str) -> None:
    assert render.port_state({"state": state, "shut": shut}) == text


def test_ports_tolerates_missing_fields_and_odd_shapes() -> None:
    lines = render.ports({"entries": [{"port": 3}, "junk"]}).split("\n")
    assert len(lines) == 2 and lines[1].split() == ["3"] + ["-"] * 11
    assert render.ports({}) == render.ports({"entries": []}) == render.ports({"entries": 5})
    assert render.ports({}).startswith("PORT  TYPE")


# --- listif --------------------------------------------------------------------------------
def test_interfaces() -> None:
    result = {"entries": [
        {"port": 1, "type": "tap", "target": "ethws0", "address": "192.0.2.1",
         "netmask": "255.255.255.0", "mtu": 1500,
         "addresses": ["192.0.2.1/24", "2001:db8::1/64", "198.51.100.7/32"]},
        {"port": 2, "type": "netdev", "target": "eth1", "address": "", "netmask": "",
         "mtu": 9000, "addresses": []},
    ]}
    assert render.interfaces(result).split("\n") == [
        "PORT  TYPE    TARGET  ADDRESS       NETMASK           MTU",
        "   1  tap     ethws0  192.0.2.1     255.255.255.0    1500",
        "                      2001:db8::1   /64",
        "                      198.51.100.7  255.255.255.255",
        "   2  netdev  eth1    -             -                9000",
    ]


def test_interfaces_without_an_address_list() -> None:
    # An older supervisor: address and netmask only.
    out = render.interfaces({"entries": [{"port": 4, "type": "tap", "target": "t", "mtu": 1400,
                                          "address": "10.0.0.1", "netmask": "255.0.0.0"}]})
    assert out.split("\n")[1].split() == ["4", "tap", "t", "10.0.0.1", "255.0.0.0", "1400"]


@pytest.mark.parametrize("cidr, split", [
    ("192.0.2.1/24", ("192.0.2.1", "255.255.255.0")),
    ("192.0.2.1", ("192.0.2.1", "255.255.255.255")),
    ("2001:db8::1/64", ("2001:db8::1", "/64")),
    ("fe80::1/64", ("fe80::1", "/64")),
    ("garbage", ("garbage", "")),
])
def test_split_address(cidr: str, split: tuple[str, str]) -> None:
    assert render.split_address(cidr) == split


# --- listfdb --------------------------------------------------------------------------------
def test_fdb() -> None:
    result = {"entries": [{"vid": 0, "mac": "02:00:00:00:00:01", "port": 1, "age": 3},
                          {"vid": 100, "mac": "02:00:00:00:00:02", "port": 12, "age": 250}]}
    assert render.fdb(result).split("\n") == [
        "VID  MAC                PORT    AGE",
        "  0  02:00:00:00:00:01     1     3s",
        "100  02:00:00:00:00:02    12  4m10s",
    ]


# --- status -----------------------------------------------------------------------------------
def test_status() -> None:
    result = {"entries": [{"pid": 4242, "rundir": "/run/etherws", "uptime": 7500, "ports": 3,
                           "broker": {"state": "up", "pid": 4243, "restarts": 1},
                           "fdb": {"entries": 12, "capacity": 4096, "refused_full": 5,
                                   "refused_port": 0, "held_moves": 7}}]}
    assert render.status(result).split("\n") == [
        "supervisor  pid 4242, up 2h05m",
        "rundir      /run/etherws",
        "ports       3",
        "broker      up, pid 4243, 1 restarts",
        "fdb         12 of 4096 entries, refused: 5 table full, 0 port limit; 7 moves held",
    ]


def test_status_shows_the_loop_guard_and_the_ports_it_blocks() -> None:
    entry = {"loop_guard": True, "switch_id": "00000000000004d2", "loop_blocked": []}
    lines = render.status({"entries": [entry]}).split("\n")
    assert "loop guard  switch id 00000000000004d2" in lines
    entry["loop_blocked"] = [3, 7]
    lines = render.status({"entries": [entry]}).split("\n")
    assert "loop guard  switch id 00000000000004d2; blocks port 3, 7" in lines
    lines = render.status({"entries": [{"loop_guard": False}]}).split("\n")
    assert "loop guard  off (--no-loop-guard)" in lines


def test_status_shows_why_the_broker_is_down() -> None:
    broker = {"state": "backoff", "pid": None, "restarts": 4, "reason": "killed by SIGKILL"}
    out = render.status({"entries": [{"broker": broker}]})
    assert "broker      backoff, pid -, 4 restarts (killed by SIGKILL)" in out.split("\n")


def test_status_tolerates_missing_parts() -> None:
    out = render.status({"entries": [{"pid": 1, "broker": None}]})
    assert "broker      -, pid -, - restarts" in out.split("\n")
    assert render.status({"entries": []}) == ""


def test_ports_show_names_when_a_port_has_one() -> None:
    named = {**PORT_UP, "port": 2, "target": "ethws1", "name": "lan"}
    lines = render.ports({"entries": [PORT_UP, named]}).split("\n")
    assert lines[0].startswith("PORT  NAME  TYPE  TARGET")
    assert lines[1].split()[:3] == ["1", "-", "tap"]
    assert lines[2].split()[:3] == ["2", "lan", "tap"]


def test_unsaved_ports_say_so_in_their_state() -> None:
    assert render.port_state({"state": "up", "shut": True, "unsaved": True}) == \
        "up,shut,unsaved"
    assert render.port_state({"state": "up", "unsaved": False}) == "up"


def test_saved_and_changes() -> None:
    assert render.saved({"entries": [{"path": "/e/x.toml", "ports": 1}]}) == \
        "saved 1 port to /e/x.toml"
    assert render.saved({"entries": [{"path": "/e/x.toml", "ports": 3}]}) == \
        "saved 3 ports to /e/x.toml"
    assert render.changes({"entries": [{"change": "added port 3 (x)"},
                                       {"change": "removed port 4 (y)"}]}) == \
        "added port 3 (x)\nremoved port 4 (y)"


def test_status_shows_the_listener_when_there_is_one() -> None:
    entry = {"pid": 1, "broker": {"state": "up", "pid": 2, "restarts": 0},
             "listener": {"state": "up", "pid": 3, "restarts": 4, "reason": "killed"}}
    lines = render.status({"entries": [entry]}).split("\n")
    assert any(line.startswith("listener") and "pid 3, 4 restarts (killed)" in line
               for line in lines)
    entry["listener"] = None
    assert "listener" not in render.status({"entries": [entry]})


def test_status_shows_what_gone_peers_carried() -> None:
    entry = {"pid": 1, "broker": {}, "gone_peers": {"peers": 2, "rx": 5, "tx": 6,
                                                    "drops": 1, "errors": 0}}
    assert "gone peers  2: rx 5, tx 6, drops 1, errors 0" in render.status({"entries": [entry]})
    entry["gone_peers"] = {"peers": 0}
    assert "gone peers" not in render.status({"entries": [entry]})


def test_ports_show_a_vlan_column_when_a_port_has_a_vlan_setting() -> None:
    assert "VLAN" not in render.ports({"entries": [PORT_UP]}).split("\n")[0]
    access = {**PORT_UP, "port": 2, "vlan": 10}
    trunk = {**PORT_UP, "port": 3, "trunk": "10,20", "native": 1}
    lines = render.ports({"entries": [PORT_UP, access, trunk]}).split("\n")
    assert lines[0].split()[:5] == ["PORT", "TYPE", "TARGET", "STATE", "VLAN"]
    assert lines[1].split()[3:5] == ["up", "-"]
    assert lines[2].split()[3:5] == ["up", "10"]
    assert "trunk 10,20 native 1" in lines[3]


@pytest.mark.parametrize("entry, text", [
    ({}, "-"), ({"vlan": 10}, "10"), ({"trunk": "all"}, "trunk all"),
    ({"trunk": "5", "native": 2}, "trunk 5 native 2"), ({"vlan": None, "trunk": None}, "-"),
    ({"token_vlan": 10, "max_macs": 2}, "10 (token)"), ({"vlan": 20, "token_vlan": 10}, "20"),
])
def test_port_vlan(entry: dict[str, Any], text: str) -> None:
    assert render.port_vlan(entry) == text


def test_status_says_when_peers_are_isolated() -> None:
    on = render.status({"entries": [{"pid": 1, "isolate": True, "move_hold": 2.0}]})
    off = render.status({"entries": [{"pid": 1, "isolate": False, "move_hold": 2.0}]})
    assert "isolate     peers cannot reach each other" in on.split("\n")
    assert "isolate" not in off


def _probe(**fields: Any) -> dict[str, Any]:
    entry = {"port": 3, "name": "hq", "answered": True, "asked": 9014, "rtt_ms": 1.234,
             "rtt_min_ms": 1.234, "largest": 1514, "lost": [4096, 9014],
             "far_max_message": 65535, "sizes": [1514, 4096, 9014]}
    return {"entries": [{**entry, **fields}]}


@pytest.mark.parametrize("fields, text", [
    ({}, "port 3 (hq): round trip 1.23 ms, largest frame 1514 bytes "
         "(of 9014 asked; lost: 4096, 9014)"),
    ({"name": None, "lost": [], "largest": 9014, "rtt_min_ms": 0.5},
     "port 3: round trip 1.23 ms (min 0.50), largest frame 9014 bytes (of 9014 asked)"),
    ({"far_max_message": 2000, "largest": 2000, "lost": []},
     "port 3 (hq): round trip 1.23 ms, largest frame 2000 bytes "
     "(of 9014 asked; the far side takes at most 2000)"),
    ({"largest": None, "lost": [1514]},
     "port 3 (hq): round trip 1.23 ms, no probe frame got through "
     "(of 9014 asked; lost: 1514)"),
    ({"answered": False}, "port 3 (hq): no answer to probes: the far side is not an "
     "etherws switch that answers them (etherws 1.3, a browser VM), or the tunnel drops "
     "them"),
])
def test_probe(fields: dict[str, Any], text: str) -> None:
    assert render.probe(_probe(**fields)) == text


def test_probe_tolerates_missing_fields() -> None:
    assert render.probe({"entries": [{"answered": True}]}) == (
        "port -: round trip -, no probe frame got through (of - asked)")
    assert render.probe({}) == ""


def test_a_token_alone_on_the_last_line() -> None:
    entry = {"token": "AQAA.tag", "id": "0102030405060708", "expires": 1_800_003_600,
             "ttl": 3600.0, "vlan": 10, "max_macs": 2}
    lines = render.token({"entries": [entry]}).split("\n")
    assert lines[-1] == "AQAA.tag"
    assert lines[0] == "expires   2027-01-15 09:00:00 UTC (in 1h00m)"
    assert lines[1:4] == ["vlan      10", "max macs  2", "token id  0102030405060708"]
    assert render.token({"entries": [{**entry, "vlan": None}]}).split("\n")[1] == \
        "vlan      -"


def test_a_token_view_tolerates_missing_fields() -> None:
    assert render.token({}).split("\n")[-1] == "-"

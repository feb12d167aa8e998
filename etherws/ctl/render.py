"""Tables and units for etherws-ctl output (pure: results in, text out).

Every renderer takes a control result (``{"entries": [...]}``, shapes in control.py's
callers and the README) and returns the text to print, without a trailing newline.
Renderers are lenient about shape: a missing field shows as ``-`` rather than failing,
so an older ctl can still show a newer supervisor's answer.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

NONE = "-"
GAP = "  "
_UNITS = ("K", "M", "G", "T", "P")


@dataclass(frozen=True)
class Column:
    """A table column: its title and whether it is numeric (right-aligned)."""

    title: str
    numeric: bool = False


# --- units -----------------------------------------------------------------------
def duration(seconds: float | None) -> str:
    """``12s``, ``3m04s``, ``2h05m``, ``3d04h``: two units at most, rounded down."""
    if seconds is None:
        return NONE
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def size(nbytes: float | None) -> str:
    """Bytes in SI units, as ``ip -h`` shows them: ``980``, ``1.2K``, ``21.0M``, ``5.6G``."""
    if nbytes is None:
        return NONE
    if nbytes < 1000:
        return str(int(nbytes))
    value = float(nbytes)
    for unit in _UNITS:
        value /= 1000
        # Switch units before rounding could print "1000.0K".
        if round(value, 1) < 1000 or unit == _UNITS[-1]:
            return f"{value:.1f}{unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def percent(value: float | None) -> str:
    """A CPU share: ``0.3%``."""
    return NONE if value is None else f"{value:.1f}%"


def number(value: Any) -> str:
    """An integer count as text; None as ``-``."""
    return NONE if value is None else str(value)


def text(value: Any) -> str:
    """A text field; None and ``""`` as ``-``."""
    return NONE if value is None or value == "" else str(value)


# --- tables ----------------------------------------------------------------------
def table(columns: Sequence[Column], rows: Iterable[Sequence[str]]) -> str:
    """An aligned table with a header row: numeric columns (and their titles) right-aligned,
    text left; no trailing blanks."""
    body = [list(r) for r in rows]
    for r in body:
        if len(r) != len(columns):
            raise ValueError(f"row has {len(r)} cells for {len(columns)} columns")
    widths = [len(c.title) for c in columns]
    for r in body:
        widths = [max(w, len(cell)) for w, cell in zip(widths, r)]

    def line(cells: Sequence[str]) -> str:
        out = [cell.rjust(w) if c.numeric else cell.ljust(w)
               for c, w, cell in zip(columns, widths, cells)]
        return GAP.join(out).rstrip()

    return "\n".join([line([c.title for c in columns])] + [line(r) for r in body])


def _entries(result: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    entries = result.get("entries", [])
    return [e for e in entries if isinstance(e, Mapping)] if isinstance(entries, list) else []


# --- listPort (and addPort) --------------------------------------------------------
PORT_COLUMNS = (
    Column("PORT", True), Column("TYPE"), Column("TARGET"), Column("STATE"),
    Column("PID", True), Column("RESTARTS", True), Column("UPTIME", True),
    Column("CPU", True), Column("RSS", True), Column("RX", True), Column("TX", True),
    Column("DROPS", True),
)
REASON = Column("REASON")
NAME = Column("NAME")
VLAN = Column("VLAN")


def port_vlan(entry: Mapping[str, Any]) -> str:
    """A port's VLAN setting: ``10`` (access), ``trunk 10,20``, ``trunk 10,20 native 1``,
    ``10 (token)`` (a peer's token made it an access port), or ``-`` (every frame as it
    comes)."""
    if entry.get("vlan"):
        return str(entry["vlan"])
    if entry.get("trunk") or entry.get("native"):
        native = f" native {entry['native']}" if entry.get("native") else ""
        return f"trunk {entry.get('trunk') or '-'}{native}"
    if entry.get("token_vlan"):
        return f"{entry['token_vlan']} (token)"
    return NONE


def port_state(entry: Mapping[str, Any]) -> str:
    """The state, with ``,shut`` for a shut port and ``,unsaved`` for one that differs
    from the configuration file: ``up,shut,unsaved``."""
    state = text(entry.get("state"))
    state += ",shut" if entry.get("shut") else ""
    return state + ",unsaved" if entry.get("unsaved") else state


def port_reason(entry: Mapping[str, Any]) -> str:
    """Why a port is down, and when it is retried: ``exited with status 1, retry in 4s``."""
    parts = [str(entry.get("reason") or "")]
    retry = entry.get("next_retry")
    if retry is not None:
        parts.append(f"retry in {duration(retry)}")
    return ", ".join(p for p in parts if p)


def ports(result: Mapping[str, Any]) -> str:
    """The listport table; a NAME column is added when any port has a name, a VLAN column
    when any port has a VLAN setting, a REASON column when any port has a reason."""
    entries = _entries(result)
    columns: tuple[Column, ...] = PORT_COLUMNS
    rows = [[
        number(e.get("port")), text(e.get("type")), text(e.get("target")), port_state(e),
        number(e.get("pid")), number(e.get("restarts")), duration(e.get("uptime")),
        percent(e.get("cpu")), size(e.get("rss")), number(e.get("rx")), number(e.get("tx")),
        number(e.get("drops")),
    ] for e in entries]
    names = [text(e.get("name")) for e in entries]
    if any(e.get("name") for e in entries):
        columns = (columns[0], NAME, *columns[1:])
        rows = [r[:1] + [n] + r[1:] for r, n in zip(rows, names, strict=True)]
    vlans = [port_vlan(e) for e in entries]
    if any(v != NONE for v in vlans):
        at = columns.index(PORT_COLUMNS[3]) + 1  # after STATE
        columns = (*columns[:at], VLAN, *columns[at:])
        rows = [r[:at] + [v] + r[at:] for r, v in zip(rows, vlans, strict=True)]
    reasons = [port_reason(e) for e in entries]
    if any(reasons):
        return table((*columns, REASON), [r + [why] for r, why in zip(rows, reasons)])
    return table(columns, rows)


# --- listInterface ---------------------------------------------------------------
IF_COLUMNS = (
    Column("PORT", True), Column("TYPE"), Column("TARGET"), Column("ADDRESS"),
    Column("NETMASK"), Column("MTU", True),
)


def split_address(cidr: str) -> tuple[str, str]:
    """``192.0.2.1/24`` -> (``192.0.2.1``, ``255.255.255.0``); IPv6 keeps ``/64``."""
    try:
        iface = ipaddress.ip_interface(cidr)
    except ValueError:
        return cidr, ""
    if iface.version == 4:
        return str(iface.ip), str(iface.netmask)
    return str(iface.ip), f"/{iface.network.prefixlen}"


def _if_addresses(entry: Mapping[str, Any]) -> list[tuple[str, str]]:
    addrs = entry.get("addresses")
    if isinstance(addrs, list) and addrs:
        return [split_address(str(a)) for a in addrs]
    return [(text(entry.get("address")), text(entry.get("netmask")))]


def interfaces(result: Mapping[str, Any]) -> str:
    """The listif table: one line per address, the port's columns on the first."""
    rows: list[list[str]] = []
    for e in _entries(result):
        addrs = _if_addresses(e)
        first_addr, first_mask = addrs[0]
        rows.append([number(e.get("port")), text(e.get("type")), text(e.get("target")),
                     first_addr, first_mask or NONE, number(e.get("mtu"))])
        rows.extend(["", "", "", addr, mask or NONE, ""] for addr, mask in addrs[1:])
    return table(IF_COLUMNS, rows)


# --- listFdb ---------------------------------------------------------------------
FDB_COLUMNS = (Column("VID", True), Column("MAC"), Column("PORT", True), Column("AGE", True))


def fdb(result: Mapping[str, Any]) -> str:
    """The listfdb table."""
    return table(FDB_COLUMNS, [
        [number(e.get("vid")), text(e.get("mac")), number(e.get("port")), duration(e.get("age"))]
        for e in _entries(result)
    ])


# --- getStatus -------------------------------------------------------------------
def _sub(entry: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = entry.get(key)
    return value if isinstance(value, Mapping) else {}


def _process(p: Mapping[str, Any]) -> str:
    return (f"{text(p.get('state'))}, pid {number(p.get('pid'))}, "
            f"{number(p.get('restarts'))} restarts"
            + (f" ({p['reason']})" if p.get("reason") else ""))


def _gone(g: Mapping[str, Any]) -> str:
    return (f"{number(g.get('peers'))}: rx {number(g.get('rx'))}, tx {number(g.get('tx'))}, "
            f"drops {number(g.get('drops'))}, errors {number(g.get('errors'))}")


def _zygote(z: Mapping[str, Any]) -> str:
    return (f"{_process(z)}; peer workers forked {number(z.get('forked'))}, "
            f"spawned while it was down {number(z.get('spawned'))}")


def status(result: Mapping[str, Any]) -> str:
    """A key/value block per supervisor (there is one)."""
    blocks = []
    for e in _entries(result):
        broker, table_ = _sub(e, "broker"), _sub(e, "fdb")
        pairs = [
            ("supervisor", f"pid {number(e.get('pid'))}, up {duration(e.get('uptime'))}"),
            ("rundir", text(e.get("rundir"))),
            ("ports", number(e.get("ports"))),
            ("broker", _process(broker)),
            *([("listener", _process(_sub(e, "listener")))] if e.get("listener") else []),
            *([("zygote", _zygote(_sub(e, "zygote")))] if e.get("zygote") else []),
            *([("gone peers", _gone(_sub(e, "gone_peers")))] if _sub(e, "gone_peers")
              .get("peers") else []),
            *([("isolate", "peers cannot reach each other")] if e.get("isolate") else []),
            *([("offload", "off: no super-frames (--no-offload)")]
              if e.get("offload") is False else []),
            *([("loop guard", "off (--no-loop-guard)")] if e.get("loop_guard") is False
              else [("loop guard", f"switch id {text(e.get('switch_id'))}" + (
                  "; blocks port " + ", ".join(number(p) for p in e["loop_blocked"])
                  if e.get("loop_blocked") else ""))] if e.get("loop_guard") else []),
            ("fdb", f"{number(table_.get('entries'))} of {number(table_.get('capacity'))} "
                    f"entries, refused: {number(table_.get('refused_full'))} table full, "
                    f"{number(table_.get('refused_port'))} port limit; "
                    f"{number(table_.get('held_moves'))} moves held"),
        ]
        width = max(len(k) for k, _ in pairs)
        blocks.append("\n".join(f"{k.ljust(width)}{GAP}{v}" for k, v in pairs))
    return "\n\n".join(blocks)


def saved(result: Mapping[str, Any]) -> str:
    """What ``save`` did: ``saved 3 ports to /etc/etherws/etherws.toml``."""
    entry = next(iter(_entries(result)), {})
    count = entry.get("ports")
    return (f"saved {number(count)} port{'' if count == 1 else 's'} to "
            f"{text(entry.get('path'))}")


def token(result: Mapping[str, Any]) -> str:
    """A minted token: when it expires and what it binds, then the token alone on the
    last line (``| tail -n 1`` gives it to a script)::

        expires   2026-12-04 08:15:00 UTC (in 1h00m)
        vlan      10
        max macs  2
        token id  8f3a...
        AQAAAABp...Fh3kQ
    """
    entry = next(iter(_entries(result)), {})
    expires = entry.get("expires")
    when = NONE
    if isinstance(expires, int):
        at = datetime.datetime.fromtimestamp(expires, datetime.timezone.utc)
        when = f"{at:%Y-%m-%d %H:%M:%S} UTC (in {duration(entry.get('ttl'))})"
    pairs = [("expires", when), ("vlan", text(entry.get("vlan"))),
             ("max macs", number(entry.get("max_macs"))), ("token id", text(entry.get("id")))]
    width = max(len(k) for k, _ in pairs)
    return "\n".join([*(f"{k.ljust(width)}{GAP}{v}" for k, v in pairs),
                      text(entry.get("token"))])


def changes(result: Mapping[str, Any]) -> str:
    """What ``reload`` did, one change a line."""
    return "\n".join(text(e.get("change")) for e in _entries(result))


# --- probePort -------------------------------------------------------------------
def _sizes(values: Any) -> str:
    return ", ".join(str(v) for v in values) if isinstance(values, list) else NONE


def probe(result: Mapping[str, Any]) -> str:
    """What a path probe found, one line a port: ``port 3 (name): round trip 1.23 ms,
    largest frame 1514 bytes (of 9014 asked; lost: 9014)``, or ``no answer``."""
    lines = []
    for e in _entries(result):
        who = f"port {number(e.get('port'))}" + (f" ({e['name']})" if e.get("name") else "")
        asked = e.get("asked")
        if not e.get("answered"):
            lines.append(f"{who}: no answer to probes: the far side is not an etherws "
                         "switch that answers them (etherws 1.3, a browser VM), or the "
                         "tunnel drops them")
            continue
        rtt, low = e.get("rtt_ms"), e.get("rtt_min_ms")
        trip = NONE if rtt is None else f"{rtt:.2f} ms" + (
            f" (min {low:.2f})" if isinstance(low, (int, float)) and low < rtt else "")
        notes = [f"of {number(asked)} asked"]
        far = e.get("far_max_message")
        if isinstance(far, int) and isinstance(asked, int) and asked > far:
            notes.append(f"the far side takes at most {far}")
        if e.get("lost"):
            notes.append(f"lost: {_sizes(e.get('lost'))}")
        largest = e.get("largest")
        got = f"largest frame {largest} bytes" if largest else "no probe frame got through"
        lines.append(f"{who}: round trip {trip}, {got} ({'; '.join(notes)})")
    return "\n".join(lines)


VIEWS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "ports": ports, "interfaces": interfaces, "fdb": fdb, "status": status,
    "saved": saved, "changes": changes, "probe": probe, "token": token,
}
"""The views ``control.COMMANDS`` names, by name."""

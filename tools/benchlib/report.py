"""Medians, ratios against the reference path, the targets of issue 4, the table.

Ratios are ratios of the medians of one run of the bench: absolute numbers move from run
to run on a shared machine, the ratio between paths measured side by side much less.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from benchlib.measure import Rtt, Transfer
from benchlib.paths import BenchPath

MIB = 1024 * 1024
PER_MTU = ("gbit_s", "cpu_s_per_gb", "host_cpu_s_per_gb", "retransmits")
"""Figures measured once per MTU; the RTT figures are measured once per repetition."""
RATIOS = ("gbit_s", "cpu_s_per_gb", "host_cpu_s_per_gb", "rtt_avg_ms", "rtt_p99_ms")
WORKER_ROLES = ("tap", "client", "peer", "listener", "netdev")
WORKER_RSS_MIB = 40.0
BROKER_RSS_MIB = 60.0


@dataclass
class PathResults:
    """Everything measured on one path, every repetition."""

    path: BenchPath
    transfers: dict[int, list[Transfer]] = field(default_factory=dict)
    rtts: list[Rtt] = field(default_factory=list)


def median(values: Iterable[float | int | None]) -> float | None:
    """The median of the values that are not None; None when there are none."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _ratio(value: float | None, ref: float | None) -> float | None:
    return None if value is None or not ref else value / ref


def summarize(results: list[PathResults]) -> dict[str, dict[str, Any]]:
    """The JSON ``paths`` object: per path its runs, medians, ratios and largest RSS."""
    out: dict[str, dict[str, Any]] = {}
    for r in results:
        med: dict[str, Any] = {k: {} for k in PER_MTU}
        runs: dict[str, list[dict[str, Any]]] = {}
        rss: dict[str, float] = {}
        cores: dict[str, dict[str, float | None]] = {}
        for mtu, transfers in r.transfers.items():
            key = str(mtu)
            med["gbit_s"][key] = median(t.gbit_s for t in transfers)
            med["cpu_s_per_gb"][key] = median(t.cpu_s_per_gb for t in transfers)
            med["host_cpu_s_per_gb"][key] = median(t.host_cpu_s_per_gb for t in transfers)
            med["retransmits"][key] = median(t.retransmits for t in transfers)
            runs[key] = [dict(asdict(t), cpu_s_per_gb=t.cpu_s_per_gb,
                              host_cpu_s_per_gb=t.host_cpu_s_per_gb) for t in transfers]
            roles = sorted({role for t in transfers for role in t.cpu_by_role})
            cores[key] = {role: median(t.cpu_by_role.get(role, 0.0) / t.wall_s
                                       for t in transfers) for role in roles}
            for t in transfers:
                for role, value in t.rss_max.items():
                    rss[role] = max(rss.get(role, 0.0), value / MIB)
        med["rtt_avg_ms"] = median(x.avg_ms for x in r.rtts)
        med["rtt_p99_ms"] = median(x.p99_ms for x in r.rtts)
        out[r.path.name] = {
            "label": r.path.label, "reference": r.path.reference, "notes": r.path.notes,
            "median": med, "ratio": None, "rss_mib": dict(sorted(rss.items())),
            "cpu_cores": cores,
            "runs": runs, "rtt_runs": [asdict(x) for x in r.rtts],
        }
    for entry in out.values():
        ref = out.get(entry["reference"] or "")
        if ref is None:
            continue
        mine, theirs = entry["median"], ref["median"]
        ratio: dict[str, Any] = {}
        for k in RATIOS:
            if k in PER_MTU:
                ratio[k] = {m: _ratio(v, theirs[k].get(m)) for m, v in mine[k].items()}
            else:
                ratio[k] = _ratio(mine[k], theirs[k])
        entry["ratio"] = ratio
    return out


def _target(what: str, value: float | None, limit: float, at_least: bool,
            unit: str) -> dict[str, Any]:
    met = None if value is None else (value >= limit if at_least else value <= limit)
    return {"target": what, "value": value, "limit": limit,
            "op": ">=" if at_least else "<=", "unit": unit, "met": met}


def targets(paths: dict[str, dict[str, Any]],
            broker_full_fdb_mib: float | None) -> list[dict[str, Any]]:
    """The targets of issue 4, each with the measured value and whether it is met
    (``met`` is None when the value was not measured, e.g. MTU 9000 in --quick)."""
    found: list[dict[str, Any]] = []
    for name in ("etherws-ws", "etherws-wss"):
        entry = paths.get(name)
        if entry is None or entry["ratio"] is None:
            continue
        ref, ratio = entry["reference"], entry["ratio"]
        for mtu, limit in (("1500", 0.8), ("9000", 0.6)):
            found.append(_target(f"{name} throughput at MTU {mtu} vs {ref}",
                                 ratio["gbit_s"].get(mtu), limit, True, "x"))
        found.append(_target(f"{name} RTT average vs {ref}", ratio["rtt_avg_ms"], 2.0,
                             False, "x"))
        for mtu in ("1500", "9000"):
            found.append(_target(f"{name} CPU s/GB at MTU {mtu} vs {ref}",
                                 ratio["cpu_s_per_gb"].get(mtu), 2.0, False, "x"))
        for role, mib in entry["rss_mib"].items():
            kind = role.split(":", 1)[1]
            if kind in WORKER_ROLES:
                found.append(_target(f"{name} {role} RSS", mib, WORKER_RSS_MIB, False,
                                     "MiB"))
            elif kind == "broker":
                found.append(_target(f"{name} {role} RSS (2-entry FDB)", mib,
                                     BROKER_RSS_MIB, False, "MiB"))
    found.append(_target("broker-like process RSS with a full 8192-entry FDB "
                         "(tools/bench-broker --memory)", broker_full_fdb_mib,
                         BROKER_RSS_MIB, False, "MiB"))
    return found


# --- the table ----------------------------------------------------------------------------
def _num(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    if value == 0 or abs(value) >= 10 ** digits:
        return f"{value:.0f}"
    return f"{value:.{digits}g}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def table(paths: dict[str, dict[str, Any]], mtus: list[int]) -> str:
    """One table: absolute medians of every path, each etherws figure beside it as a
    ratio to its reference path (the ``ratio`` columns)."""
    cols: list[tuple[str, str, str | None]] = []  # (header, metric, mtu or None)
    for mtu in mtus:
        cols.append((f"Gbit/s@{mtu}", "gbit_s", str(mtu)))
    cols.append(("RTTavg ms", "rtt_avg_ms", None))
    cols.append(("RTTp99 ms", "rtt_p99_ms", None))
    for mtu in mtus:
        cols.append((f"cpu s/GB@{mtu}", "cpu_s_per_gb", str(mtu)))
    for mtu in mtus:
        cols.append((f"host s/GB@{mtu}", "host_cpu_s_per_gb", str(mtu)))
    header = ["path", "vs"]
    for title, _, _ in cols:
        header += [title, "ratio"]
    rows = [header]
    for name, entry in paths.items():
        row = [name, entry["reference"] or "-"]
        for _, metric, at in cols:
            value = entry["median"][metric]
            ratio = entry["ratio"][metric] if entry["ratio"] else None
            if at is not None:
                value = value.get(at)
                ratio = ratio.get(at) if ratio else None
            row += [_num(value), _x(ratio) if entry["ratio"] else "-"]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for r in rows:
        cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1])]
        cells += [c.rjust(w) for c, w in zip(r[2:], widths[2:])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def memory_lines(paths: dict[str, dict[str, Any]]) -> list[str]:
    """Largest RSS of every process of a path during the iperf3 runs, MiB."""
    lines = []
    for name, entry in paths.items():
        if entry["rss_mib"]:
            parts = ", ".join(f"{role} {mib:.1f}" for role, mib in entry["rss_mib"].items())
            lines.append(f"  {name}: {parts}")
    return lines


def cpu_lines(paths: dict[str, dict[str, Any]]) -> list[str]:
    """Median CPU of every process of a path during the iperf3 runs, in cores (1.00 = one
    CPU busy all the time): which process saturates first."""
    lines = []
    for name, entry in paths.items():
        for mtu, roles in entry["cpu_cores"].items():
            if roles:
                parts = ", ".join(f"{role} {c:.2f}" for role, c in
                                  sorted(roles.items(), key=lambda rc: -(rc[1] or 0)))
                lines.append(f"  {name} @{mtu}: {parts}")
    return lines


def target_lines(found: list[dict[str, Any]]) -> list[str]:
    """One line per target: met / NOT MET / not measured."""
    lines = []
    for t in found:
        status = {True: "met    ", False: "NOT MET", None: "-      "}[t["met"]]
        value = "-" if t["value"] is None else (
            f"{t['value']:.2f}x" if t["unit"] == "x" else f"{t['value']:.1f} MiB")
        limit = f"{t['limit']:g}{'x' if t['unit'] == 'x' else ' MiB'}"
        lines.append(f"  [{status}] {t['target']}: {value} (target {t['op']} {limit})")
    return lines

"""Medians, ratios against the reference path, the targets, the tables.

Ratios are ratios of the medians of one run of the bench: absolute numbers move from run
to run on a shared machine, the ratio between paths measured side by side much less.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from benchlib.measure import Rtt, Transfer
from benchlib.overload import Overload
from benchlib.paths import BenchPath

MIB = 1024 * 1024
PER_MTU = ("gbit_s", "cpu_s_per_gb", "host_cpu_s_per_gb", "retransmits")
"""Figures measured once per MTU; the RTT figures are measured once per repetition."""
RATIOS = ("gbit_s", "cpu_s_per_gb", "host_cpu_s_per_gb", "rtt_avg_ms", "rtt_p99_ms",
          "loaded_rtt_avg_ms", "loaded_rtt_p99_ms")
WORKER_ROLES = ("tap", "client", "peer", "listener", "netdev")
WORKER_RSS_MIB = 40.0
BROKER_RSS_MIB = 60.0
OVERLOAD_RATIO = 0.9
"""Delivered at 2x / best throughput, at least (no collapse under overload)."""


@dataclass
class PathResults:
    """Everything measured on one path, every repetition."""

    path: BenchPath
    transfers: dict[int, list[Transfer]] = field(default_factory=dict)
    rtts: list[Rtt] = field(default_factory=list)
    loaded: list[Rtt] = field(default_factory=list)
    """Pings while one TCP stream fills the path."""
    overloads: dict[int, list[Overload]] = field(default_factory=dict)


def median(values: Iterable[float | int | None]) -> float | None:
    """The median of the values that are not None; None when there are none."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _ratio(value: float | None, ref: float | None) -> float | None:
    return None if value is None or not ref else value / ref


def _rss_mib(runs: Iterable[dict[str, int]]) -> dict[str, float]:
    """Largest RSS of each role over ``runs`` (each a role -> bytes dict), MiB."""
    rss: dict[str, float] = {}
    for run in runs:
        for role, value in run.items():
            rss[role] = max(rss.get(role, 0.0), value / MIB)
    return dict(sorted(rss.items()))


def _cores(runs: list[tuple[dict[str, float], float]]) -> dict[str, float | None]:
    """Median cores of each role over ``runs`` (CPU seconds by role, wall seconds)."""
    roles = sorted({role for by_role, _ in runs for role in by_role})
    return {role: median(by_role.get(role, 0.0) / wall_s for by_role, wall_s in runs)
            for role in roles}


def summarize_overload(overloads: dict[int, list[Overload]]) -> dict[str, Any]:
    """Per MTU: the medians of the overload runs (``ratio``: arrived at 2x / best,
    the median of each repetition's own ratio) and every run."""
    out: dict[str, Any] = {}
    for mtu, reps in overloads.items():
        out[str(mtu)] = {"median": {
            "tcp_gbit_s": median(o.tcp_gbit_s for o in reps),
            "delivered_1x_gbit_s": median(o.at_1x.delivered_gbit_s for o in reps),
            "loss_1x_percent": median(o.at_1x.loss_percent for o in reps),
            "best_gbit_s": median(o.best_gbit_s for o in reps),
            "sent_2x_gbit_s": median(o.at_2x.sent_gbit_s for o in reps),
            "delivered_2x_gbit_s": median(o.at_2x.delivered_gbit_s for o in reps),
            "arrived_2x_gbit_s": median(o.at_2x.arrived_gbit_s for o in reps),
            "loss_2x_percent": median(o.at_2x.loss_percent for o in reps),
            "receiver_overflows_2x": median(o.at_2x.receiver_overflows for o in reps),
            "recovery_2x_s": median(o.at_2x.recovery_s for o in reps),
            "ratio": median(o.ratio for o in reps),
        }, "runs": [o.as_dict() for o in reps]}
    return out


def summarize(results: list[PathResults]) -> dict[str, dict[str, Any]]:
    """The JSON ``paths`` object: per path its runs, medians, ratios, overload and
    largest RSS (``rss_mib`` in the TCP runs, ``rss_mib_overload`` at 2x UDP)."""
    out: dict[str, dict[str, Any]] = {}
    for r in results:
        med: dict[str, Any] = {k: {} for k in PER_MTU}
        runs: dict[str, list[dict[str, Any]]] = {}
        cores: dict[str, dict[str, float | None]] = {}
        for mtu, transfers in r.transfers.items():
            key = str(mtu)
            med["gbit_s"][key] = median(t.gbit_s for t in transfers)
            med["cpu_s_per_gb"][key] = median(t.cpu_s_per_gb for t in transfers)
            med["host_cpu_s_per_gb"][key] = median(t.host_cpu_s_per_gb for t in transfers)
            med["retransmits"][key] = median(t.retransmits for t in transfers)
            runs[key] = [dict(asdict(t), cpu_s_per_gb=t.cpu_s_per_gb,
                              host_cpu_s_per_gb=t.host_cpu_s_per_gb) for t in transfers]
            cores[key] = _cores([(t.cpu_by_role, t.wall_s) for t in transfers])
        med["rtt_avg_ms"] = median(x.avg_ms for x in r.rtts)
        med["rtt_p99_ms"] = median(x.p99_ms for x in r.rtts)
        med["loaded_rtt_avg_ms"] = median(x.avg_ms for x in r.loaded)
        med["loaded_rtt_p99_ms"] = median(x.p99_ms for x in r.loaded)
        out[r.path.name] = {
            "label": r.path.label, "reference": r.path.reference, "notes": r.path.notes,
            "median": med, "ratio": None,
            "rss_mib": _rss_mib(t.rss_max for ts in r.transfers.values() for t in ts),
            "uss_mib": _rss_mib(t.uss for ts in r.transfers.values() for t in ts),
            "zmq_cpu_share": median(
                t.zmq_cpu_s / t.cpu_s if t.cpu_s else None
                for ts in r.transfers.values() for t in ts),
            "rss_mib_overload": _rss_mib(o.at_2x.rss_max for reps in r.overloads.values()
                                         for o in reps),
            "cpu_cores": cores, "overload": summarize_overload(r.overloads),
            "cpu_cores_overload": {str(mtu): _cores([(o.at_2x.cpu_by_role, o.at_2x.wall_s)
                                                     for o in reps])
                                   for mtu, reps in r.overloads.items()},
            "runs": runs, "rtt_runs": [asdict(x) for x in r.rtts],
            "loaded_rtt_runs": [asdict(x) for x in r.loaded],
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
    relay = out.get("relay")
    for name, entry in out.items():
        if relay is None or not name.startswith("etherws"):
            entry["vs_relay"] = None
            continue
        mine, theirs = entry["median"], relay["median"]
        entry["vs_relay"] = {
            "gbit_s": {m: _ratio(v, theirs["gbit_s"].get(m)) for m, v in mine["gbit_s"].items()},
            "cpu_s_per_gb": {m: _ratio(v, theirs["cpu_s_per_gb"].get(m))
                             for m, v in mine["cpu_s_per_gb"].items()},
            "rtt_avg_ms": _ratio(mine["rtt_avg_ms"], theirs["rtt_avg_ms"])}
    return out


def _target(what: str, value: float | None, limit: float, at_least: bool,
            unit: str) -> dict[str, Any]:
    met = None if value is None else (value >= limit if at_least else value <= limit)
    return {"target": what, "value": value, "limit": limit,
            "op": ">=" if at_least else "<=", "unit": unit, "met": met}


def targets(paths: dict[str, dict[str, Any]],
            broker_full_fdb_mib: float | None) -> list[dict[str, Any]]:
    """The targets, each with the measured value and whether it is met
    (``met`` is None when the value was not measured, e.g. MTU 9000 in --quick)."""
    found: list[dict[str, Any]] = []
    for name in ("etherws-ws", "etherws-wss", "etherws-ws-nooff", "etherws-wss-nooff"):
        entry = paths.get(name)
        if entry is None or entry["ratio"] is None:
            continue
        ref, ratio = entry["reference"], entry["ratio"]
        if not name.endswith("-nooff"):
            found += _offload_targets(name, entry)
        for mtu, limit in (("1500", 0.8), ("9000", 1.0)):
            found.append(_target(f"{name} throughput at MTU {mtu} vs {ref}",
                                 ratio["gbit_s"].get(mtu), limit, True, "x"))
        found.append(_target(f"{name} RTT average vs {ref}", ratio["rtt_avg_ms"], 2.0,
                             False, "x"))
        for mtu in ("1500", "9000"):
            found.append(_target(f"{name} CPU s/GB at MTU {mtu} vs {ref}",
                                 ratio["cpu_s_per_gb"].get(mtu), 2.0, False, "x"))
        for mtu in ("1500", "9000"):
            found.append(_target(f"{name} under 2x overload at MTU {mtu}: arrived at B / "
                                 "best", entry["overload"].get(mtu, {}).get("median", {})
                                 .get("ratio"), OVERLOAD_RATIO, True, "x"))
        loaded = entry["median"].get("loaded_rtt_p99_ms")
        ref_loaded = paths.get(ref, {}).get("median", {}).get("loaded_rtt_p99_ms")
        found.append(_target(f"{name} ping p99 under load vs {ref}",
                             _ratio(loaded, ref_loaded), 1.0, False, "x"))
        relay = entry.get("vs_relay")
        if relay:
            for mtu in ("1500", "9000"):
                found.append(_target(f"{name} throughput at MTU {mtu} vs relay",
                                     relay["gbit_s"].get(mtu), 0.75, True, "x"))
                found.append(_target(f"{name} CPU s/GB at MTU {mtu} vs relay",
                                     relay["cpu_s_per_gb"].get(mtu), 2.0, False, "x"))
            found.append(_target(f"{name} RTT average vs relay", relay["rtt_avg_ms"], 2.5,
                                 False, "x"))
        # Memory: the larger of the TCP runs and the 2x UDP runs (where queues grow).
        overload_rss = entry["rss_mib_overload"]
        when = "TCP and 2x UDP" if overload_rss else "TCP"
        largest = {role: max(entry["rss_mib"].get(role, 0.0), overload_rss.get(role, 0.0))
                   for role in sorted({*entry["rss_mib"], *overload_rss})}
        for role, mib in entry["uss_mib"].items():
            kind = role.split(":", 1)[1]
            if kind in WORKER_ROLES or kind == "broker":
                found.append(_target(f"{name} {role} USS (private memory, TCP)", mib,
                                     WORKER_RSS_MIB if kind != "broker" else BROKER_RSS_MIB,
                                     False, "MiB"))
        share = entry.get("zmq_cpu_share")
        found.append(_target(f"{name} ZeroMQ I/O threads' share of its CPU (TCP)",
                             None if share is None else 100 * share, 5.0, False, "%"))
        for role, mib in largest.items():
            kind = role.split(":", 1)[1]
            if kind in WORKER_ROLES:
                found.append(_target(f"{name} {role} RSS ({when})", mib, WORKER_RSS_MIB,
                                     False, "MiB"))
            elif kind == "broker":
                found.append(_target(f"{name} {role} RSS ({when}, 2-entry FDB)", mib,
                                     BROKER_RSS_MIB, False, "MiB"))
    found.append(_target("broker-like process RSS with a full 8192-entry FDB "
                         "(tools/bench-broker --memory)", broker_full_fdb_mib,
                         BROKER_RSS_MIB, False, "MiB"))
    return found


def _offload_targets(name: str, entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 14's targets for a path with offload (super-frames end to end)."""
    ref, ratio, relay = entry["reference"], entry["ratio"], entry.get("vs_relay") or {}
    gbit = entry["median"]["gbit_s"]
    return [
        _target(f"{name} (offload) throughput at MTU 1500 vs {ref}",
                ratio["gbit_s"].get("1500"), 3.0, True, "x"),
        _target(f"{name} (offload) throughput at MTU 1500 vs relay",
                relay.get("gbit_s", {}).get("1500"), 2.0, True, "x"),
        _target(f"{name} (offload) CPU s/GB at MTU 1500 vs {ref}",
                ratio["cpu_s_per_gb"].get("1500"), 0.5, False, "x"),
        _target(f"{name} (offload) throughput at MTU 9000 vs at MTU 1500",
                _ratio(gbit.get("9000"), gbit.get("1500")), 1.0, True, "x"),
    ]


# --- the tables ---------------------------------------------------------------------------
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
    cols.append(("loaded avg", "loaded_rtt_avg_ms", None))
    cols.append(("loaded p99", "loaded_rtt_p99_ms", None))
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
    return _grid(rows, 2)


def _grid(rows: list[list[str]], left: int) -> str:
    """``rows`` (the first is the header) as aligned columns: the first ``left`` columns
    flush left (names), the others flush right (numbers)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [c.ljust(w) if i < left else c.rjust(w)
                 for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


OVERLOAD_COLUMNS = (
    ("TCP", "tcp_gbit_s", 1), ("1x got", "delivered_1x_gbit_s", 1),
    ("1x lost%", "loss_1x_percent", 1), ("2x sent", "sent_2x_gbit_s", 1),
    ("2x got", "delivered_2x_gbit_s", 1), ("2x lost%", "loss_2x_percent", 1),
    ("rcvbuf", "receiver_overflows_2x", 1), ("2x at B", "arrived_2x_gbit_s", 1),
    ("recover ms", "recovery_2x_s", 1000))
"""(header, key in an overload median, scale) of the overload table, before its ratio."""


def overload_table(paths: dict[str, dict[str, Any]]) -> str:
    """One row per path and MTU: the medians of the overload runs, Gbit/s unless said,
    and the overload figure (arrived at 2x / best)."""
    rows = [["path", "MTU", *(title for title, _, _ in OVERLOAD_COLUMNS), "2x/best"]]
    for name, entry in paths.items():
        for mtu, found in entry["overload"].items():
            med = found["median"]
            cells = [_num(None if med[key] is None else med[key] * scale)
                     for _, key, scale in OVERLOAD_COLUMNS]
            rows.append([name, mtu, *cells, _num(med["ratio"])])
    return _grid(rows, 2)


def memory_lines(paths: dict[str, dict[str, Any]]) -> list[str]:
    """Largest RSS of every process of a path, MiB: during the iperf3 TCP runs, and
    after a slash during the 2x UDP overload runs (where queues grow)."""
    lines = []
    for name, entry in paths.items():
        tcp, udp = entry["rss_mib"], entry["rss_mib_overload"]
        parts = []
        for role in sorted({*tcp, *udp}):
            mib = "-" if role not in tcp else f"{tcp[role]:.1f}"
            parts.append(f"{role} {mib}" + (f"/{udp[role]:.1f}" if role in udp else ""))
        if parts:
            lines.append(f"  {name}: {', '.join(parts)}")
        uss = entry.get("uss_mib") or {}
        if uss:
            lines.append(f"  {'':<{len(name)}}  USS (private) at the end of a TCP run: "
                         + ", ".join(f"{role} {mib:.1f}" for role, mib in sorted(uss.items())))
    return lines


def cpu_lines(paths: dict[str, dict[str, Any]]) -> list[str]:
    """Median CPU of every process of a path during the iperf3 TCP runs and the 2x UDP
    runs, in cores (1.00 = one CPU busy all the time): which process saturates first."""
    lines = []
    for name, entry in paths.items():
        for mtu in entry["cpu_cores"]:
            for key, when in (("cpu_cores", ""), ("cpu_cores_overload", " 2x UDP")):
                roles = entry[key].get(mtu)
                if roles:
                    parts = ", ".join(f"{role} {c:.2f}" for role, c in
                                      sorted(roles.items(), key=lambda rc: -(rc[1] or 0)))
                    lines.append(f"  {name} @{mtu}{when}: {parts}")
    return lines


def target_lines(found: list[dict[str, Any]]) -> list[str]:
    """One line per target: met / NOT MET / not measured."""
    lines = []
    for t in found:
        status = {True: "met    ", False: "NOT MET", None: "-      "}[t["met"]]
        unit = {"x": "x", "%": " %"}.get(t["unit"], " MiB")
        value = "-" if t["value"] is None else (
            f"{t['value']:.2f}{unit}" if t["unit"] == "x" else f"{t['value']:.1f}{unit}")
        limit = f"{t['limit']:g}{unit}"
        lines.append(f"  [{status}] {t['target']}: {value} (target {t['op']} {limit})")
    return lines


def floor_lines(paths: dict[str, dict[str, Any]], hop: dict[str, Any]) -> list[str]:
    """What the hops between processes alone cost a ping (rings, as the data plane
    crosses them; ZeroMQ, as it did until 2026-12; plain Unix sockets, the kernel's
    floor), against each etherws path's reference."""
    lines = []
    for name in ("etherws-ws", "etherws-wss"):
        entry = paths.get(name)
        if entry is None:
            continue
        ref = paths.get(entry["reference"], {}).get("median", {}).get("rtt_avg_ms")
        if ref:
            lines.append(f"  {name}: {hop['hops_per_ping']} ring hops alone take "
                         f"{hop['ring_ping_floor_ms']:.2f} ms = "
                         f"{hop['ring_ping_floor_ms'] / ref:.1f}x {entry['reference']}'s RTT "
                         f"(the design's floor, see README)")
            lines.append(f"  {'':<{len(name)}}  as ZeroMQ hops: {hop['ping_floor_ms']:.2f} ms"
                         f" = {hop['ping_floor_ms'] / ref:.1f}x")
            lines.append(f"  {'':<{len(name)}}  as Unix seqpacket hops (no I/O threads): "
                         f"{hop['unix_ping_floor_ms']:.2f} ms = "
                         f"{hop['unix_ping_floor_ms'] / ref:.1f}x")
    return lines

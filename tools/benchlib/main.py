"""tools/bench: etherws against the veth underlay and OpenVPN 2.6.

Builds two namespace hosts joined by a veth underlay, brings up five paths between them
(veth, OpenVPN AES-256-GCM, OpenVPN without encryption, etherws ws://, etherws wss://),
and measures each, interleaved, per repetition: an iperf3 TCP stream at each overlay MTU
with the CPU seconds and largest RSS of the path's processes, then (tunnels only) iperf3
UDP at 1x and 2x that stream's throughput (overload.py: no collapse under overload), and
a ping series. Prints one table of medians with every etherws figure as a ratio to its
OpenVPN reference, the overload table, the memory, the targets, and writes everything as
JSON. Removes all it made, also on error, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NoReturn

from benchlib import certs, measure, openvpn, overload, relay, report, zmqhop
from benchlib import lab as lablib
from benchlib.paths import BenchPath, veth_path
from benchlib.proc import BenchError, run, wait_until
from benchlib.switches import etherws_path

PROG = "tools/bench"
DEFAULT_JSON = "bench-results.json"
PATH_NAMES = ("veth", "openvpn-aes", "openvpn-none", "relay", "etherws-ws", "etherws-wss",
              "etherws-ws-nooff", "etherws-wss-nooff")
"""The etherws paths as they run by default (offload: super-frames from the TAPs and
across the tunnel) and with ``--no-offload`` on both switches (wire frames only)."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[0] + " Run as root; takes about "
        "9 minutes (--quick: about 2).",
        epilog="Paths are measured interleaved (every path once per repetition and MTU), "
        "so a machine that gets busier mid-run slows all of them alike. Figures: median "
        "over the repetitions; ratios: etherws-ws against openvpn-none, etherws-wss "
        "against openvpn-aes. Overload: after each TCP run, UDP at 1x and 2x its "
        "throughput; the figure is what arrived at host B at 2x / max(TCP, arrived at 1x) (not for "
        f"veth: {overload.SKIPPED['veth']}). Exit status 0 when everything was measured "
        "(whether or not the targets are met), 1 on a failure, 130 when interrupted.")
    p.add_argument("--quick", action="store_true",
                   help="one repetition, MTU 1500 only: for development")
    p.add_argument("--json", metavar="FILE", default=DEFAULT_JSON,
                   help=f"where to write the results as JSON (default: {DEFAULT_JSON} in "
                   "the current directory)")
    p.add_argument("--repetitions", type=int, metavar="N",
                   help="repetitions per path and MTU (default 3; --quick: 1)")
    p.add_argument("--seconds", type=float, default=8.0, metavar="S",
                   help="length of each iperf3 TCP run (default 8)")
    p.add_argument("--overload-seconds", type=float, metavar="S",
                   help="length of each iperf3 UDP run at 1x and 2x (default 4; --quick: 3)")
    p.add_argument("--pings", type=int, default=300, metavar="N",
                   help="pings per RTT series, 10 ms apart (default 300)")
    p.add_argument("--loaded-pings", type=int, metavar="N",
                   help="pings 40 ms apart while one TCP stream fills the path (latency "
                   "under load; default 200; --quick: 50)")
    p.add_argument("--paths", metavar="A,B", default=",".join(PATH_NAMES),
                   help="the paths to measure (default: all); etherws ratios need their "
                   "OpenVPN reference in the list")
    p.add_argument("--keep", action="store_true",
                   help="keep the work directory (logs, certificates) and say where")
    p.add_argument("--tag", help=argparse.SUPPRESS)      # from tools/bench: names the
    p.add_argument("--workdir", help=argparse.SUPPRESS)  # run for its own clean-up trap
    return p


def _interrupted(signum: int, _frame: object) -> NoReturn:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _say(text: str = "") -> None:
    print(text, flush=True)


def _setup_paths(stack: contextlib.ExitStack, lab: lablib.Lab, names: list[str],
                 max_mtu: int) -> list[BenchPath]:
    """Bring up the chosen paths; each on its own /28 (its index in PATH_NAMES)."""
    pki = wss_cert = None
    paths = []
    for name in names:
        index = PATH_NAMES.index(name)
        t0 = time.monotonic()
        if name == "veth":
            path = veth_path(lab, index)
        elif name.startswith("openvpn"):
            pki = pki or certs.openvpn_pki(lab.work)
            path = openvpn.openvpn_path(stack, lab, pki, index, name == "openvpn-aes", max_mtu)
        elif name == "relay":
            path = relay.relay_path(stack, lab, index)
        else:
            tls = name.startswith("etherws-wss")
            if tls:
                wss_cert = wss_cert or certs.self_signed(lab.work, "wss", lablib.UNDERLAY_B)
            path = etherws_path(stack, lab, index, wss_cert if tls else None,
                                offload=not name.endswith("-nooff"))
        _say(f"  {name:<17} up in {time.monotonic() - t0:4.1f} s: {path.label}")
        for note in path.notes:
            _say(f"  {'':<17} {note}")
        paths.append(path)
    return paths


def _full_frames(path: BenchPath, ns: str, mtu: int) -> None:
    """Wait until a ping of exactly ``mtu`` bytes (don't fragment) crosses ``path``: it
    carries full-size frames at this MTU, or the measurement would be of something else."""
    def ok() -> bool:
        return run("ip", "netns", "exec", ns, "ping", "-n", "-q", "-c", "1", "-W", "1",
                   "-M", "do", "-s", str(mtu - 28), path.addr_b,
                   check=False, timeout_s=5).returncode == 0
    wait_until(ok, 15, f"{path.name}: a {mtu}-byte packet to cross", interval_s=0.1)


def _measure(paths: list[BenchPath], lab: lablib.Lab, args: argparse.Namespace,
             mtus: list[int]) -> list[report.PathResults]:
    results = [report.PathResults(p) for p in paths]
    for rep in range(args.repetitions):
        for i, mtu in enumerate(mtus):
            for p in paths:
                p.set_mtu(mtu)
            for p, r in zip(paths, results):
                _full_frames(p, lab.ns_a, mtu)
                rtt_text = ""
                if i == 0:  # RTT of small pings does not depend on the MTU: once a rep
                    x = measure.rtt(p, lab.ns_a, args.pings, 0.01)
                    r.rtts.append(x)
                    rtt_text = f", RTT avg {x.avg_ms:.3f} p99 {x.p99_ms:.3f} ms"
                    if p.name != "veth":  # the kernel alone: no queue of its own to see
                        loaded = measure.loaded_rtt(p, lab.ns_a, args.loaded_pings, 0.04)
                        r.loaded.append(loaded)
                        rtt_text += (f", under load avg {loaded.avg_ms:.2f} p99 "
                                     f"{loaded.p99_ms:.2f} ms")
                t = measure.transfer(p, lab.ns_a, args.seconds)
                r.transfers.setdefault(mtu, []).append(t)
                cpu = "-" if t.cpu_s_per_gb is None else f"{t.cpu_s_per_gb:.2f}"
                _say(f"  rep {rep + 1}/{args.repetitions} MTU {mtu:<5} {p.name:<17} "
                     f"{t.gbit_s:6.3f} Gbit/s, {cpu} CPU s/GB, host "
                     f"{t.host_cpu_s_per_gb or 0:.2f} s/GB{rtt_text}")
                if p.name not in overload.SKIPPED:
                    o = overload.overload(p, lab, mtu, t.gbit_s, args.overload_seconds)
                    r.overloads.setdefault(mtu, []).append(o)
                    _say(f"  {'':<34} UDP 1x {o.at_1x.delivered_gbit_s:6.3f} Gbit/s "
                         f"({o.at_1x.loss_percent:.0f}% lost), 2x "
                         f"{o.at_2x.delivered_gbit_s:6.3f} ({o.at_2x.loss_percent:.0f}% "
                         f"lost): {o.ratio or 0:.2f} of best")
    return results


def _broker_full_fdb_mib() -> float | None:
    """RSS of a broker-like process with a full default FDB (tools/bench-broker --memory)."""
    res = subprocess.run([sys.executable, "-m", "benchlib.broker", "--memory", "--json"],
                         capture_output=True, text=True, timeout=120, check=False)
    try:
        return float(json.loads(res.stdout)["memory"]["rss_mib"])
    except (ValueError, KeyError, TypeError):
        _say(f"  (broker memory probe failed: {res.stderr.strip()[-200:]})")
        return None


def _versions() -> dict[str, str]:
    iperf = run("iperf3", "--version", check=False).stdout.splitlines()
    return {"kernel": platform.release(), "python": platform.python_version(),
            "cpus": str(os.cpu_count()), "openvpn": openvpn.version(),
            "iperf3": iperf[0] if iperf else "unknown"}


def _run(args: argparse.Namespace, work: Path, stack: contextlib.ExitStack) -> dict[str, Any]:
    mtus = [1500] if args.quick else [1500, 9000]
    names = [n.strip() for n in args.paths.split(",") if n.strip()]
    unknown = set(names) - set(PATH_NAMES)
    if unknown:
        raise BenchError(f"unknown paths: {', '.join(sorted(unknown))}")
    names = [n for n in PATH_NAMES if n in names]
    started = time.monotonic()
    lab = lablib.build(stack, args.tag, work)
    _say(f"{PROG}: hosts {lab.ns_a} and {lab.ns_b}, underlay veth MTU {lab.underlay_mtu}, "
         f"{os.cpu_count()} CPUs, {args.repetitions} repetition(s), MTU "
         f"{' and '.join(map(str, mtus))}, iperf3 {args.seconds:g} s (UDP "
         f"{args.overload_seconds:g} s), {args.pings} pings at 10 ms")
    _say("== the design's RTT floor: one hop between two processes, idle")
    hop = zmqhop.measure()
    for line in zmqhop.describe(hop):
        _say(f"  {line}")
    server = measure.iperf_server(lab.ns_b, work)
    stack.callback(server.stop)
    wait_until(lambda: measure.iperf_listening(lab.ns_b), 10, "the iperf3 server")
    _say("== paths")
    paths = _setup_paths(stack, lab, names, max(mtus))
    _say("== measurements")
    results = _measure(paths, lab, args, mtus)
    _say("== broker with a full FDB (tools/bench-broker --memory)")
    full_fdb = _broker_full_fdb_mib()
    _say(f"  RSS {'-' if full_fdb is None else f'{full_fdb:.1f}'} MiB")
    summary = report.summarize(results)
    return {
        "version": 1, "quick": args.quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "elapsed_s": round(time.monotonic() - started, 1),
        "machine": _versions(),
        "settings": {"underlay_mtu": lab.underlay_mtu, "mtus": mtus,
                     "repetitions": args.repetitions, "iperf_seconds": args.seconds,
                     "pings": args.pings, "ping_interval_s": 0.01,
                     "cpu": "path: user+system s of the path's processes (psutil) per 1e9 "
                            "bytes received; host: busy s of all CPUs (/proc/stat) per 1e9 "
                            "bytes, iperf3 and kernel included",
                     "rss": "largest RSS sampled every 0.25 s during the iperf3 runs: "
                            "rss_mib the TCP runs, rss_mib_overload the 2x UDP runs",
                     "overload": {
                         "seconds": args.overload_seconds, "factors": [1, overload.FACTOR],
                         "rate": "1x = the path's TCP throughput in the same repetition "
                                 "and MTU (the run just before)",
                         "best": "max(TCP throughput, UDP arrived at 1x)",
                         "ratio": "UDP arrived at 2x / best, per repetition; median",
                         "figures": "receiver side: iperf3 end.sum_received",
                         "arrived": "received by iperf3 plus the datagrams host B's UDP "
                                    "layer dropped for a full socket (RcvbufErrors): "
                                    "they crossed the path",
                         "datagram_bytes": "MTU - 28, don't fragment",
                         "socket_buffer_bytes": overload.socket_buffer_bytes(),
                         "skipped": overload.SKIPPED}},
        "paths": summary,
        "broker_full_fdb_rss_mib": full_fdb,
        "zmq_hop": hop,
        "targets": report.targets(summary, full_fdb),
    }


def _print(result: dict[str, Any]) -> None:
    paths, mtus = result["paths"], result["settings"]["mtus"]
    _say()
    _say(f"== results: medians of {result['settings']['repetitions']} repetition(s); "
         "ratio = etherws / its OpenVPN reference (vs)")
    _say(report.table(paths, mtus))
    _say("  cpu s/GB: CPU seconds of the path's processes per GB received (veth: kernel "
         "only, not attributable: -)")
    _say("  host s/GB: busy CPU seconds of the whole machine per GB (iperf3 and kernel "
         "included)")
    _say(f"  underlay veth MTU {result['settings']['underlay_mtu']}; "
         f"{result['machine']['openvpn'].split(' [')[0]}")
    for name in ("openvpn-aes", "openvpn-none"):
        for note in paths.get(name, {}).get("notes", []):
            _say(f"  {name}: {note}")
    if any(entry["overload"] for entry in paths.values()):
        _say("== overload: iperf3 UDP at 1x and 2x the TCP throughput (Gbit/s, medians)")
        _say(report.overload_table(paths))
        _say("  got: delivered (receiver's count); 2x sent: what iperf3 managed to offer "
             "(asked: 2 x TCP; less when the path's processes leave its sender no CPU)")
        _say("  rcvbuf: datagrams the receiving iperf3 socket dropped at 2x (they crossed the "
             "path; lost on host B); 2x at B: got + rcvbuf; recover ms: until a ping "
             "crossed again after 2x")
        _say("  2x/best: arrived at B at 2x / max(TCP, arrived at 1x), median of the "
             f"repetitions (target >= {report.OVERLOAD_RATIO:g} for etherws)")
    _say("== memory: largest RSS, MiB, during the iperf3 TCP runs / the 2x UDP runs")
    for line in report.memory_lines(paths):
        _say(line)
    full = result["broker_full_fdb_rss_mib"]
    _say(f"  broker-like process with a full 8192-entry FDB: "
         f"{'-' if full is None else f'{full:.1f}'}")
    _say("== CPU by process during the iperf3 TCP runs and the 2x UDP runs, cores (median; "
         f"1.00 = one CPU all the time, the machine has {result['machine']['cpus']})")
    for line in report.cpu_lines(paths):
        _say(line)
    _say("== targets")
    for line in report.target_lines(result["targets"]):
        _say(line)
    for line in report.floor_lines(paths, result["zmq_hop"]):
        _say(line)


def main(argv: list[str] | None = None) -> int:
    """Run the bench; the exit status."""
    args = _parser().parse_args(argv)
    if args.repetitions is None:
        args.repetitions = 1 if args.quick else 3
    if args.overload_seconds is None:
        args.overload_seconds = 3.0 if args.quick else 4.0
    if args.loaded_pings is None:
        args.loaded_pings = 50 if args.quick else 200
    if (args.repetitions < 1 or args.seconds <= 0 or args.pings < 1
            or args.overload_seconds <= 0 or args.loaded_pings < 1):
        _parser().error("--repetitions, --seconds, --overload-seconds, --pings and "
                        "--loaded-pings must be positive")
    if os.geteuid() != 0:
        print(f"{PROG}: needs root (network namespaces, TAP devices)", file=sys.stderr)
        return 1
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _interrupted)
    args.tag = args.tag or secrets.token_hex(2)
    t0 = time.monotonic()
    stack = contextlib.ExitStack()
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="etwb-"))
    if not args.workdir and not args.keep:
        stack.callback(shutil.rmtree, work, ignore_errors=True)
    status = 0
    try:
        result = _run(args, work, stack)
    except BenchError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        for log in sorted(work.glob("*.log")):
            tail = log.read_text(errors="replace").strip().splitlines()[-4:]
            print(f"--- {log.name}\n" + "\n".join(tail), file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; cleaning up", file=sys.stderr)
        status = 130
    finally:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up
        stack.close()
    if args.keep:
        _say(f"{PROG}: work directory kept: {work}")
    if status:
        return status
    result["elapsed_s"] = round(time.monotonic() - t0, 1)
    _print(result)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    _say(f"{PROG}: done in {result['elapsed_s']:.0f} s; results in {os.path.abspath(args.json)}")
    return 0

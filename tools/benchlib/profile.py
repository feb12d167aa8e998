"""``tools/profile``: where etherws' processes spend a bulk transfer, function by function.

Brings up the bench's etherws path (two namespace hosts, one tunnel), runs one iperf3
TCP stream through it, and meanwhile samples every etherws process with py-spy (100
samples a second, running threads only, so a process's samples are its busy time).
Prints, per process, its CPU share and the functions on top of its stack (self time:
the Python function that was running, C calls and system calls included in it).
Reads no etherws internals: the processes are found by their ``-m`` module, as the
bench does, so the figures describe the code as it is run.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import certs, measure
from benchlib import lab as lablib
from benchlib.main import PATH_NAMES
from benchlib.paths import BenchPath
from benchlib.proc import BenchError, in_ns, run, wait_until
from benchlib.switches import etherws_path

PROG = "tools/profile"
RATE_HZ = 100
TOP = 8


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--tls", action="store_true", help="profile wss:// instead of ws://")
    p.add_argument("--mtu", type=int, default=1500, help="overlay MTU (default 1500)")
    p.add_argument("--no-offload", action="store_true",
                   help="both switches with --no-offload (wire frames only)")
    p.add_argument("--seconds", type=float, default=10.0, help="iperf3 time (default 10)")
    p.add_argument("--top", type=int, default=TOP, help=f"functions per process ({TOP})")
    p.add_argument("--tag", help=argparse.SUPPRESS)
    return p


def py_spy() -> str:
    """The py-spy next to our interpreter (tools/profile installs it into .venv)."""
    exe = Path(sys.executable).with_name("py-spy")
    if not exe.exists():
        raise BenchError(f"py-spy not found at {exe}")
    return str(exe)


def leaf_counts(raw: str) -> tuple[collections.Counter[str], dict[str, str], int]:
    """Self samples per function from py-spy's raw (collapsed) output, the hottest line
    of each, and the total.

    Each line is ``frame;frame;...;leaf COUNT``; a frame reads ``func (file:line)``.
    Functions sum up over their lines; the hottest line tells a loop's own work from
    the poll it sleeps in (py-spy counts a thread blocked in poll as running).
    """
    counts: collections.Counter[str] = collections.Counter()
    lines: collections.Counter[tuple[str, str]] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        leaf = stack.rsplit(";", 1)[-1]
        func, _, where = leaf.partition(" (")
        file, _, lineno = where.rstrip(")").partition(":")
        key = f"{func} ({file.rsplit('/', 1)[-1]})"
        counts[key] += int(n)
        lines[key, lineno] += int(n)
        total += int(n)
    hottest: dict[str, str] = {}
    for (key, lineno), _n in lines.most_common():
        hottest.setdefault(key, lineno)
    return counts, hottest, total


def _profile(path: BenchPath, ns_a: str, seconds: float, work: Path
             ) -> list[tuple[str, float, collections.Counter[str], dict[str, str], int]]:
    roles = [(role, p) for role, p in path.processes() if not role.endswith("supervisor")]
    spies = []
    for role, p in roles:
        out = work / f"{role.replace(':', '-')}-{p.pid}.txt"
        cmd = [py_spy(), "record", "--pid", str(p.pid), "--rate", str(RATE_HZ),
               "--duration", f"{seconds:.0f}", "--format", "raw", "--nonblocking",
               "--output", str(out)]
        spies.append((role, p, out, subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                                     stderr=subprocess.DEVNULL)))
    cpu0 = {p.pid: sum(p.cpu_times()[:2]) for _, p in roles}
    t0 = time.monotonic()
    res = run(*measure.iperf_client(ns_a, path, seconds), check=False,
              timeout_s=seconds + 30)
    wall = time.monotonic() - t0
    report = measure.iperf_report(path, res)
    gbit = report["end"]["sum_received"]["bits_per_second"] / 1e9
    print(f"{PROG}: {path.label}: {gbit:.3f} Gbit/s for {seconds:g} s")
    results = []
    for role, p, out, spy in spies:
        try:
            spy.wait(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()
        share = (sum(p.cpu_times()[:2]) - cpu0[p.pid]) / wall
        counts, hottest, total = leaf_counts(out.read_text() if out.exists() else "")
        results.append((role, share, counts, hottest, total))
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the profile; 0, or 1 with one line on stderr."""
    args = _parser().parse_args(argv)
    for s in (signal.SIGTERM, signal.SIGHUP):  # unwind the stack: namespaces, switches
        signal.signal(s, lambda signum, _f: sys.exit(128 + signum))
    tag = args.tag or f"{os.getpid() & 0xFFFF:04x}"
    try:
        # The directory outlives the stack: stopping a switch needs its run directory.
        with tempfile.TemporaryDirectory(prefix="etwb-profile.") as tmp, \
                contextlib.ExitStack() as stack:
            work = Path(tmp)
            lab = lablib.build(stack, tag, work)
            print(f"{PROG}: hosts {lab.ns_a} and {lab.ns_b}, work directory {work}",
                  flush=True)
            server = measure.iperf_server(lab.ns_b, work)
            stack.callback(server.stop)
            wait_until(lambda: measure.iperf_listening(lab.ns_b), 10, "the iperf3 server")
            tls = certs.self_signed(work, "wss", lablib.UNDERLAY_B) if args.tls else None
            name = ("etherws-wss" if args.tls else "etherws-ws") + (
                "-nooff" if args.no_offload else "")
            path = etherws_path(stack, lab, PATH_NAMES.index(name), tls,
                                offload=not args.no_offload)
            path.set_mtu(args.mtu)
            wait_until(lambda: run(*in_ns(lab.ns_a, "ping", "-c1", "-W1", "-M", "do", "-s",
                                          str(args.mtu - 28), path.addr_b),
                                   check=False).returncode == 0, 15, "full-size frames")
            results = _profile(path, lab.ns_a, args.seconds, work)
            for role, share, counts, hottest, total in results:
                print(f"\n{role}: {share:.2f} of a core, {total} samples "
                      f"({RATE_HZ} a second; blocked in poll counts too)")
                for func, n in counts.most_common(args.top):
                    print(f"  {100 * n / max(total, 1):5.1f} %  {func}, "
                          f"mostly line {hottest[func]}")
    except BenchError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What TAP offload buys a Python process that moves frames (run as root).

Two TAPs, each in a namespace of its own with an address, and one Python process that
copies every read of one into the other (the simplest user-space switch there is):
an iperf3 TCP stream from one namespace to the other, first with plain TAPs (one
wire-sized frame a read), then with a virtio-net header and TSO (``etherws.gso``'s
super-frames, up to 64 KiB a read). Same machine, same run; prints Gbit/s and the
relay's CPU seconds per GB. Everything it made is removed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import subprocess
import sys

import psutil

from etherws.runtime import tuntap

from benchlib.proc import in_ns, run, wait_until


def _relay(a: int, b: int) -> None:
    """Copy frames between two blocking TAP fds until killed (in a forked child)."""
    poller = select.poll()
    poller.register(a, select.POLLIN)
    poller.register(b, select.POLLIN)
    while True:
        for fd, _ in poller.poll():
            data = os.read(fd, 65536 + 10)
            with contextlib.suppress(OSError):  # a full queue: TCP sends it again
                os.write(b if fd == a else a, data)


def measure(vnet: bool, seconds: float, tag: str) -> tuple[float, float]:
    """Gbit/s and the relay's CPU seconds per GB for one iperf3 run."""
    names = [(f"etwtso{c}{tag}", f"etso{c}{tag}", f"192.0.2.{i + 1}")
             for i, c in enumerate("ab")]
    fds: list[int] = []
    made: list[str] = []
    relay = 0
    try:
        for ns, tap, address in names:
            run("ip", "netns", "add", ns)
            made.append(ns)
            fd = tuntap.attach_tap(tap, vnet=vnet)
            fds.append(fd)
            if vnet:
                tuntap.set_offload(fd, tuntap.TUN_F_CSUM | tuntap.TUN_F_TSO4
                                   | tuntap.TUN_F_TSO6)
            run("ip", "link", "set", tap, "netns", ns)
            run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", tap)
            run("ip", "-n", ns, "link", "set", tap, "up")
        relay = os.fork()
        if relay == 0:
            try:
                for fd in fds:
                    os.set_blocking(fd, True)
                _relay(fds[0], fds[1])
            finally:
                os._exit(0)
        server = subprocess.Popen(in_ns(names[1][0], "iperf3", "-s", "-1"),
                                  stdout=subprocess.DEVNULL)
        try:
            wait_until(lambda: "5201" in run(*in_ns(names[1][0], "ss", "-ltn")).stdout,
                       10, "the iperf3 server")
            before = _cpu(relay)
            res = run(*in_ns(names[0][0], "iperf3", "-c", "192.0.2.2", "-t", str(seconds),
                             "-J"), timeout_s=seconds + 30)
            used = _cpu(relay) - before
        finally:
            server.kill()
            server.wait()
        end = json.loads(res.stdout)["end"]["sum_received"]
        return end["bits_per_second"] / 1e9, used / (end["bytes"] / 1e9)
    finally:
        if relay:
            os.kill(relay, signal.SIGKILL)
            os.waitpid(relay, 0)
        for fd in fds:
            os.close(fd)  # the TAPs are not persistent: they go with their fds
        for ns in made:
            run("ip", "netns", "del", ns, check=False)


def _cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    tag = f"{os.getpid() & 0xFFF:03x}"
    print(f"{'round':6} {'plain Gbit/s':>13} {'CPU s/GB':>9} {'TSO Gbit/s':>11} {'CPU s/GB':>9}")
    for i in range(args.rounds):
        plain = measure(False, args.seconds, tag)
        tso = measure(True, args.seconds, tag)
        print(f"{i + 1:<6} {plain[0]:13.2f} {plain[1]:9.2f} {tso[0]:11.2f} {tso[1]:9.2f}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What one Prometheus scrape of ``--metrics`` costs with many ports (run as root).

Starts a switch in a temporary run directory with ``--metrics`` and N TAP ports (64 by
default), waits until every port is up, then times ``--scrapes`` GETs of /metrics (each
parsed with prometheus-client's parser, to be sure it is whole) and prints the median,
the 95th percentile and the worst, in milliseconds. Everything it made is removed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from benchlib.proc import ctl, free_port


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ports", type=int, default=64)
    ap.add_argument("--scrapes", type=int, default=200)
    args = ap.parse_args()
    rundir = tempfile.mkdtemp(prefix="etherws-scrape-")
    os.chmod(rundir, 0o700)
    port = free_port()
    taps = [f"etscr{os.getpid() % 1000}x{i}" for i in range(args.ports)]
    subprocess.run([sys.executable, "-m", "etherws.supervisor", "start", "--rundir", rundir,
                    "--no-server", "--metrics", str(port), "--logfile",
                    os.path.join(rundir, "etherws.log")], check=True)
    try:
        for tap in taps:
            ctl(rundir, "addport", "tap", tap)
        end = time.monotonic() + 60
        while any(e["state"] != "up" for e in ctl(rundir, "listport")["entries"]):
            if time.monotonic() > end:
                raise SystemExit("the ports did not come up within 60 s")
            time.sleep(0.2)
        url = f"http://127.0.0.1:{port}/metrics"
        times, series = [], 0
        for _ in range(args.scrapes):
            start = time.perf_counter()
            with urllib.request.urlopen(url, timeout=5) as reply:
                body = reply.read().decode()
            times.append((time.perf_counter() - start) * 1000)
            series = sum(len(f.samples) for f in text_string_to_metric_families(body))
        times.sort()
        print(f"{args.ports} ports, {series} samples a scrape, {len(body)} bytes: "
              f"median {statistics.median(times):.1f} ms, "
              f"p95 {times[int(len(times) * 0.95) - 1]:.1f} ms, worst {times[-1]:.1f} ms "
              f"({args.scrapes} scrapes, HTTP GET to the last byte)")
    finally:
        subprocess.run([sys.executable, "-m", "etherws.supervisor", "stop", "--rundir",
                        rundir], check=False)
        for tap in taps:
            subprocess.run(["ip", "link", "del", tap], capture_output=True, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

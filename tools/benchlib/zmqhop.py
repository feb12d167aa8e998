"""The latency floor of the data plane's design: one ZeroMQ ipc hop between processes.

A ping through etherws crosses eight ZeroMQ hops (worker -> broker -> worker on each
host, both ways), each waking the sender's I/O thread, the receiver's I/O thread and
the receiver: that alone bounds the RTT from below, however fast the Python around
it. This measures it the way the bench's pings see it: a DEALER and a ROUTER in two
processes, with the data plane's socket options, one small message there and back
every 10 ms (idle CPUs between, as between the pings).

``python -m benchlib.zmqhop [--json]`` prints it; tools/bench reports it next to RTT.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import zmq

from benchlib.measure import percentile
from etherws import ipc

HOPS_PER_PING = 8
"""Tunnel ping: A's TAP worker -> broker -> client -> (TCP) -> B's peer -> broker -> TAP
worker, and the same back: 2 ZeroMQ hops per host and direction."""
SAMPLES = 200
GAP_S = 0.01
MESSAGE = ipc.pack([bytes(98)])  # an ICMP echo of ping's default size, as a batch
TIMEOUT_MS = 2000


def _echo(endpoint: str, ready: Any) -> None:
    """The ROUTER side (the broker's options): send every message back."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(endpoint)
    ready.set()
    try:
        while sock.poll(TIMEOUT_MS * 5):
            rid, msg = sock.recv_multipart()
            if msg == b"":
                break
            sock.send_multipart([rid, msg])
    finally:
        sock.close(linger=0)
        ctx.term()


def measure(samples: int = SAMPLES, gap_s: float = GAP_S) -> dict[str, Any]:
    """Median and p99 of one-hop latency (half a DEALER -> ROUTER -> DEALER round trip),
    microseconds, and the floor it sets for a ping through etherws, milliseconds."""
    with tempfile.TemporaryDirectory(prefix="etwb-zmqhop.") as tmp:
        endpoint = f"ipc://{Path(tmp) / 'hop.sock'}"
        mp = multiprocessing.get_context("spawn")  # no copy of a parent's zmq state
        ready = mp.Event()
        echo = mp.Process(target=_echo, args=(endpoint, ready), daemon=True)
        echo.start()
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        for opt, value in ((zmq.SNDHWM, ipc.HWM), (zmq.RCVHWM, ipc.WORKER_RCVHWM),
                           (zmq.LINGER, 0),
                           (zmq.RCVTIMEO, TIMEOUT_MS), (zmq.IMMEDIATE, 1)):
            sock.setsockopt(opt, value)
        try:
            if not ready.wait(30):
                raise RuntimeError("the echo process did not start")
            sock.connect(endpoint)
            sock.setsockopt(zmq.SNDTIMEO, TIMEOUT_MS)
            sock.send(MESSAGE)  # the connection is up once the first answer is back
            sock.recv()
            round_trips = []
            for _ in range(samples):
                time.sleep(gap_s)
                t0 = time.perf_counter()
                sock.send(MESSAGE)
                sock.recv()
                round_trips.append(time.perf_counter() - t0)
            sock.send(b"")
        finally:
            sock.close(linger=0)
            ctx.term()
            echo.join(5)
            if echo.is_alive():
                echo.kill()
                echo.join()
    hops_us = [rt / 2 * 1e6 for rt in round_trips]
    median_us = statistics.median(hops_us)
    return {"samples": samples, "gap_s": gap_s, "hop_median_us": round(median_us, 1),
            "hop_p99_us": round(percentile(hops_us, 99), 1),
            "hops_per_ping": HOPS_PER_PING,
            "ping_floor_ms": round(HOPS_PER_PING * median_us / 1000, 3)}


def main(argv: list[str] | None = None) -> int:
    """Print the hop latency (and the ping floor), or JSON with --json."""
    p = argparse.ArgumentParser(prog="python -m benchlib.zmqhop", description=__doc__)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    result = measure()
    if args.json:
        print(json.dumps(result))
    else:
        print(f"ZeroMQ ipc hop, idle ({result['gap_s'] * 1000:g} ms apart): median "
              f"{result['hop_median_us']:.0f} us, p99 {result['hop_p99_us']:.0f} us; "
              f"{HOPS_PER_PING} hops per ping through etherws: >= "
              f"{result['ping_floor_ms']:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())

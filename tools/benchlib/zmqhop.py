"""The latency floor of the data plane's design: one ZeroMQ ipc hop between processes.

A ping through etherws crosses eight ZeroMQ hops (worker -> broker -> worker on each
host, both ways), each waking the sender's I/O thread, the receiver's I/O thread and
the receiver: that alone bounds the RTT from below, however fast the Python around
it. This measures it the way the bench's pings see it: a DEALER and a ROUTER in two
processes, with the data plane's socket options, one small message there and back
every 10 ms (idle CPUs between, as between the pings).

For reference, the same exchange over a plain Unix SOCK_SEQPACKET socket between two
processes (one wake-up per hop, no I/O threads): what a hop of a data plane without
ZeroMQ's I/O threads would cost on the same machine, in the same run.

``python -m benchlib.zmqhop [--json]`` prints it; tools/bench reports it next to RTT.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import select
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

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
RECV_SIZE = 65536


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


def _unix_echo(path: str, ready: Any) -> None:
    """The reference's far side: a Unix seqpacket socket sending every message back."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(1)
    ready.set()
    listener.settimeout(TIMEOUT_MS * 5 / 1000)
    try:
        conn, _ = listener.accept()
    except OSError:  # nobody came: the measuring side failed first
        return
    finally:
        listener.close()
    poller = select.poll()
    poller.register(conn, select.POLLIN)
    try:
        while poller.poll(TIMEOUT_MS * 5):
            msg = conn.recv(RECV_SIZE)
            if not msg:
                break
            conn.send(msg)
    finally:
        conn.close()


def _round_trips(send: Callable[[], object], recv: Callable[[], bytes], samples: int,
                 gap_s: float) -> list[float]:
    """``samples`` round trips of MESSAGE, ``gap_s`` apart, after one that brings the
    link up; RuntimeError when an answer is not MESSAGE (an echo that went away would
    otherwise pass for a very fast hop)."""
    round_trips = []
    for i in range(samples + 1):
        if i:
            time.sleep(gap_s)
        t0 = time.perf_counter()
        send()
        answer = recv()
        if answer != MESSAGE:
            raise RuntimeError(f"the echo answered {len(answer)} bytes, not the message")
        if i:
            round_trips.append(time.perf_counter() - t0)
    return round_trips


@contextlib.contextmanager
def _echo_running(target: Callable[[str, Any], None], address: str) -> Iterator[None]:
    """``target(address, ready)`` in a fresh process, until the block ends (then
    reaped: it ends when its peer goes, or is killed)."""
    mp = multiprocessing.get_context("spawn")  # no copy of a parent's zmq state
    ready = mp.Event()
    echo = mp.Process(target=target, args=(address, ready), daemon=True)
    echo.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("the echo process did not start")
        yield
    finally:
        echo.join(5)
        if echo.is_alive():
            echo.kill()
            echo.join()


def _zmq_round_trips(tmp: Path, samples: int, gap_s: float) -> list[float]:
    endpoint = f"ipc://{tmp / 'hop.sock'}"
    with _echo_running(_echo, endpoint):
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        for opt, value in ((zmq.SNDHWM, ipc.HWM), (zmq.RCVHWM, ipc.WORKER_RCVHWM),
                           (zmq.LINGER, 0), (zmq.RCVTIMEO, TIMEOUT_MS),
                           (zmq.SNDTIMEO, TIMEOUT_MS), (zmq.IMMEDIATE, 1)):
            sock.setsockopt(opt, value)
        try:
            sock.connect(endpoint)
            # the connection is up once the first answer is back
            return _round_trips(lambda: sock.send(MESSAGE), sock.recv, samples, gap_s)
        finally:
            with contextlib.suppress(zmq.ZMQError):
                sock.send(b"", zmq.NOBLOCK)  # the echo's stop
            sock.close(linger=TIMEOUT_MS)  # time for the stop to leave
            ctx.term()


def _unix_round_trips(tmp: Path, samples: int, gap_s: float) -> list[float]:
    path = str(tmp / "unix.sock")
    with _echo_running(_unix_echo, path), \
            socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
        sock.settimeout(TIMEOUT_MS / 1000)
        sock.connect(path)
        # a blocking recv sleeps in poll(), as a worker's loop does; closing the
        # socket (before the echo is reaped) ends the echo
        return _round_trips(lambda: sock.send(MESSAGE), lambda: sock.recv(RECV_SIZE),
                            samples, gap_s)


def _summary(round_trips: list[float]) -> tuple[float, float]:
    hops_us = [rt / 2 * 1e6 for rt in round_trips]
    return statistics.median(hops_us), percentile(hops_us, 99)


def measure(samples: int = SAMPLES, gap_s: float = GAP_S) -> dict[str, Any]:
    """Median and p99 of one-hop latency (half a round trip), microseconds, over ZeroMQ
    ipc and over a plain Unix seqpacket socket, and the floor each sets for a ping
    through etherws (HOPS_PER_PING hops), milliseconds."""
    with tempfile.TemporaryDirectory(prefix="etwb-zmqhop.") as tmp:
        median_us, p99_us = _summary(_zmq_round_trips(Path(tmp), samples, gap_s))
        unix_median_us, unix_p99_us = _summary(_unix_round_trips(Path(tmp), samples, gap_s))
    return {"samples": samples, "gap_s": gap_s, "hop_median_us": round(median_us, 1),
            "hop_p99_us": round(p99_us, 1),
            "hops_per_ping": HOPS_PER_PING,
            "ping_floor_ms": round(HOPS_PER_PING * median_us / 1000, 3),
            "unix_hop_median_us": round(unix_median_us, 1),
            "unix_hop_p99_us": round(unix_p99_us, 1),
            "unix_ping_floor_ms": round(HOPS_PER_PING * unix_median_us / 1000, 3)}


def describe(result: dict[str, Any]) -> list[str]:
    """Two lines: the ZeroMQ hop with the floor it sets for a ping, and the Unix
    reference (what ``measure`` returned)."""
    per_ping = result["hops_per_ping"]
    return [f"ZeroMQ ipc hop, idle ({result['gap_s'] * 1000:g} ms apart): median "
            f"{result['hop_median_us']:.0f} us, p99 {result['hop_p99_us']:.0f} us; "
            f"x {per_ping} hops per ping through etherws: >= "
            f"{result['ping_floor_ms']:.2f} ms",
            f"Unix seqpacket hop, idle (the reference, no I/O threads): median "
            f"{result['unix_hop_median_us']:.0f} us, p99 {result['unix_hop_p99_us']:.0f} "
            f"us; x {per_ping}: {result['unix_ping_floor_ms']:.2f} ms"]


def main(argv: list[str] | None = None) -> int:
    """Print the hop latency (and the ping floor), or JSON with --json."""
    p = argparse.ArgumentParser(prog="python -m benchlib.zmqhop", description=__doc__)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    result = measure()
    print(json.dumps(result) if args.json else "\n".join(describe(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The latency floor of the data plane's design: one hop between two processes.

A ping through etherws crosses eight hops between processes (worker -> broker -> worker
on each host, both ways); each wakes the next process, and that alone bounds the RTT
from below, however fast the Python around it. This measures a hop the way the bench's
pings see it, one small message there and back every 10 ms (idle CPUs between, as
between the pings), three ways in the same run:

- the data plane's: a frame into a ring (``etherws.ring``), the far side woken by its
  doorbell FIFO only when it sleeps (``etherws.runtime.rings``), the answer the same way;
- ZeroMQ ipc (a DEALER and a ROUTER), how frames travelled until 2026-12: each hop wakes
  the sender's I/O thread, the receiver's I/O thread and the receiver;
- a plain Unix SOCK_SEQPACKET socket: one wake-up per hop, the kernel's floor.

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
from etherws.runtime import rings

HOPS_PER_PING = 8
"""Tunnel ping: A's TAP worker -> broker -> client -> (TCP) -> B's peer -> broker -> TAP
worker, and the same back: 2 ZeroMQ hops per host and direction."""
SAMPLES = 200
GAP_S = 0.01
MESSAGE = bytes(98)  # an ICMP echo of ping's default size
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
        for opt, value in ((zmq.SNDHWM, 64), (zmq.RCVHWM, 16),
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


def _ring_echo(path: str, ready: Any) -> None:
    """The ring's far side: every frame of the up ring back into the down ring, sleeping
    on its doorbell as a worker does; a zero-length frame ends it."""
    m = rings.MappedRing(path)
    up, down = m.file.up, m.file.down
    mine, theirs = rings.Bell(rings.bell_path(path)), rings.Bell(path + ".far")
    poller = select.poll()
    poller.register(mine.fileno(), select.POLLIN)
    ready.set()
    try:
        while True:
            frames = [bytes(f) for f in up.take(64)]
            up.release()
            if not frames:
                up.arm(True)
                rings.fence()
                if not up.readable() and not poller.poll(TIMEOUT_MS * 5):
                    return
                up.arm(False)
                mine.drain()
                continue
            for f in frames:
                if not f:
                    return
                down.put(f)
            down.commit()
            rings.fence()
            if down.armed:
                theirs.ring()
    finally:
        mine.close()
        theirs.close()
        m.close()


def _ring_round_trips(tmp: Path, samples: int, gap_s: float) -> list[float]:
    path = str(tmp / "ring-1-1")
    rings.create_ring(path, 1, 1)
    rings.make_bell(path + ".far")
    m = rings.MappedRing(path)
    up, down = m.file.up, m.file.down
    theirs, mine = rings.Bell(rings.bell_path(path)), rings.Bell(path + ".far")
    poller = select.poll()
    poller.register(mine.fileno(), select.POLLIN)

    def send(frame: bytes = MESSAGE) -> None:
        up.put(frame)
        up.commit()
        rings.fence()
        if up.armed:
            theirs.ring()

    def recv() -> bytes:
        while True:
            frames = [bytes(f) for f in down.take(1)]
            if frames:
                down.release()
                return frames[0]
            down.arm(True)
            rings.fence()
            if not down.readable() and not poller.poll(TIMEOUT_MS):
                raise RuntimeError("the ring echo did not answer")
            down.arm(False)
            mine.drain()

    try:
        with _echo_running(_ring_echo, path):
            try:
                return _round_trips(send, recv, samples, gap_s)
            finally:
                send(b"")  # the echo's stop
    finally:
        theirs.close()
        mine.close()
        m.close()


def _summary(round_trips: list[float]) -> tuple[float, float]:
    hops_us = [rt / 2 * 1e6 for rt in round_trips]
    return statistics.median(hops_us), percentile(hops_us, 99)


def measure(samples: int = SAMPLES, gap_s: float = GAP_S) -> dict[str, Any]:
    """Median and p99 of one-hop latency (half a round trip), microseconds, over ZeroMQ
    ipc and over a plain Unix seqpacket socket, and the floor each sets for a ping
    through etherws (HOPS_PER_PING hops), milliseconds."""
    with tempfile.TemporaryDirectory(prefix="etwb-zmqhop.", dir="/dev/shm") as tmp:
        ring_median_us, ring_p99_us = _summary(_ring_round_trips(Path(tmp), samples, gap_s))
        median_us, p99_us = _summary(_zmq_round_trips(Path(tmp), samples, gap_s))
        unix_median_us, unix_p99_us = _summary(_unix_round_trips(Path(tmp), samples, gap_s))
    return {"samples": samples, "gap_s": gap_s,
            "ring_hop_median_us": round(ring_median_us, 1),
            "ring_hop_p99_us": round(ring_p99_us, 1),
            "ring_ping_floor_ms": round(HOPS_PER_PING * ring_median_us / 1000, 3),
            "hop_median_us": round(median_us, 1),
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
    return [f"ring hop (the data plane), idle ({result['gap_s'] * 1000:g} ms apart): median "
            f"{result['ring_hop_median_us']:.0f} us, p99 {result['ring_hop_p99_us']:.0f} us; "
            f"x {per_ping} hops per ping through etherws: >= "
            f"{result['ring_ping_floor_ms']:.2f} ms",
            f"ZeroMQ ipc hop (until 2026-12), idle ({result['gap_s'] * 1000:g} ms apart): median "
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

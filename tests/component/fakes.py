"""Stand-ins the component tests put around one real etherws process.

- ``FakeBroker``: this test process as the broker of a port worker (it maps the port's
  rings and rings the doorbells, as the broker does);
- ``KernelEnd``: the kernel side of a port (an AF_PACKET socket on its interface), which
  injects test frames and collects the ones the worker writes;
- ``Spawner`` / ``Worker``: port worker processes of one kind, in port ``PORT``'s slot;
- ``FakeSupervisor``: a ROUTER at a control endpoint, for etherws-ctl and ctlclient;
- small helpers on test frames and on the port table's slot.

Every wait has a deadline (``tests.support``); nothing sleeps for correctness.
"""

from __future__ import annotations

import errno
import json
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import zmq

from etherws import control
from etherws.control import Refused
from etherws.paths import RunDir
from etherws.runtime import procargs, rings
from etherws.tables import PortKind, PortSlot, PortTable
from etherws.workers.netdev import vlan_tag
from tests import support

ROOT = Path(__file__).resolve().parents[2]
ETHERTYPE = 0x88B5  # IEEE "local experimental": nothing else on the host sends it
SOL_PACKET, PACKET_AUXDATA, PACKET_QDISC_BYPASS, PACKET_IGNORE_OUTGOING = 263, 8, 20, 23
PORT, SLOT = 1, 0  # the port a worker test runs, and its slot in the port table
WORKER_MODULES = {PortKind.TAP: "etherws.workers.tap",
                  PortKind.NETDEV: "etherws.workers.netdev",
                  PortKind.CLIENT: "etherws.workers.client"}


# --- test frames --------------------------------------------------------------------
def make_frame(seq: int, size: int = 100) -> bytes:
    """A frame to a random unicast MAC, EtherType ETHERTYPE, ``seq`` in the payload."""
    head = b"\x02" + os.urandom(5) + b"\x02\x00\x00\x00\x00\x01" + struct.pack("!H", ETHERTYPE)
    body = struct.pack("!I", seq) + bytes(range(256)) * (size // 256 + 1)
    return (head + body)[:size]


def is_test_frame(frame: bytes) -> bool:
    """Ours: EtherType ETHERTYPE, untagged or behind one or two tags."""
    return any(frame[off:off + 2] == struct.pack("!H", ETHERTYPE) for off in (12, 16, 20))


# --- the broker side of a port worker ------------------------------------------------
RING_GENERATION = 0x5151
"""The generation of port PORT's ring file in the component tests."""


def create_port_ring(rundir: str, port: int = PORT, generation: int = RING_GENERATION) -> str:
    """Create a port's ring file and doorbell, and the broker's doorbell, as the
    supervisor does; returns the ring file's path."""
    rd = RunDir(rundir)
    path = rd.ring(port, generation)
    rings.create_ring(path, port, generation)
    rings.make_bell(rd.broker_bell)
    return path


class FakeBroker:
    """This test process as the broker of port PORT: it maps the port's rings."""

    def __init__(self, rundir: str, port: int = PORT,
                 generation: int = RING_GENERATION) -> None:
        rd = RunDir(rundir)
        path = rd.ring(port, generation)
        self.mapped = rings.MappedRing(path)
        self.up = self.mapped.file.up
        self.down = self.mapped.file.down
        self.bell = rings.Bell(rd.broker_bell)
        self.worker_bell = rings.Bell(rings.bell_path(path))
        self.received: list[bytes] = []  # every frame, ours or not, for the counters
        self.headers: dict[bytes, bytes] = {}  # a frame -> the virtio-net header it came with

    def _take(self) -> list[bytes]:
        views = self.up.take(1024)
        frames = [bytes(f) for f in views]
        for view, frame in zip(views, frames):
            h = self.up.headers.get(id(view))
            if h is not None:
                self.headers[frame] = bytes(h)
        del views
        self.up.release()
        rings.fence()
        if self.up.waiting:
            self.worker_bell.ring()
        self.received += frames
        return frames

    def collect(self, count: int, timeout_s: float = 10) -> list[bytes]:
        """Take frames until ``count`` test frames arrived; returns those frames."""
        ours: list[bytes] = []
        end = support.deadline(timeout_s)
        poller = select.poll()
        poller.register(self.bell.fileno(), select.POLLIN)
        while len(ours) < count:
            left_ms = int((end - time.monotonic()) * 1000)
            assert left_ms > 0, f"broker got {len(ours)} of {count} frames"
            frames = self._take()
            ours += [f for f in frames if is_test_frame(f)]
            if frames:
                continue
            self.up.arm(True)
            rings.fence()
            if not self.up.readable():
                poller.poll(min(left_ms, 100))
            self.up.arm(False)
            self.bell.drain()
        return ours

    def drain(self) -> int:
        """Take every frame waiting now; the number of test frames among them."""
        ours = 0
        while self.up.readable():
            ours += sum(map(is_test_frame, self._take()))
        return ours

    def send(self, frames: list[bytes]) -> None:
        """Put frames into the down ring and ring the worker if it sleeps."""
        for f in frames:
            assert self.down.put(f), "the down ring is full"
        self.publish()

    def publish(self) -> None:
        """Commit the down ring and ring the worker's doorbell if it is armed."""
        self.down.commit()
        rings.fence()
        if self.down.armed:
            self.worker_bell.ring()

    def send_broken_record(self) -> None:
        """Publish a record whose length runs past the ring (what a bug would write)."""
        pos = self.down._head % self.down.capacity
        struct.pack_into("<IHH", self.down.data, pos, self.down.capacity, 0, 0)
        self.down._head += 8
        self.publish()

    def close(self) -> None:
        """Close the doorbells and unmap the rings."""
        self.bell.close()
        self.worker_bell.close()
        self.mapped.close()


# --- the kernel side of a port ------------------------------------------------------
class KernelEnd:
    """An AF_PACKET socket on an interface: the kernel side of a port."""

    def __init__(self, ifname: str, bypass_qdisc: bool = False) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_NONBLOCK, 0)
        self.sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        self.sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        if bypass_qdisc:  # straight to the driver: its drops come back as ENOBUFS
            self.sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
        self.sock.bind((ifname, 3))  # ETH_P_ALL

    def send(self, frame: bytes) -> bool:
        """Send one frame; False when the driver dropped it (ENOBUFS)."""
        try:
            self.sock.send(frame)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.ENOBUFS):
                return False
            raise
        return True

    def collect(self, count: int, timeout_s: float = 10) -> list[bytes]:
        """Receive until ``count`` test frames arrived (VLAN tags re-inserted)."""
        ours: list[bytes] = []
        end = support.deadline(timeout_s)
        while len(ours) < count:
            left = end - time.monotonic()
            assert left > 0, f"kernel side got {len(ours)} of {count} frames"
            if not select.select([self.sock], [], [], left)[0]:
                continue
            data, anc, _flags, _addr = self.sock.recvmsg(70000, 256)
            tag = vlan_tag(anc)
            frame = data[:12] + tag + data[12:] if tag else data
            if is_test_frame(frame):
                ours.append(frame)
        return ours

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


def prepare_link(name: str) -> None:
    """No IPv6 (no router solicitations, MLD reports: a quiet link), then up."""
    conf = Path(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6")
    if conf.exists():
        conf.write_text("1")
    support.run("ip", "link", "set", name, "up")


# --- port workers -------------------------------------------------------------------
def slot(table: PortTable) -> PortSlot:
    """The port's slot now."""
    return table.read(SLOT)


def worker_argv(module: str, rundir: str, target: str, port: int = PORT,
                options: tuple[str, ...] = ()) -> list[str]:
    """The command line of a port worker for ``target`` in slot SLOT, as ``port``."""
    return [sys.executable, "-m", module, "--rundir", rundir, "--parent-pid",
            str(os.getpid()), "--port", str(port), "--slot", str(SLOT), *options, target]


class Worker(subprocess.Popen[bytes]):
    """A port worker process whose stderr goes to a file.

    ``stdin_data`` is written to its stdin, which is then closed (a client worker's
    secrets); ``env`` replaces the environment.
    """

    def __init__(self, argv: list[str], log: Path, stdin_data: bytes | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.log = log
        with open(log, "w") as err:
            super().__init__(argv, cwd=ROOT,
                             stdin=subprocess.DEVNULL if stdin_data is None else subprocess.PIPE,
                             stdout=subprocess.DEVNULL, stderr=err, env=env)
        if stdin_data is not None:
            assert self.stdin is not None
            with self.stdin:
                self.stdin.write(stdin_data)

    def stderr_text(self) -> str:
        """What the worker wrote to stderr so far."""
        return self.log.read_text()


def wait_running(table: PortTable, proc: Worker, after_ns: int = 0) -> None:
    """Until the worker has opened its medium (its first heartbeat)."""
    def beating() -> bool:
        assert proc.poll() is None, proc.stderr_text()
        return slot(table).heartbeat_ns > after_ns
    support.wait_until(beating, 10, "the worker's first heartbeat")


def wait_counters(table: PortTable, broker: FakeBroker, tx: list[bytes]) -> None:
    """Until the slot's rx matches what the broker got and tx what it sent."""
    want = (len(broker.received), sum(map(len, broker.received)),
            len(tx), sum(map(len, tx)))
    support.wait_until(
        lambda: (lambda s: (s.rx, s.rx_bytes, s.tx, s.tx_bytes) == want)(slot(table)),
        5, f"counters rx/rx_bytes/tx/tx_bytes == {want}, have {slot(table)}")


def assert_config_error(proc: Worker, message: str) -> None:
    """The worker exits with EXIT_CONFIG and one line on stderr that contains ``message``."""
    assert proc.wait(timeout=10 * support.SCALE) == procargs.EXIT_CONFIG
    lines = proc.stderr_text().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


class Spawner:
    """Starts port workers of one kind as port PORT in slot SLOT; stops them all."""

    def __init__(self, rundir: str, logdir: Path, module: str, table: PortTable) -> None:
        self.rundir, self.logdir, self.module, self.table = rundir, logdir, module, table
        self.procs: list[Worker] = []

    def __call__(self, target: str, *options: str, stdin_data: bytes | None = None,
                 env: Mapping[str, str] | None = None) -> Worker:
        """Start a worker on ``target`` with extra ``options``; do not wait for it."""
        argv = worker_argv(self.module, self.rundir, target, options=options)
        proc = Worker(argv, self.logdir / f"worker{len(self.procs)}.err", stdin_data, env)
        self.procs.append(proc)
        return proc

    def running(self, target: str, after_ns: int = 0) -> Worker:
        """Start a worker on ``target`` and wait for its first heartbeat after ``after_ns``."""
        proc = self(target)
        wait_running(self.table, proc, after_ns)
        return proc

    def stop_all(self) -> None:
        """SIGTERM (then SIGKILL) every worker started here."""
        for p in self.procs:
            support.kill_process(p)


# --- the supervisor side of the control socket --------------------------------------
# respond(request body, index of the request) -> reply, or None to swallow the request
Responder = Callable[[bytes, int], "bytes | None"]


def answer(result: dict[str, Any]) -> Responder:
    """A responder that answers every request with ``result``."""
    def respond(body: bytes, index: int) -> bytes:
        return control.encode_result(control.decode_request(body).id, result)
    return respond


def swallow(body: bytes, index: int) -> None:
    """A responder that never answers (a hung supervisor)."""
    return None


class ThreadedRouter:
    """A ROUTER bound at ``endpoint``, served from a thread by ``handle``.

    ``close`` stops the thread and raises what went wrong in it, so a broken fake fails
    the test instead of hanging it. Subclasses set their attributes before calling
    ``__init__``: the thread starts at its end.
    """

    POLL_MS = 10

    def __init__(self, endpoint: str, name: str,
                 options: tuple[tuple[int, int], ...] = ()) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        for opt, value in ((zmq.LINGER, 0), *options):
            self.sock.setsockopt(opt, value)
        self.sock.bind(endpoint)
        self.error: BaseException | None = None
        self._stop = threading.Event()
        # The socket moves to the server thread: Thread.start() is the memory barrier
        # ZeroMQ asks for when a socket changes threads.
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def handle(self, parts: list[bytes]) -> None:
        """Serve one message received on the ROUTER (in the thread)."""
        raise NotImplementedError

    def _serve(self) -> None:
        try:
            while not self._stop.is_set():
                if self.sock.poll(self.POLL_MS):
                    self.handle(self.sock.recv_multipart())
        except BaseException as exc:  # surfaced by close(), so a broken fake fails the test
            self.error = exc

    def close(self) -> None:
        """Stop the thread, close the socket, terminate the context (idempotent)."""
        if self.ctx.closed:
            return
        self._stop.set()
        self._thread.join(timeout=5 * support.SCALE)
        self.sock.close(linger=0)
        support.term_context(self.ctx, "FakeSupervisor")
        if self.error is not None:
            raise self.error


class FakeSupervisor(ThreadedRouter):
    """A ROUTER bound at a control endpoint, answering from a thread with ``respond``.

    Without a ``respond`` it answers as the real supervisor does: the real
    ``control.dispatch`` with a handler per method of ``results`` that records
    ``(method, params)`` in ``calls`` and returns ``results[method]``, or raises
    ``refuse[method]`` when a test put a refusal there. ``requests`` holds every request
    body received, answered or not. A test may swap ``respond`` while it serves.
    """

    def __init__(self, endpoint: str, respond: Responder | None = None,
                 results: Mapping[str, dict[str, Any]] | None = None) -> None:
        self.results: Mapping[str, dict[str, Any]] = results or {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.refuse: dict[str, Refused] = {}
        self._handlers = {m: self._handler(m) for m in self.results}
        self.respond: Responder = respond or self._dispatch
        self.requests: list[bytes] = []
        super().__init__(endpoint, "fake-supervisor")

    def _handler(self, method: str) -> control.Handler:
        def handle(params: dict[str, Any]) -> dict[str, Any]:
            self.calls.append((method, params))
            if method in self.refuse:
                raise self.refuse[method]
            return self.results[method]
        return handle

    def _dispatch(self, body: bytes, index: int) -> bytes:
        return control.dispatch(body, self._handlers)

    def handle(self, parts: list[bytes]) -> None:
        """Answer one request (or not: ``respond`` returned None)."""
        *envelope, body = parts
        reply = self.respond(body, len(self.requests))
        self.requests.append(body)
        if reply is not None:
            self.sock.send_multipart([*envelope, reply])

    def ids(self) -> list[Any]:
        """The request ids seen, in order."""
        return [json.loads(r)["id"] for r in self.requests]


def start_supervisor(endpoint: str, respond: Responder | None = None,
                     results: Mapping[str, dict[str, Any]] | None = None) -> FakeSupervisor:
    """A FakeSupervisor at the ipc:// ``endpoint``, once its socket file exists."""
    fake = FakeSupervisor(endpoint, respond, results)
    support.wait_until(lambda: os.path.exists(endpoint[len("ipc://"):]), 5, "the ctl socket")
    return fake

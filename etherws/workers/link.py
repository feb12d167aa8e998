"""The shared port-worker loop: one medium <-> the broker over the data plane (I/O).

A *medium* is where a port's frames come from and go to: a TAP fd, an AF_PACKET
socket, a WebSocket. This module knows nothing about which; it moves batches
(``etherws.ipc`` format) between the medium and a DEALER connected to the broker's
ROUTER, and keeps the worker-owned words of the port's slot in the port table
(``etherws.workers.slot``): rx/tx frames and bytes, errors, drops, heartbeat.

Overload policy (offering 250k frames/s to a path that carries 190k once dropped
delivery to 79k: the reader spent the CPU on frames dropped further on): read the
medium only while the DEALER can take a message and the broker has not asked this port
to pause (it does when everything the port sent went to a port whose queue was full).
Otherwise the medium's fd is not even polled, frames queue in the kernel and the kernel
drops them for free (a TAP's tx queue, an AF_PACKET receive buffer) instead of this
process and the broker spending CPU on frames that would be dropped further on. The
medium reports those kernel drops through ``take_counts`` so ``listport`` shows them.
The other way, batches are taken from the broker only while the medium has room for
one (``has_room``), so a slow WebSocket peer fills the broker's queue, which is what
makes the broker ask the senders to pause. Partial batches of a steady stream wait
briefly for more frames (``etherws.workers.coalesce``): per-batch costs dominate.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Callable, Protocol, cast

import zmq

from etherws import ipc
from etherws.errors import EtherwsError
from etherws.frame import ETH_HLEN, MAX_FRAME
from etherws.paths import RunDir
from etherws.runtime import lifeline, logsetup, malloctune, procargs
from etherws.runtime.signals import StopSignal
from etherws.tables import SlotView
from etherws.workers import pollplan
from etherws.workers.coalesce import Coalescer
from etherws.workers.slot import claim_slot

log = logging.getLogger(__name__)

RECV_BATCHES_PER_WAKEUP = 8
"""Bound on broker batches written to the medium per wake-up (fairness with reads)."""
TICK_NS = 200_000_000
"""Heartbeat and medium-counter period; the supervisor expects a heartbeat every 0.5 s."""


class MediumClosed(EtherwsError):
    """Raised by a medium that ended for good: device deleted, connection closed.

    The worker logs ``reason`` and exits with ``exit_status`` (1: the supervisor
    restarts it; a WebSocket peer whose remote side hung up may choose 0).
    """

    def __init__(self, reason: str, exit_status: int = 1) -> None:
        super().__init__(reason)
        self.reason = reason
        self.exit_status = exit_status


class Medium(Protocol):
    """One port's frame source and sink, polled by fd. Every call is non-blocking.

    A medium inherits this class: the last five methods are optional hooks with no-op
    defaults, for a medium that buffers on its own (a WebSocket: decoded messages left
    over from a bounded batch, bytes decrypted inside the TLS layer, output the socket
    could not take yet, keepalive timers); TAP and AF_PACKET media keep the defaults.
    """

    def fileno(self) -> int:
        """The fd to poll for readability (stays the same while the medium is open)."""
        ...

    def read_batch(self, max_frames: int) -> list[bytes]:
        """Up to ``max_frames`` whole Ethernet frames, [] when nothing is ready.

        Raises MediumClosed when the medium has ended.
        """
        ...

    def write(self, frame: bytes) -> bool:
        """Send one frame; False when it was dropped (no room, refused by the kernel)."""
        ...

    def take_counts(self) -> tuple[int, int]:
        """``(errors, drops)`` the medium saw on its own since the last call.

        Errors: frames received but unusable (e.g. larger than the data plane carries).
        Drops: frames lost before they reached us (kernel queue overflow).
        """
        ...

    def close(self) -> None:
        """Release the medium (a persistent TAP stays)."""
        ...

    def pending_input(self) -> bool:
        """Input held that polling the fd would not announce."""
        return False

    def pending_output(self) -> bool:
        """Output queued: poll the fd for POLLOUT and call flush()."""
        return False

    def flush(self) -> None:
        """Send queued output without blocking (MediumClosed when the link is lost)."""
        return None

    def tick(self, now_ns: int) -> None:
        """Called every TICK_NS (MediumClosed when the peer is dead)."""
        return None

    def has_room(self) -> bool:
        """One more broker batch fits in the output queue; while not, the loop leaves
        the broker's batches queued (the broker then drops, and makes the senders
        pause, instead of us)."""
        return True


def split_valid(frames: list[bytes]) -> tuple[list[bytes], int]:
    """``(frames the data plane can carry, how many were not)``: ETH_HLEN..MAX_FRAME bytes."""
    good = [f for f in frames if ETH_HLEN <= len(f) <= MAX_FRAME]
    return good, len(frames) - len(good)


class BrokerLink:
    """The worker's DEALER to the broker's ROUTER, routing id ``ipc.routing_id(port)``."""

    def __init__(self, rundir: str, port: int) -> None:
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        s = self.socket
        s.setsockopt(zmq.ROUTING_ID, ipc.routing_id(port))
        s.setsockopt(zmq.SNDHWM, ipc.HWM)
        s.setsockopt(zmq.RCVHWM, ipc.WORKER_RCVHWM)
        s.setsockopt(zmq.MAXMSGSIZE, ipc.MAX_MESSAGE)
        s.setsockopt(zmq.LINGER, 0)
        # IMMEDIATE: queue only on a completed connection. Without it a DEALER keeps
        # accepting up to SNDHWM batches while the broker is away (restarting) and
        # delivers them, stale, when it is back. With it, no POLLOUT while there is no
        # broker, so the loop stops reading the medium and the kernel drops (and counts)
        # frames; a batch that still races a disconnect raises EAGAIN and is counted.
        s.setsockopt(zmq.IMMEDIATE, 1)
        s.connect(RunDir(rundir).data_endpoint)

    def writable(self) -> bool:
        """True when a batch can be sent now (connected, below the high-water mark)."""
        return bool(cast(int, self.socket.get(zmq.EVENTS)) & zmq.POLLOUT)

    def send(self, message: bytes) -> bool:
        """Send one batch without blocking; False when it was dropped."""
        try:
            self.socket.send(message, zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    def recv(self) -> bytes | None:
        """One batch from the broker, or None when none is waiting."""
        try:
            return self.socket.recv(zmq.NOBLOCK)
        except zmq.Again:
            return None

    def close(self) -> None:
        """Close the socket (dropping what is queued) and the context."""
        self.socket.close(linger=0)
        self.context.term()


class PortLoop:
    """Moves frames between a medium and the broker until stopped or the medium ends.

    What to wait for is decided by ``pollplan.plan``; ``clock`` (monotonic ns) and
    ``sleep`` are injected so tests decide time.
    """

    def __init__(self, medium: Medium, link: BrokerLink, counters: SlotView,
                 stop: StopSignal, clock: Callable[[], int] = time.monotonic_ns,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.medium = medium
        self.link = link
        self.counters = counters
        self.stop = stop
        self.coalescer = Coalescer()
        self.clock = clock
        self.sleep = sleep

    def run(self) -> None:
        """Loop until the stop flag is set; MediumClosed propagates."""
        sock, fd, medium = self.link.socket, self.medium.fileno(), self.medium
        poller = zmq.Poller()
        sock_mask = fd_mask = 0
        next_tick = 0
        while not self.stop.requested:
            wait = pollplan.plan(self.link.writable(), self.counters.hold_ns(self.clock()),
                                 medium.has_room(), medium.pending_input(),
                                 medium.pending_output())
            if wait.sock_events != sock_mask:
                # registers, changes the mask, or (0) unregisters
                poller.register(sock, wait.sock_events)
                sock_mask = wait.sock_events
            if wait.fd_events != fd_mask:
                poller.register(fd, wait.fd_events)
                fd_mask = wait.fd_events
            events = dict(poller.poll(wait.timeout_ms))
            now = self.clock()
            if now >= next_tick:
                self.tick(now)
                next_tick = now + TICK_NS
            fd_events = events.get(fd, 0)
            if fd_events & zmq.POLLOUT:
                medium.flush()
            if wait.reading and (wait.held or fd_events & ~zmq.POLLOUT):
                self.upstream()
            if events.get(sock, 0) & zmq.POLLIN:
                self.downstream()

    def tick(self, now_ns: int) -> None:
        """Heartbeat, fold in what the medium counted on its own, run the medium's timers."""
        self.counters.heartbeat(now_ns)
        errors, drops = self.medium.take_counts()
        self.counters.add_errors(errors)
        self.counters.add_drops(drops)
        self.medium.tick(now_ns)

    def upstream(self) -> None:
        """One bounded batch from the medium to the broker; a partial batch of a flowing
        stream first waits a little for more (``coalesce``)."""
        read = self.medium.read_batch
        frames = read(ipc.MAX_BATCH_FRAMES)
        hold = self.coalescer.hold_s(len(frames), self.clock() / 1e9)
        if hold:
            self.sleep(hold)
            try:
                frames += read(ipc.MAX_BATCH_FRAMES - len(frames))
            except MediumClosed:
                self._send_up(frames)  # what was read before the end still goes
                raise
        self._send_up(frames)

    def _send_up(self, frames: list[bytes]) -> None:
        good, bad = split_valid(frames)
        self.counters.add_errors(bad)
        if not good:
            return
        for batch in ipc.batches(good):
            if self.link.send(ipc.pack(batch)):
                self.counters.received(len(batch), sum(map(len, batch)))
            else:
                self.counters.add_drops(len(batch))
        self.coalescer.sent(self.clock() / 1e9)

    def downstream(self) -> None:
        """Up to RECV_BATCHES_PER_WAKEUP batches from the broker to the medium, then one
        flush: a buffering medium sends them with one system call, not one per batch."""
        write = self.medium.write
        for _ in range(RECV_BATCHES_PER_WAKEUP):
            if not self.medium.has_room():
                break
            message = self.link.recv()
            if message is None:
                break
            try:
                frames = ipc.unpack(message)
            except ipc.IpcError:
                self.counters.add_errors(1)
                continue
            sent = nbytes = 0
            for f in frames:
                if write(f):
                    sent += 1
                    nbytes += len(f)
            self.counters.sent(sent, nbytes)
            self.counters.add_drops(len(frames) - sent)
        self.medium.flush()  # may raise MediumClosed


def beat_while_waiting(counters: SlotView, stop: StopSignal, until_ns: int,
                       poll: Callable[[int], object], slice_ms: int,
                       done: Callable[[], bool] | None = None,
                       clock: Callable[[], int] = time.monotonic_ns) -> bool:
    """Wait for ``poll(timeout_ms)`` to report something, in slices of ``slice_ms``,
    beating the heartbeat before each; True when it did. False at ``until_ns``, once
    ``done()`` holds, or when a stop is requested: the waits a worker does outside
    PortLoop (a peer's opening handshake, a client between attempts) keep it alive in the
    supervisor's eyes and obey SIGTERM within a slice."""
    while True:
        now = clock()
        counters.heartbeat(now)
        if stop.requested or now >= until_ns or (done is not None and done()):
            return False
        if poll(max(1, min(slice_ms, (until_ns - now) // 1_000_000))):
            return True


OpenMedium = Callable[[argparse.Namespace], Medium]
"""Opens a port's medium from the parsed arguments (``args.target`` and any extras)."""


def begin(parser: argparse.ArgumentParser, argv: list[str] | None,
          label: str | Callable[[argparse.Namespace], str]
          ) -> tuple[argparse.Namespace, StopSignal]:
    """Every port worker's first steps: parse, die with the supervisor, catch SIGTERM,
    keep batch buffers in the heap, configure logging as ``port N <label>``. Returns the
    arguments and the stop flag."""
    args = parser.parse_args(argv)
    lifeline.die_with_parent(args.parent_pid)
    malloctune.keep_freed_memory()
    stop = StopSignal(wake=False).install()  # the loops wake every POLL_TIMEOUT_MS anyway
    name = label(args) if callable(label) else label
    logsetup.configure(args, f"port {args.port} {name}")
    return args, stop


def worker_main(argv: list[str] | None, prog: str, kind_label: str,
                open_medium: OpenMedium,
                add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
                ) -> int:
    """Parse, open the medium, connect to the broker, run; the exit status.

    0 after SIGTERM/SIGINT; procargs.EXIT_CONFIG when the medium or the port table
    cannot be opened (one clear log line); MediumClosed's status when the medium ends.
    Any other exception is a bug and ends the process (the supervisor restarts it).
    """
    parser = procargs.port_parser(prog, f"etherws {kind_label} port worker")
    parser.add_argument("target", help=f"what the {kind_label} port attaches to")
    if add_arguments is not None:
        add_arguments(parser)
    args, stop = begin(parser, argv, kind_label)
    try:  # before any zmq context exists: nothing to tear down on failure
        medium = open_medium(args)
    except OSError as e:
        log.error("%s", e.strerror or e)
        return procargs.EXIT_CONFIG
    counters = claim_slot(args)
    if counters is None:
        medium.close()
        return procargs.EXIT_CONFIG
    link = BrokerLink(args.rundir, args.port)
    log.info("%s %s open; data plane %s", kind_label, args.target,
             RunDir(args.rundir).data_endpoint)
    try:
        PortLoop(medium, link, counters, stop).run()
    except MediumClosed as e:
        log.error("%s %s: %s", kind_label, args.target, e.reason)
        return e.exit_status
    finally:
        link.close()
        medium.close()
    log.info("stopped by signal")
    return 0

"""The shared port-worker loop: one medium <-> the broker through the port's rings (I/O).

A *medium* is where a port's frames come from and go to: a TAP fd, an AF_PACKET
socket, a WebSocket. This module knows nothing about which; it moves frames between the
medium and the port's two rings (``etherws.ring``: ``up`` to the broker, ``down`` from
it) and keeps the worker-owned words of the port's slot in the port table
(``etherws.workers.slot``): rx/tx frames and bytes, errors, drops, heartbeat.

Wake-ups: the loop sleeps in poll on the medium's fd and its doorbell. Before it sleeps
on an empty down ring it arms the ring and looks again (after a fence, see
``runtime.rings``); the broker rings only an armed ring's doorbell, so a busy path makes
no wake-up calls at all. The same for the up ring: the worker rings the broker's
doorbell only when the broker sleeps.

Overload policy (offering 250k frames/s to a path that carries 190k once dropped
delivery to 79k: the reader spent the CPU on frames dropped further on): read the
medium only while the up ring has room for a frame and the broker has not asked this
port to pause (it does when everything the port sent went to a port whose ring was
full). Otherwise the medium's fd is not even polled, frames queue in the kernel and the
kernel drops them for free (a TAP's tx queue, an AF_PACKET receive buffer). The medium
reports those kernel drops through ``take_counts`` so ``listport`` shows them. The other
way, frames are taken from the down ring only while the medium has room for a batch
(``has_room``), so a slow WebSocket peer fills its down ring, where the broker drops and
makes the senders pause. Partial batches of a steady stream wait briefly for more frames
(``etherws.workers.coalesce``): every batch may cost the broker a wake-up.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import select
import time
from typing import Callable, Protocol

from etherws import probe
from etherws.errors import EtherwsError
from etherws.frame import ETH_HLEN, MAX_FRAME
from etherws.gso import VNET_HDR_LEN, GsoError, wire_frames
from etherws.loopguard import is_probe
from etherws.paths import RunDir
from etherws.ring import Ring, RingError, RingFile
from etherws.runtime import lifeline, logsetup, malloctune, procargs, rings
from etherws.runtime.signals import StopSignal
from etherws.tables import SlotView
from etherws.workers import pollplan
from etherws.workers.attach import BrokerSession, PortRefused
from etherws.workers.coalesce import Coalescer
from etherws.workers.slot import claim_slot

log = logging.getLogger(__name__)

RECV_FRAMES_PER_WAKEUP = 256
"""Bound on frames written to the medium per wake-up (fairness with reads)."""
RECV_BYTES_PER_WAKEUP = 512 * 1024
"""... and on their bytes: what a buffering medium must have room for (``has_room``).
Eight 64 KiB super-frames: 128 KiB (two) made a wake-up of every hop per two of them,
1.6-1.8 Gbit/s where 512 KiB gave 1.9-2.0 (tools/profile, ws:// with offload, runs
interleaved); without offload 256 frames bound a batch first, and tools/bench --quick
showed no change there (0.58 Gbit/s, ping p99 under load 15 ms against 17)."""
SEND_FRAMES_PER_WAKEUP = 64
"""Bound on frames read from the medium per wake-up."""
MAX_READ = MAX_FRAME + 1
"""The largest frame a medium's read can return (one byte over what is carried shows an
oversized frame as an error instead of a silently cut one)."""
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

    ``offload``: every frame read comes behind a VNET_HDR_LEN-byte virtio-net header, and
    ``write_vnet`` sends one with its header; ``write`` then sends a plain frame (behind a
    zero header, if the medium needs one).

    A medium inherits this class: the methods after ``close`` are optional hooks with
    no-op defaults, for a medium that buffers on its own (a WebSocket: decoded messages
    left over from a bounded batch, bytes decrypted inside the TLS layer, output the
    socket could not take yet, keepalive timers); TAP and AF_PACKET media keep the
    defaults.
    """

    offload: bool = False

    def fileno(self) -> int:
        """The fd to poll for readability (stays the same while the medium is open)."""
        ...

    def read_batch(self, max_frames: int) -> list[bytes]:
        """Up to ``max_frames`` whole Ethernet frames, [] when nothing is ready.

        Raises MediumClosed when the medium has ended.
        """
        ...

    def write(self, frame: bytes | memoryview) -> bool:
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

    def write_vnet(self, header: bytes | memoryview, frame: bytes | memoryview) -> bool:
        """Send one frame behind its virtio-net header (an ``offload`` medium's; the
        loop never calls it on another, which would drop the frame)."""
        return False

    def read_into(self, ring: Ring, max_frames: int) -> tuple[int, int, int] | None:
        """Read up to ``max_frames`` frames straight into ``ring`` (put, not committed):
        ``(frames, bytes, unusable frames)``; None when this medium cannot (the loop
        then uses read_batch). Raises MediumClosed when the medium has ended, after
        putting what it read before."""
        return None

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

    def start_probe(self, size: int, now_ns: int) -> bool:
        """Begin a path probe of ``size`` bytes to the far switch (``etherws.probe``);
        False when this medium cannot probe (not a tunnel)."""
        return False

    def probe_tick(self, now_ns: int) -> probe.Result | None:
        """The running probe's turn (called every TICK_NS while one runs): its result
        once done, else None."""
        return None

    def has_room(self) -> bool:
        """One more broker batch fits in the output queue; while not, the loop leaves
        the broker's batches queued (the broker then drops, and makes the senders
        pause, instead of us)."""
        return True


def split_valid(frames: list[bytes], vnet: int = 0) -> tuple[list[bytes], int]:
    """``(frames the data plane can carry, how many were not)``: ETH_HLEN..MAX_FRAME bytes
    after a ``vnet``-byte header."""
    low, high = ETH_HLEN + vnet, MAX_FRAME + vnet
    good = [f for f in frames if low <= len(f) <= high]
    return good, len(frames) - len(good)


class Bell(Protocol):
    """A doorbell as the loop uses it (``runtime.rings.Bell``)."""

    def fileno(self) -> int:
        """The fd to poll for POLLIN."""
        ...

    def ring(self) -> None:
        """Wake the waiter."""
        ...

    def drain(self) -> None:
        """Take every pending ring."""
        ...

    def close(self) -> None:
        """Close it."""
        ...


class RingLink:
    """The worker's side of its port's ring file, and the two doorbells: its own
    (``bell``, rung by the broker) and the broker's."""

    def __init__(self, ring: RingFile, bell: Bell, broker_bell: Bell,
                 unmap: Callable[[], None] = lambda: None, path: str = "",
                 session: BrokerSession | None = None) -> None:
        self.up: Ring = ring.up
        self.down: Ring = ring.down
        self.bell = bell
        self.broker_bell = broker_bell
        self._unmap = unmap
        self.path = path
        self.session = session
        self.detach = False
        """Say goodbye to the broker on close (a clean stop)."""

    def tick(self) -> None:
        """The session's turn (attach to a new broker, read its answers); PortRefused."""
        if self.session is not None:
            self.session.tick()

    def can_send(self) -> bool:
        """The up ring has room for the largest frame a medium reads."""
        return self.up.room_for(MAX_READ)

    def send(self, frames: list[bytes], vnet: int = 0) -> tuple[int, int]:
        """Put frames (each behind a ``vnet``-byte header) into the up ring and publish
        them; ``(frames, bytes)`` that went, headers not counted (the rest found no room)."""
        put = self.up.put
        sent = nbytes = 0
        for f in frames:
            if put(f, 0, vnet):
                sent += 1
                nbytes += len(f) - vnet
        if sent:
            self.publish()
        return sent, nbytes

    def publish(self) -> None:
        """Publish what was put into the up ring; ring the broker if it sleeps."""
        self.up.commit()
        rings.fence()
        if self.up.armed:
            self.broker_bell.ring()

    def discard(self) -> int:
        """Drop what the broker queued for us (no medium to send it to); how many, the
        loop guard's probes left out (they are sent to every port twice a second: a
        tunnel waiting to reconnect would count drops on an idle switch)."""
        n = 0
        try:
            while self.down.readable():
                n += sum(not is_probe(f) for f in self.down.take(RECV_FRAMES_PER_WAKEUP))
        except RingError:
            self.down.resync()
        self.down.release()
        return n

    def sleep_ready(self, down: bool, room: bool) -> bool:
        """Ask to be rung when the down ring fills (``down``) or the up ring empties
        (``room``); True when that happened already (then do not sleep)."""
        self.down.arm(down)
        self.up.wait_for_room(room)
        rings.fence()
        return (down and self.down.readable()) or (room and self.can_send())

    def woken(self) -> None:
        """Stop asking to be rung; take the rings that woke us."""
        self.down.arm(False)
        self.up.wait_for_room(False)
        self.bell.drain()

    def close(self) -> None:
        """End the session, close the doorbells and unmap the rings."""
        self.down.arm(False)
        if self.session is not None:
            self.session.close(self.detach)
        self.bell.close()
        self.broker_bell.close()
        self._unmap()


def map_link(rundir: str, port: int, generation: int) -> RingLink:
    """Map the ring file the port table names for this port, checked to belong to its
    port and generation, and open both doorbells; OSError or RingError."""
    rd = RunDir(rundir)
    path = rd.ring(port, generation)
    with contextlib.ExitStack() as undo:
        mapped = rings.MappedRing(path)
        undo.callback(mapped.close)
        f = mapped.file
        if f.port != port or f.generation != generation:
            raise RingError(f"ring file {path} belongs to port {f.port}, "
                            f"generation {f.generation:x}")
        bell = rings.Bell(rings.bell_path(path))
        undo.callback(bell.close)
        broker_bell = rings.Bell(rd.broker_bell)
        undo.pop_all()
    return RingLink(f, bell, broker_bell, mapped.close, path)


def open_link(args: argparse.Namespace, counters: SlotView) -> RingLink | None:
    """The worker's rings, from the slot, and its session with the broker (attached at
    the first tick); None (logged) when the rings cannot be used."""
    try:
        link = map_link(args.rundir, args.port, counters.ring)
    except (OSError, RingError) as e:
        log.error("cannot use the rings of port %d: %s", args.port, e)
        return None
    link.session = BrokerSession(args.rundir, args.port, counters.ring, counters.table)
    return link


class PortLoop:
    """Moves frames between a medium and the port's rings until stopped or the medium ends.

    What to wait for is decided by ``pollplan.plan``; ``clock`` (monotonic ns) and
    ``sleep`` are injected so tests decide time.
    """

    def __init__(self, medium: Medium, link: RingLink, counters: SlotView,
                 stop: StopSignal, clock: Callable[[], int] = time.monotonic_ns,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.medium = medium
        self.link = link
        self.counters = counters
        self.stop = stop
        self.coalescer = Coalescer()
        self.clock = clock
        self.sleep = sleep
        self._in_place = medium.read_into(link.up, 0) is not None  # asks, reads nothing
        self._probing: int | None = None  # the probe request being served

    def run(self) -> None:
        """Loop until the stop flag is set; MediumClosed propagates."""
        link, medium = self.link, self.medium
        fd, bell = medium.fileno(), link.bell.fileno()
        poller = select.poll()
        poller.register(bell, select.POLLIN)
        fd_mask = 0
        next_tick = 0
        while not self.stop.requested:
            has_room = medium.has_room()
            wait = pollplan.plan(link.can_send(), self.counters.hold_ns(self.clock()),
                                 has_room, medium.pending_input(), medium.pending_output(),
                                 link.down.readable())
            if wait.fd_events != fd_mask:
                if wait.fd_events:
                    poller.register(fd, wait.fd_events)
                else:
                    poller.unregister(fd)
                fd_mask = wait.fd_events
            timeout = wait.timeout_ms
            asked = timeout and (wait.sleep_down or wait.sleep_room)
            if asked and link.sleep_ready(wait.sleep_down, wait.sleep_room):
                timeout = 0
            events = dict(poller.poll(timeout))
            if asked:
                link.woken()
            now = self.clock()
            if now >= next_tick:
                self.tick(now)
                next_tick = now + TICK_NS
            fd_events = events.get(fd, 0)
            if fd_events & select.POLLOUT:
                medium.flush()
            if wait.reading and (wait.held or fd_events & ~select.POLLOUT):
                self.upstream()
            if has_room and link.down.readable():
                self.downstream()

    def tick(self, now_ns: int) -> None:
        """Heartbeat, fold in what the medium counted on its own, run the medium's timers,
        the session's turn (``attach.PortRefused`` ends the loop)."""
        self.counters.heartbeat(now_ns)
        self.link.tick()
        errors, drops = self.medium.take_counts()
        self.counters.add_errors(errors)
        self.counters.add_drops(drops)
        self.medium.tick(now_ns)
        self.probe_tick(now_ns)

    def probe_tick(self, now_ns: int) -> None:
        """Start the path probe the supervisor asked for in the slot, and publish its
        result once done (on the tick: the data path does nothing for probes)."""
        request = self.counters.probe_request()
        result = None
        if request is not None and request[0] != self._probing:
            self._probing, size = request
            if not self.medium.start_probe(size, now_ns):
                result = probe.unsupported(size)
        elif self._probing is not None:
            result = self.medium.probe_tick(now_ns)
        if result is not None and self._probing is not None:
            self.counters.probe_done(self._probing, *probe.to_words(result))
            self._probing = None

    def upstream(self) -> None:
        """One bounded batch from the medium to the up ring; a partial batch of a flowing
        stream first waits a little for more (``coalesce``)."""
        if self._in_place:
            self._upstream_in_place()
            return
        read = self.medium.read_batch
        frames = read(SEND_FRAMES_PER_WAKEUP)
        hold = self.coalescer.hold_s(len(frames), self.clock() / 1e9, sum(map(len, frames)))
        if hold:
            self.sleep(hold)
            try:
                frames += read(SEND_FRAMES_PER_WAKEUP - len(frames))
            except MediumClosed:
                self._send_up(frames)  # what was read before the end still goes
                raise
        self._send_up(frames)

    def _upstream_in_place(self) -> None:
        """upstream for a medium that reads straight into the up ring."""
        up, read, counters = self.link.up, self.medium.read_into, self.counters
        frames = nbytes = errors = 0
        try:
            frames, nbytes, errors = read(up, SEND_FRAMES_PER_WAKEUP) or (0, 0, 0)
            hold = self.coalescer.hold_s(frames, self.clock() / 1e9, nbytes)
            if hold:
                self.sleep(hold)
                more = read(up, SEND_FRAMES_PER_WAKEUP - frames) or (0, 0, 0)
                frames, nbytes, errors = frames + more[0], nbytes + more[1], errors + more[2]
        finally:  # what was read before the medium ended still goes
            counters.add_errors(errors)
            if up.pending():
                self.link.publish()
                counters.received(frames, nbytes)
                self.coalescer.sent(self.clock() / 1e9)

    def _send_up(self, frames: list[bytes]) -> None:
        vnet = VNET_HDR_LEN if self.medium.offload else 0
        good, bad = split_valid(frames, vnet)
        self.counters.add_errors(bad)
        if not good:
            return
        sent, nbytes = self.link.send(good, vnet)
        self.counters.received(sent, nbytes)
        self.counters.add_drops(len(good) - sent)
        self.coalescer.sent(self.clock() / 1e9)

    def downstream(self) -> None:
        """Up to RECV_FRAMES_PER_WAKEUP frames from the down ring to the medium, then one
        flush: a buffering medium sends them with one system call. The ring's space goes
        back to the broker after the flush, when the medium holds no view of it."""
        down, write = self.link.down, self.medium.write
        try:
            frames = down.take(RECV_FRAMES_PER_WAKEUP, RECV_BYTES_PER_WAKEUP)
        except RingError as e:
            log.error("the down ring is broken, its frames are dropped: %s", e)
            self.counters.add_errors(1)
            down.resync()
            return
        headers = down.headers
        if headers:
            sent, nbytes, dropped = self._write_vnet(frames, headers)
        else:
            sent = nbytes = 0
            for f in frames:
                if write(f):
                    sent += 1
                    nbytes += len(f)
            dropped = len(frames) - sent
        self.counters.sent(sent, nbytes)
        self.counters.add_drops(dropped)
        del frames, headers
        try:
            self.medium.flush()  # may raise MediumClosed
        finally:
            down.release()

    def _write_vnet(self, frames: list[memoryview], headers: dict[int, bytes | memoryview]
                    ) -> tuple[int, int, int]:
        """downstream's writes for a batch with virtio-net headers: ``(frames sent, their
        bytes, frames dropped)``. A medium without offload gets each super-frame's
        segments; one whose header does not fit its frame is an error, not sent."""
        medium, get = self.medium, headers.get
        sent = nbytes = dropped = errors = 0
        for f in frames:
            h = get(id(f))
            if h is None:
                wire: list[bytes | memoryview] = [f]
            elif medium.offload:
                if medium.write_vnet(h, f):
                    sent += 1
                    nbytes += len(f)
                else:
                    dropped += 1
                continue
            else:
                try:
                    wire = wire_frames(f, h)
                except GsoError:
                    errors += 1
                    continue
            for w in wire:
                if medium.write(w):
                    sent += 1
                    nbytes += len(w)
                else:
                    dropped += 1
        self.counters.add_errors(errors)
        return sent, nbytes, dropped


def write_segments(write: Callable[[bytes | memoryview], bool], header: bytes | memoryview,
                   frame: bytes | memoryview) -> bool:
    """Send a frame the kernel refused with its virtio-net header (EINVAL: a GSO type or
    an offload this kernel does not have, e.g. UDP segmentation before Linux 6.2, from a
    switch on a newer one) as wire frames through ``write``, which takes plain frames;
    False when one was dropped or the header does not fit the frame."""
    try:
        wire = wire_frames(frame, header)
    except GsoError:
        return False
    if len(wire) == 1 and wire[0] is frame:  # nothing to do for it here: a true refusal
        return False
    return all([write(w) for w in wire])


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

    0 after SIGTERM/SIGINT; procargs.EXIT_CONFIG when the medium, the port table or the
    rings cannot be opened or the broker refused the port (one clear log line);
    MediumClosed's status when the medium ends.
    Any other exception is a bug and ends the process (the supervisor restarts it).
    """
    parser = procargs.port_parser(prog, f"etherws {kind_label} port worker")
    parser.add_argument("target", help=f"what the {kind_label} port attaches to")
    if add_arguments is not None:
        add_arguments(parser)
    args, stop = begin(parser, argv, kind_label)
    try:  # before the rings are mapped: nothing to tear down on failure
        medium = open_medium(args)
    except OSError as e:
        log.error("%s", e.strerror or e)
        return procargs.EXIT_CONFIG
    counters = claim_slot(args)
    link = None if counters is None else open_link(args, counters)
    if counters is None or link is None:
        medium.close()
        return procargs.EXIT_CONFIG
    log.info("%s %s open; rings %s", kind_label, args.target, link.path)
    try:
        PortLoop(medium, link, counters, stop).run()
        link.detach = True
    except MediumClosed as e:
        log.error("%s %s: %s", kind_label, args.target, e.reason)
        return e.exit_status
    except PortRefused as e:
        log.error("%s", e)
        return procargs.EXIT_CONFIG
    finally:
        link.close()
        medium.close()
    log.info("stopped by signal")
    return 0

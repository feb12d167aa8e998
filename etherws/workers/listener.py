"""The listener process: accepts TCP connections and hands each to the supervisor (I/O).

``python -m etherws.workers.listener --rundir R --parent-pid P --listen-fd N [log opts]``

The supervisor binds and listens on the server address itself (so a busy port is a
start-up error it can report) and passes the listening socket as fd N. This process
parses nothing a peer sends: it accepts, sets TCP options, and passes the socket with
``etherws.runtime.fdpass`` over a ``SOCK_SEQPACKET`` connection to ``RUNDIR/accept.sock`` (bound
by the supervisor), then closes its own copy. The supervisor starts a peer worker for
each one (or closes it, over the peer limit).

Never a queue: when the supervisor's socket is missing, refuses the connection, or is
full, the accepted connection is closed at once (the client sees EOF and retries
later) and the trouble is logged once until it clears. Accepts are bounded per wake-up,
and when the process or the system is out of descriptors (EMFILE/ENFILE) accepting
pauses with a capped backoff instead of spinning on a connection it cannot take; the
connection waits in the kernel's backlog meanwhile.

The loop beats a heartbeat in the port table every BEAT_S (its poll never waits
longer), so a listener that is stopped or stuck is seen and restarted like a worker.
Exit 0 after SIGTERM/SIGINT,
``procargs.EXIT_CONFIG`` when fd N is not a listening stream socket, 1 on a bug.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import select
import socket
import sys
import time
from collections.abc import Callable

from etherws.paths import RunDir
from etherws.runtime import fdpass, lifeline, logsetup, procargs
from etherws.runtime.shm import open_port_table
from etherws.runtime.signals import StopSignal
from etherws.tables import ListenerView, TableError

log = logging.getLogger(__name__)

MAX_ACCEPTS_PER_WAKEUP = 64
"""Bound on accepts per wake-up, so a connection flood cannot starve signal handling."""
BEAT_MS = 250
"""Heartbeat period (the supervisor calls a process hung after 5 s of silence)."""
BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 1.0
"""Pause after EMFILE/ENFILE: doubled on each failure up to the cap, reset on success."""
KEEPALIVE_IDLE_S = 60
KEEPALIVE_INTERVAL_S = 15
KEEPALIVE_COUNT = 4
"""TCP keepalive on accepted connections: a peer that vanished without a FIN or RST is
found in about two minutes even before the WebSocket pings start (which run only after
the handshake), and idle NAT mappings on the way are refreshed."""

# accept(2), "Error handling": Linux reports the new connection's pending network
# errors from accept(); treat them like EAGAIN and take the next one. EPERM: a firewall
# rule refused it.
_RETRY_ERRNOS = frozenset({
    errno.ECONNABORTED, errno.EPROTO, errno.ENOPROTOOPT, errno.EHOSTDOWN, errno.ENONET,
    errno.EHOSTUNREACH, errno.EOPNOTSUPP, errno.ENETUNREACH, errno.ENETDOWN, errno.EPERM,
    errno.EINTR})
# Out of descriptors or kernel memory: nothing this process does right now will help.
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def peer_text(address: object) -> str:
    """``192.0.2.7:51234`` / ``[2001:db8::7]:51234`` for an accept() address."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = str(address[0]), address[1]
        with contextlib.suppress(ValueError):  # a dual-stack socket's IPv4 peers
            mapped = ipaddress.ip_address(host.partition("%")[0])
            if isinstance(mapped, ipaddress.IPv6Address) and mapped.ipv4_mapped:
                host = str(mapped.ipv4_mapped)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(address) or "unknown"


def tune(conn: socket.socket) -> None:
    """TCP_NODELAY (one Ethernet frame per message must not wait for Nagle) and keepalive."""
    if conn.family not in (socket.AF_INET, socket.AF_INET6):
        return
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE_S)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_S)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT)


class SupervisorLink:
    """The SEQPACKET connection to the supervisor, (re)connected when needed."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock: socket.socket | None = None
        self.closed_meanwhile = 0  # connections closed since the trouble began
        self._trouble: str | None = None

    def hand_over(self, conn: socket.socket, peer: str) -> bool:
        """Pass ``conn`` to the supervisor; False when it could not take it.

        The caller closes its copy of ``conn`` either way. A connection the supervisor
        closed is reconnected once at once (it may have re-bound its socket).
        """
        for retry in (False, True):
            sock = self._connected()
            if sock is None:
                break
            try:
                fdpass.send_conn(sock, conn.fileno(), peer)
            except BlockingIOError:
                self._troubled("the supervisor is not taking connections (queue full)")
                break
            except OSError as e:
                self.close()
                if retry:
                    self._troubled(f"sending to {self.path}: {e.strerror or e}")
                continue
            self._recovered()
            return True
        self.closed_meanwhile += 1
        return False

    def connect(self) -> bool:
        """Connect now if not connected (start-up); False if the supervisor is not there."""
        return self._connected() is not None

    def _connected(self) -> socket.socket | None:
        if self.sock is not None:
            return self.sock
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.setblocking(False)  # a full queue is EAGAIN, never a stall of the accept loop
        try:
            sock.connect(self.path)
        except OSError as e:
            sock.close()
            self._troubled(f"cannot connect to {self.path}: {e.strerror or e}")
            return None
        self.sock = sock
        return sock

    def _troubled(self, reason: str) -> None:
        if self._trouble is None:  # once per outage, not once per connection
            log.warning("%s; closing accepted connections until it is back", reason)
        self._trouble = reason

    def _recovered(self) -> None:
        if self._trouble is not None:
            log.info("handing connections to the supervisor again (%d closed meanwhile)",
                     self.closed_meanwhile)
        self._trouble = None
        self.closed_meanwhile = 0

    def close(self) -> None:
        """Close the connection (reconnected on the next hand-over)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class Listener:
    """The accept loop over a non-blocking listening socket; see the module docstring."""

    def __init__(self, lsock: socket.socket, link: SupervisorLink, stop: StopSignal,
                 beat: Callable[[int], None] = lambda now_ns: None) -> None:
        self.lsock = lsock
        self.link = link
        self.stop = stop
        self.beat = beat
        self.paused_until: float | None = None
        self._backoff_s = 0.0

    def run(self) -> None:
        """Accept and hand over until a stop signal."""
        poller = select.poll()
        poller.register(self.stop.fileno(), select.POLLIN)
        poller.register(self.lsock, select.POLLIN)
        while not self.stop.requested:
            self.beat(time.monotonic_ns())
            timeout_ms = BEAT_MS
            if self.paused_until is not None:
                remaining = self.paused_until - time.monotonic()
                if remaining > 0:
                    timeout_ms = max(1, min(BEAT_MS, int(remaining * 1000)))
                else:
                    self.paused_until = None
                    poller.register(self.lsock, select.POLLIN)
            poller.poll(timeout_ms)
            self.stop.drain()
            if self.paused_until is None and not self.stop.requested:
                if not self.accept_some():
                    poller.unregister(self.lsock)  # paused: wait out the backoff

    def accept_some(self) -> bool:
        """Up to MAX_ACCEPTS_PER_WAKEUP connections; False when accepting must pause."""
        for _ in range(MAX_ACCEPTS_PER_WAKEUP):
            try:
                conn, address = self.lsock.accept()
            except BlockingIOError:
                return True
            except OSError as e:
                if e.errno in _RETRY_ERRNOS:
                    continue
                if e.errno in _RESOURCE_ERRNOS:
                    self._pause(e)
                    return False
                raise
            if self._backoff_s:
                log.info("accepting connections again")
                self._backoff_s = 0.0
            with conn:
                self._pass_on(conn, peer_text(address))
        return True

    def _pass_on(self, conn: socket.socket, peer: str) -> None:
        try:
            tune(conn)
        except OSError as e:  # the peer may already have reset it: the worker will see
            log.debug("connection from %s: cannot set options: %s", peer, e.strerror)
        if self.link.hand_over(conn, peer):
            log.debug("connection from %s handed to the supervisor", peer)
        else:
            log.debug("connection from %s closed: no supervisor to take it", peer)

    def _pause(self, error: OSError) -> None:
        if not self._backoff_s:  # log the start of a shortage, not every retry
            log.warning("cannot accept: %s; pausing (up to %.1f s at a time)",
                        error.strerror, BACKOFF_MAX_S)
        self._backoff_s = min(BACKOFF_MAX_S, max(BACKOFF_FIRST_S, self._backoff_s * 2))
        self.paused_until = time.monotonic() + self._backoff_s


def _open_listening(fd: int) -> socket.socket | None:
    """The inherited listening socket, non-blocking; None (logged) if fd is unusable."""
    try:
        lsock = socket.socket(fileno=fd)
    except OSError as e:
        log.error("--listen-fd %d: %s", fd, e.strerror or e)
        return None
    if lsock.type != socket.SOCK_STREAM or not lsock.getsockopt(socket.SOL_SOCKET,
                                                                 socket.SO_ACCEPTCONN):
        log.error("--listen-fd %d is not a listening stream socket", fd)
        lsock.close()
        return None
    lsock.setblocking(False)
    return lsock


def main(argv: list[str] | None = None) -> int:
    """Run the listener; the exit status (see the module docstring)."""
    parser = procargs.child_parser("etherws-listener", "etherws WebSocket server listener")
    parser.add_argument("--listen-fd", type=int, required=True,
                        help="the listening TCP socket, inherited from the supervisor")
    args = parser.parse_args(argv)
    lifeline.die_with_parent(args.parent_pid)
    # The table first: mapping it takes a descriptor for a moment, and a listener run
    # with few descriptors must have them all for accepting.
    problem = ""
    try:
        table = open_port_table(RunDir(args.rundir).port_table)
    except (OSError, TableError) as e:
        problem = f"cannot use the port table: {getattr(e, 'strerror', None) or e}"
    stop = StopSignal()
    stop.install()
    logsetup.configure(args, "listener")
    if problem:
        log.error("%s", problem)
        stop.close()
        return procargs.EXIT_CONFIG
    lsock = _open_listening(args.listen_fd)
    if lsock is None:
        stop.close()
        return procargs.EXIT_CONFIG
    link = SupervisorLink(RunDir(args.rundir).accept_sock)
    try:
        link.connect()
        log.info("listening on %s; handing connections to %s",
                 peer_text(lsock.getsockname()), link.path)
        Listener(lsock, link, stop, ListenerView(table).heartbeat).run()
    finally:
        stop.close()
        link.close()
        lsock.close()
    log.info("stopped by signal")
    return 0


if __name__ == "__main__":
    sys.exit(main())

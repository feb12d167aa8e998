"""The peer port worker: one accepted WebSocket connection <-> the broker (I/O).

``python -m etherws.workers.peer --rundir R --parent-pid P --port N --slot S --fd FD
[--sslkey F --sslcert F] [--htpasswd F] [--token-key F] [--path /] [--origin O ...]
[--ping-interval S] [--ping-timeout S] [--max-message B] [log opts] PEER``

The supervisor spawns one for every connection the listener accepted, passing the
TCP socket as fd FD (``pass_fds``); PEER (``198.51.100.7:51234``) names it in the log.
Everything the remote side sends is parsed here, never in the supervisor or the broker.

Life of the worker:

- opening (at most HANDSHAKE_TIMEOUT_S in total, one deadline and not one per read, so
  a client that drips a byte a second is cut off too): the TLS server handshake (with
  ``--sslkey/--sslcert``), then the HTTP upgrade checked by
  ``etherws.wshandshake.ServerHandshake`` (path, Origin allow-list, a peer token
  verified with ``--token-key``, else Basic auth from ``--htpasswd``). A token that
  passes is locked for this connection (``runtime.tokenkey.hold``: a second connection
  with it gets 401 while this one lasts) and its claims, a VLAN and a MAC quota, go into
  the port's slot before the worker attaches to the broker, which applies them. All of
  it on a non-blocking socket, polled in slices of BEAT_MS with the heartbeat written
  between them: the supervisor kills a worker whose first heartbeat is 10 s late or
  whose heartbeat is 5 s old. A refusal is answered (401, 404, 426 ...) and logged in
  one INFO line with its reason (never a password, a token or a query string); no
  decision in time is answered 408. Exit 0, or ``procargs.EXIT_AUTH_FAILED`` after a
  401 (the supervisor counts failed logins).
- tunnel: the 101, then ``link.PortLoop`` with a ``wsmedium.WsMedium`` (server role)
  until the peer goes: it closes, the connection drops, it stops answering pings, or
  it breaks the protocol. Exit 0: peers are not restarted, the remote side reconnects.
- SIGTERM/SIGINT: close 1001 ("going away"), exit 0.

Exit ``procargs.EXIT_CONFIG`` when FD is not a connected stream socket, an option is
unusable (TLS files, path, limits) or the port table slot is not ours. The link state
(``connecting`` during the opening, ``up``, ``failed`` with the refusal) goes to the
port's status file (``etherws.runtime.portstatus``).
"""

from __future__ import annotations

import argparse
import logging
import select
import socket
import ssl
import sys
import time
from collections.abc import Callable

from etherws import config, token
from etherws.config import ConfigError
from etherws.frame import MAX_FRAME
from etherws.keepalive import Keepalive
from etherws.runtime import portstatus, procargs, tokenkey
from etherws.runtime.authfile import AuthFile, VerifySlots
from etherws.runtime.signals import StopSignal
from etherws.tables import SlotView
from etherws.workers.attach import PortRefused
from etherws.workers.link import (
    MediumClosed,
    PortLoop,
    beat_while_waiting,
    begin,
    open_link,
)
from etherws.workers.slot import claim_slot
from etherws.workers.wsmedium import WsMedium
from etherws.wsframe import CloseCode, Opcode, close_payload, frame
from etherws.wshandshake import (
    OFFLOAD_PROTOCOL,
    Accepted,
    Auth,
    Decision,
    Rejected,
    ServerHandshake,
    TokenCheck,
    http_response,
)

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_S = 5.0
"""The whole opening phase, TLS included: a silent connection is dropped after it."""
BEAT_MS = 200
"""Poll slice while opening or closing: bounds heartbeat age and SIGTERM latency."""
HEAD_READ = 4096
"""Bytes read per recv() while the request head is incomplete (the head is bounded by
``wshandshake.MAX_HEAD`` anyway)."""
LINGER_S = 1.0
"""How long a closing connection's input is drained before the socket is closed."""
_DRAIN_READS = 64
"""Bound on reads when discarding input at SIGTERM (no waiting there)."""

_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
_TOKEN_LOCKS: list[int] = []
"""The lock of the token this connection uses, held open until the process ends."""


class OpeningEnded(Exception):
    """The opening phase is over without a tunnel; the message is logged at INFO."""


class TimedOut(Exception):
    """The opening deadline passed while waiting for the peer."""


class Stopped(Exception):
    """SIGTERM/SIGINT arrived while waiting for the peer."""


class Waiter:
    """Waits on one socket until a deadline, beating the heartbeat every BEAT_MS."""

    def __init__(self, counters: SlotView, stop: StopSignal, deadline_ns: int) -> None:
        self.counters = counters
        self.stop = stop
        self.deadline_ns = deadline_ns

    def wait(self, sock: socket.socket, events: int) -> None:
        """Until ``sock`` is ready for ``events``; raises TimedOut or Stopped."""
        poller = select.poll()
        poller.register(sock.fileno(), events)
        if not beat_while_waiting(self.counters, self.stop, self.deadline_ns, poller.poll,
                                  BEAT_MS):
            raise Stopped if self.stop.requested else TimedOut

    def wait_for(self, exc: BaseException, sock: socket.socket, events: int) -> None:
        """Wait for ``events`` after a would-block ``exc``, or for what TLS asked instead.

        A TLS read may need to write first (and a write to read): SSLWantWriteError
        and SSLWantReadError say which way to wait, whatever the call was.
        """
        if isinstance(exc, ssl.SSLWantReadError):
            events = select.POLLIN
        elif isinstance(exc, ssl.SSLWantWriteError):
            events = select.POLLOUT
        self.wait(sock, events)


def tls_handshake(tls: ssl.SSLSocket, waiter: Waiter) -> None:
    """The server side of the TLS handshake on a non-blocking, not yet shaken ``tls``."""
    while True:
        try:
            tls.do_handshake()
            return
        except _WOULD_BLOCK as e:
            waiter.wait_for(e, tls, select.POLLIN)
        except ssl.SSLError as e:
            raise OpeningEnded(f"TLS handshake failed: {e.reason or e}") from None
        except OSError as e:
            raise OpeningEnded(f"connection lost during the TLS handshake: "
                               f"{e.strerror or e}") from None


def read_request(sock: socket.socket, handshake: ServerHandshake, waiter: Waiter) -> Decision:
    """Read until the handshake decides; raises OpeningEnded at end of stream."""
    while True:
        try:
            # recv() before poll(): decrypted TLS bytes left in the SSL object are
            # invisible to poll(), so only a would-block means "wait".
            data = sock.recv(HEAD_READ)
        except _WOULD_BLOCK as e:
            waiter.wait_for(e, sock, select.POLLIN)
            continue
        except OSError as e:
            raise OpeningEnded(f"connection lost before the upgrade: {e.strerror or e}") from None
        if not data:
            raise OpeningEnded("connection closed before the upgrade request was complete")
        decision = handshake.receive(data)
        if decision is not None:
            return decision


def send_all(sock: socket.socket, data: bytes, waiter: Waiter) -> None:
    """Send every byte of ``data`` before the waiter's deadline (TimedOut, OSError)."""
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
        except _WOULD_BLOCK as e:
            waiter.wait_for(e, sock, select.POLLOUT)
            continue
        view = view[sent:]


def linger_close(sock: socket.socket, waiter: Waiter) -> None:
    """Half-close, drain the input until end of stream or LINGER_S, then close.

    Linux answers a close() with unread input by a reset, and a reset can destroy
    our last words (a 401, a Close 1009) in the peer's receive queue before it reads
    them: exactly that lost simple-websocket's 1009 over plain TCP when it was tried.
    The linger has a budget of its own: after a 408 the opening deadline is spent.
    """
    waiter = Waiter(waiter.counters, waiter.stop, time.monotonic_ns() + int(LINGER_S * 1e9))
    try:
        # An SSLSocket drops its TLS layer here (no close_notify: the HTTP answer or
        # the WebSocket Close already ended the conversation) and reads raw bytes on.
        sock.shutdown(socket.SHUT_WR)
        while True:
            try:
                if not sock.recv(65536):
                    return
            except _WOULD_BLOCK as e:
                waiter.wait_for(e, sock, select.POLLIN)
    except (TimedOut, Stopped, OSError):
        pass  # the peer keeps sending or is gone: close anyway
    finally:
        sock.close()


def discard_input(sock: socket.socket) -> None:
    """Read and drop what the peer sent and we did not read yet, without waiting.

    At SIGTERM WsMedium.close() sends Close 1001 and closes at once; emptying the
    receive queue first keeps Linux from answering that close with a reset that could
    destroy the 1001 before the peer reads it (see linger_close).
    """
    try:
        for _ in range(_DRAIN_READS):
            if not sock.recv(65536):
                return
    except OSError:  # would-block (nothing left) or the connection is gone
        return


class Peer:
    """One accepted connection, from its first byte to its end; see the module docstring."""

    def __init__(self, args: argparse.Namespace, counters: SlotView, stop: StopSignal,
                 context: ssl.SSLContext | None, handshake: ServerHandshake) -> None:
        self.args = args
        self.counters = counters
        self.stop = stop
        self.context = context
        self.handshake = handshake

    def run(self, sock: socket.socket, started_ns: int) -> int:
        """The opening phase, then the tunnel; the exit status (0)."""
        waiter = Waiter(self.counters, self.stop,
                        started_ns + int(HANDSHAKE_TIMEOUT_S * 1e9))
        self._status("connecting")
        sock.setblocking(False)
        conn, http_ready = sock, self.context is None
        try:
            if self.context is not None:
                # wrap_socket takes the fd over from ``sock``: only ``conn`` is usable now.
                conn = self.context.wrap_socket(sock, server_side=True,
                                                do_handshake_on_connect=False)
                tls_handshake(conn, waiter)
                http_ready = True
            decision = read_request(conn, self.handshake, waiter)
        except OpeningEnded as e:
            return self._ended(str(e), conn, waiter)
        except TimedOut:
            # An HTTP answer only once TLS (if any) is up: before that it is noise.
            answer = http_response(408, body=b"408 Request Timeout\n") if http_ready else None
            stage = "upgrade request" if http_ready else "TLS handshake"
            return self._ended(f"no complete {stage} within {HANDSHAKE_TIMEOUT_S:g} s",
                               conn, waiter, answer)
        except Stopped:
            conn.close()
            log.info("stopped by signal during the opening handshake")
            return 0
        if isinstance(decision, Rejected):
            return self._refuse(decision, conn, waiter)
        return self._accept(decision, conn, waiter)

    def _ended(self, reason: str, sock: socket.socket, waiter: Waiter,
               answer: bytes | None = None) -> int:
        """No tunnel: best-effort ``answer``, close, log, report; exit 0."""
        try:
            if answer is not None:
                sock.send(answer)  # one try: the deadline is spent, nobody waits for it
        except OSError:  # would-block and ssl.SSLError included
            pass
        linger_close(sock, waiter)
        log.info("%s", reason)
        self._status("failed", reason)
        return 0

    def _refuse(self, rejected: Rejected, sock: socket.socket, waiter: Waiter) -> int:
        """Send the refusal within the deadline, close, log one line; exit 0."""
        reason = f"refused with {rejected.status}: {rejected.reason}"
        try:
            send_all(sock, rejected.response, waiter)
        except (TimedOut, Stopped, OSError):
            pass  # closing is all that is left to do either way
        status = self._ended(reason, sock, waiter)
        return procargs.EXIT_AUTH_FAILED if rejected.status == 401 else status

    def _accept(self, accepted: Accepted, sock: socket.socket, waiter: Waiter) -> int:
        """Send the 101 and run the tunnel until the peer goes or a signal; exit 0."""
        response = accepted.response
        if accepted.trailing:
            # RFC 6455 §4.1: a client sends nothing after its request until it has
            # read the 101, so these bytes break the protocol. WsMedium has no way to
            # take bytes already read from its socket, and accepting them would need
            # a second path that real clients never use: fail it with 1002 (§7.1.7).
            response += frame(Opcode.CLOSE, close_payload(CloseCode.PROTOCOL_ERROR,
                                                          "data before the handshake ended"))
        try:
            send_all(sock, response, waiter)
        except (TimedOut, Stopped, OSError) as e:
            why = "stopped by signal" if isinstance(e, Stopped) else "cannot send the 101"
            return self._ended(f"upgrade accepted but {why}", sock, waiter)
        if accepted.trailing:
            return self._ended(f"{len(accepted.trailing)} bytes sent before the 101 "
                               "(closed with 1002)", sock, waiter)
        who = f" as user {accepted.user!r}" if accepted.user is not None else ""
        claims = accepted.claims
        if claims is not None:
            # before the link to the broker opens: the broker reads them at the attach
            self.counters.set_token(claims.vlan, claims.max_macs)
            who = (f" with token {claims.id} (VLAN {claims.vlan or 'none'}, "
                   f"MACs {claims.max_macs or 'no own limit'})")
        offload = accepted.protocol == OFFLOAD_PROTOCOL
        log.info("WebSocket peer accepted%s (path %s%s)", who, self.args.path,
                 ", offload: super-frames" if offload else "")
        self._status("up", offload=offload)
        return self._tunnel(sock, offload)

    def _tunnel(self, sock: socket.socket, offload: bool) -> int:
        """Frames between the peer and the broker until either side ends; exit 0.
        ``offload``: the messages carry a virtio-net header (``OFFLOAD_PROTOCOL``)."""
        now_ns = time.monotonic_ns()
        keepalive = Keepalive(now_ns / 1e9, self.args.ping_interval_s, self.args.ping_timeout_s)
        medium = WsMedium(sock, "server", self.args.max_message, keepalive, offload)
        link = open_link(self.args, self.counters)
        if link is None:
            medium.close()
            self._status("failed", "the port's rings cannot be used")
            return procargs.EXIT_CONFIG
        try:
            PortLoop(medium, link, self.counters, self.stop).run()
            link.detach = True
        except MediumClosed as e:
            link.detach = True
            self._after_peer_went(medium)
            log.info("peer gone: %s", e.reason)
            self._status("failed", e.reason)
            return 0
        except PortRefused as e:
            log.error("%s", e)
            self._status("failed", str(e))
            medium.close()
            return procargs.EXIT_CONFIG
        finally:
            link.close()
        discard_input(sock)
        medium.close()  # Close 1001, going away
        log.info("stopped by signal")
        return 0

    def _after_peer_went(self, medium: WsMedium) -> None:
        """Flush what is queued (a Close echo, a 1009), then close gracefully."""
        waiter = Waiter(self.counters, self.stop,
                        time.monotonic_ns() + int(LINGER_S * 1e9))
        try:
            medium.flush()
            while medium.pending_output():
                waiter.wait(medium.sock, select.POLLOUT)
                medium.flush()
        except (MediumClosed, TimedOut, Stopped):
            pass
        # linger_close closes the socket, which is all WsMedium.close() would release;
        # calling that too would only try to send a Close after the peer's end.
        linger_close(medium.sock, waiter)

    def _status(self, state: str, error: str = "", offload: bool | None = None) -> None:
        """Publish the link state for the supervisor's listport."""
        portstatus.write(self.args.rundir, self.args.port, state, error, offload=offload)


def make_auth(path: str | None, rundir: str,
              beat: Callable[[], None] | None = None) -> Auth | None:
    """The handshake's credential check from an htpasswd file (re-read when it changes):
    of one duration whoever the user is, beating ``beat`` while it verifies, holding one
    of the switch's verification slots (lock files in ``rundir``)."""
    if path is None:
        return None
    authfile = AuthFile(path, VerifySlots(rundir))

    def auth(header: bytes | None) -> str | None:
        return authfile.authenticate(header, beat)
    return auth


def make_token_check(path: str | None, rundir: str) -> TokenCheck | None:
    """The handshake's token check with the key in ``path`` (None: tokens off): a good
    token not in use by another connection, whose lock this process then holds;
    ConfigError when the key cannot be used."""
    if path is None:
        return None
    try:
        key = tokenkey.read(path)
    except tokenkey.TokenKeyError as e:
        raise ConfigError(str(e)) from None

    def check(text: str) -> token.Claims:
        claims = token.verify(key, text, time.time())  # wall clock: tokens outlive boots
        try:
            fd = tokenkey.hold(rundir, claims.id)
        except OSError as e:
            raise token.TokenError(f"cannot lock token {claims.id}: "
                                   f"{e.strerror or e}") from None
        if fd is None:
            raise token.TokenError(f"token {claims.id} is in use by another connection")
        _TOKEN_LOCKS.append(fd)
        return claims
    return check


def tls_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """A TLS server context: TLS 1.2 or newer, our certificate, no client certificates."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # verify_mode CERT_NONE: no client certs
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile, keyfile)
    except OSError as e:  # ssl.SSLError included: a key that does not match, not PEM
        raise ConfigError(f"cannot use --sslcert/--sslkey: {e.strerror or e}") from None
    return context


def configure(args: argparse.Namespace, beat: Callable[[], None] | None = None
              ) -> tuple[ssl.SSLContext | None, ServerHandshake]:
    """The TLS context (None: plain ws) and the handshake (its credential check calls
    ``beat`` while it verifies a password); ConfigError if unusable."""
    config.check_child(args, "peer")  # the supervisor's checks: path, origins, pings
    config.check_tls_pair(args.sslkey, args.sslcert)
    origins = frozenset(args.origin) if args.origin else None
    # a smaller --max-message would close the tunnel at the first super-frame (1009)
    offload = not args.no_offload and args.max_message == MAX_FRAME
    handshake = ServerHandshake(args.path, make_auth(args.htpasswd, args.rundir, beat), origins,
                                protocols=(OFFLOAD_PROTOCOL,) if offload else (),
                                token_check=make_token_check(args.token_key, args.rundir))
    context = None if args.sslcert is None else tls_context(args.sslcert, args.sslkey)
    return context, handshake


def adopt_socket(fd: int) -> socket.socket:
    """The inherited connection as a socket object; OSError/ConfigError if it is not one."""
    sock = socket.socket(fileno=fd)
    if sock.type != socket.SOCK_STREAM or sock.getsockopt(socket.SOL_SOCKET,
                                                          socket.SO_ACCEPTCONN):
        sock.detach()  # not ours to close: it is not a connection
        raise ConfigError(f"--fd {fd} is not a connected stream socket")
    return sock


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The peer's own options and its address."""
    parser.add_argument("--fd", type=int, required=True,
                        help="the accepted TCP connection, inherited from the supervisor")
    config.add_child_arguments(parser, "peer")
    parser.add_argument("peer", help="the peer's address, for the log (198.51.100.7:51234)")


def main(argv: list[str] | None = None) -> int:
    """Run a peer port worker; the exit status (see the module docstring)."""
    started_ns = time.monotonic_ns()  # the opening deadline counts from here
    parser = procargs.port_parser("etherws-peer-worker", "etherws WebSocket peer port worker")
    add_arguments(parser)
    args, stop = begin(parser, argv, lambda a: f"peer {a.peer}")
    try:
        sock = adopt_socket(args.fd)
    except (OSError, ConfigError) as e:
        log.error("--fd %d: %s", args.fd, getattr(e, "strerror", None) or e)
        return procargs.EXIT_CONFIG
    counters = claim_slot(args)
    if counters is None:
        sock.close()
        return procargs.EXIT_CONFIG
    try:
        context, handshake = configure(
            args, lambda: counters.heartbeat(time.monotonic_ns()))
    except ConfigError as e:
        sock.close()
        log.error("%s", e)
        return procargs.EXIT_CONFIG
    return Peer(args, counters, stop, context, handshake).run(sock, started_ns)


if __name__ == "__main__":
    sys.exit(main())

"""The WebSocket server side of the supervisor: listening socket, hand-over, peers (I/O).

The supervisor binds the server address itself, so that a busy port or a missing
certificate is an error of ``etherws-supervisor start`` and not of a child that crash
loops later. The listener process (``workers/listener.py``) inherits the listening
socket, accepts, and passes every connection back over ``RUNDIR/accept.sock``
(``etherws.runtime.fdpass``); here each one becomes a server port with its own peer worker,
within ``--max-peers``. Nothing here reads a byte a peer sent: over the limit the
connection gets a canned 503 and is closed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import time

from etherws import config, htpasswd
from etherws.config import Config
from etherws.errors import EtherwsError
from etherws.paths import RunDir
from etherws.ratelimit import FailureLimiter
from etherws.runtime import fdpass, tokenkey
from etherws.runtime.authfile import MAX_FILE_BYTES, AuthFile, snapshot_text
from etherws.supervisor.children import Child
from etherws.supervisor.policy import RestartPolicy
from etherws.supervisor.ports import PortManager
from etherws.supervisor.zygote import Zygote
from etherws.tables import PortKind
from etherws.wshandshake import http_response

log = logging.getLogger(__name__)

BACKLOG = 1024
"""Room for connections the kernel holds until they send (TCP_DEFER_ACCEPT), so that a
flood of idle ones does not fill the queue before a real client."""
MAX_LINKS = 4
"""Listener connections kept at once: one, plus restarts whose old link is not yet seen
closed. Anything beyond is not a listener of ours (only root can reach the socket)."""
BUSY = http_response(503, body=b"too many peers\n")
CROWDED = http_response(503, body=b"too many connections in their handshake\n")
DEFER_ACCEPT_S = 5
PENDING_PER_SOURCE = 8
"""Connections of one address in their opening handshake (a peer worker each) at once."""
MAX_PENDING = 32
"""Connections in their opening handshake at once, from everywhere; they count against
--max-peers only once they are up."""
TOO_MANY_FAILURES = http_response(429, body=b"too many failed logins: try again later\n")
DISCARD = 65536
USERS_SNAPSHOT = "htpasswd"
"""The htpasswd table in force, in the run directory, for peer workers to read."""


def source_of(peer: str) -> str:
    """The address part of a peer's ``host:port`` (``[v6]:port``) text."""
    return peer.rpartition(":")[0].strip("[]") or peer


class ServerError(EtherwsError):
    """The server cannot start; the message is one line for the user."""


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host`` (all addresses when empty) and ``port``."""
    where = f"{host or '*'}:{port}"
    try:
        if not host:
            try:  # both IPv6 and IPv4 on one socket where the host has IPv6
                return socket.create_server(("::", port), family=socket.AF_INET6,
                                            dualstack_ipv6=True, backlog=BACKLOG)
            except OSError:
                return socket.create_server(("0.0.0.0", port), backlog=BACKLOG)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        family, _, _, _, address = infos[0]
        return socket.create_server(address, family=family, backlog=BACKLOG)
    except socket.gaierror as exc:
        raise ServerError(f"--host {host}: {exc.strerror}") from None
    except OSError as exc:  # create_server's own strerror adds a repr of the address
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ServerError(f"cannot listen on {where}: {why}") from None


def _check_files(cfg: Config) -> None:
    """Refuse a TLS key and certificate or an htpasswd file that cannot be used, now
    (and in one line: AuthFile would log its own warning before the error)."""
    if cfg.htpasswd:
        try:
            with open(cfg.htpasswd, "rb") as f:
                htpasswd.parse(f.read(MAX_FILE_BYTES).decode("utf-8-sig"))
        except OSError as exc:
            raise ServerError(f"--htpasswd: cannot read {cfg.htpasswd}: "
                              f"{exc.strerror or exc}") from None
        except (UnicodeDecodeError, htpasswd.HtpasswdError) as exc:
            raise ServerError(f"--htpasswd: cannot use {cfg.htpasswd}: {exc}") from None
    if cfg.sslcert:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cfg.sslcert, cfg.sslkey)
        except OSError as exc:
            raise ServerError(f"cannot read --sslcert/--sslkey: {exc.strerror or exc}") from None
        except ssl.SSLError as exc:
            raise ServerError(f"--sslcert/--sslkey: {exc.reason or exc}") from None


def peer_options(cfg: Config, users: str | None, token_key: str) -> tuple[str, ...]:
    """The peer worker's command-line options; ``users``: the htpasswd snapshot's path,
    ``token_key``: the token key file's."""
    return tuple(config.child_args(cfg, "peer", log=False, htpasswd=users,
                                   token_key=token_key))


class Server:
    """The listening socket, the hand-over socket and the links of the listener."""

    def __init__(self, cfg: Config, rundir: str, ports: PortManager) -> None:
        self.cfg = cfg
        self.ports = ports
        self.path = RunDir(rundir).accept_sock
        # The htpasswd file is read here, not by each peer: a peer process lives for one
        # connection, so only the supervisor can keep the last good table in force (and
        # log a broken file once) while the operator edits it. Peers read the snapshot.
        self.auth = AuthFile(os.path.abspath(cfg.htpasswd)) if cfg.htpasswd else None
        self.users = os.path.join(rundir, USERS_SNAPSHOT) if cfg.htpasswd else None
        self._users_written: object = None
        # Without --token-key one made in the run directory at start and removed at stop:
        # tokens then last as long as this run of the switch (the run directory holds
        # nothing but the lock between runs).
        self.token_key_path = (os.path.abspath(cfg.token_key) if cfg.token_key
                               else RunDir(rundir).token_key)
        self.rundir = rundir
        self.options = peer_options(cfg, self.users, self.token_key_path)
        self.refused = 0
        self.failures = FailureLimiter()
        ports.peer_refused = self._login_failed
        self._listening: socket.socket | None = None
        self._handover: socket.socket | None = None
        self._links: dict[int, socket.socket] = {}
        self.zygote: Zygote | None = None

    def open(self) -> None:
        """Bind everything; ServerError with one line when that cannot be done."""
        _check_files(self.cfg)
        if self.cfg.token_key is not None:  # the operator's: checked before anything binds
            self._open_token_key()
        if self.auth is not None:
            self._snapshot_users()
            if not self.auth.loaded:
                raise ServerError(f"--htpasswd: {self.auth.problem}")
            log.info("htpasswd %s: %d users", self.auth.path, len(self.auth.table()))
        self._listening = _listen(self.cfg.host, self.cfg.server_port)
        if self.cfg.token_key is None:  # ours, in the run directory: once the port is ours
            self._open_token_key()
        # A connection is accepted once its first bytes arrived: one that never sends a
        # byte costs the kernel a socket, and no process of ours, until it goes.
        self._listening.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT,
                                   DEFER_ACCEPT_S)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # left by a supervisor that was killed; we hold the lock
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_NONBLOCK)
        old = os.umask(0o077)
        try:
            sock.bind(self.path)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        sock.listen(MAX_LINKS)
        self._handover = sock
        log.info("WebSocket server on %s:%d%s (%s), at most %d peers",
                 self.cfg.host or "*", self.cfg.server_port, self.cfg.path,
                 "wss" if self.cfg.tls else "ws", self.cfg.max_peers)

    def _open_token_key(self) -> None:
        """Make the token key if it does not exist, check it, make the locks' directory;
        ServerError with one line when that cannot be done."""
        try:
            if tokenkey.make(self.token_key_path):
                log.log(logging.INFO if self.cfg.token_key else logging.DEBUG,
                        "token key %s created", self.token_key_path)
            tokenkey.read(self.token_key_path)  # usable: a bad key fails the start
            tokenkey.make_lock_dir(self.rundir)
        except tokenkey.TokenKeyError as exc:
            raise ServerError(f"--token-key: {exc}") from None

    def start_listener(self, argv: list[str], now: float) -> None:
        """Spawn the listener with the listening socket; the PortManager supervises it."""
        assert self._listening is not None
        fd = self._listening.fileno()
        # Never FATAL, and back within a second: without it no peer gets in.
        policy = RestartPolicy(max_crashes=None, max_delay_s=1.0)
        child = Child(argv + ["--listen-fd", str(fd)], policy,
                      pass_fds=(fd,))
        self.ports.listener = child
        child.spawn(now)

    def start_zygote(self, argv: list[str], now: float) -> None:
        """Start the zygote, which forks the peer workers from then on."""
        zygote = Zygote(argv)
        if zygote.start(now):
            self.zygote = zygote
            self.ports.zygote = zygote.child
            self.ports.peer_launcher = zygote.launcher

    def fds(self) -> list[int]:
        """Descriptors to poll for input."""
        if self._handover is None:
            return []
        zygote = self.zygote.fds() if self.zygote is not None else []
        return [self._handover.fileno(), *self._links, *zygote]

    def ready(self, fd: int, now: float) -> None:
        """Serve input on ``fd``: a new listener link, or connections handed over."""
        if self._handover is not None and fd == self._handover.fileno():
            self._accept_link()
            return
        if self.zygote is not None and self.zygote.ready(fd, time.monotonic_ns()):
            return
        link = self._links.get(fd)
        if link is None:
            return
        for _ in range(64):  # bounded: supervision must go on under a connection flood
            try:
                got = fdpass.recv_conn(link)
            except BlockingIOError:
                return
            except (EOFError, OSError):
                self._links.pop(fd).close()
                return
            if got is None:
                log.warning("listener link: dropped a malformed hand-over message")
                continue
            self._take(got[0], got[1], now)

    def _accept_link(self) -> None:
        assert self._handover is not None
        try:
            link, _ = self._handover.accept()
        except BlockingIOError:
            return
        if len(self._links) >= MAX_LINKS:
            link.close()
            return
        link.setblocking(False)
        self._links[link.fileno()] = link

    def _login_failed(self, peer: str, now: float) -> None:
        self.failures.failed(source_of(peer), now)

    def _take(self, fd: int, peer: str, now: float) -> None:
        """Give one accepted connection its peer worker, or refuse it; ``fd`` is closed."""
        try:
            wait = self.failures.retry_after(source_of(peer), now)
            if wait:  # no worker, no hashing: a password flood costs a canned answer
                self._refuse(fd, peer, f"too many failed logins, {wait:.0f} s to wait",
                             TOO_MANY_FAILURES)
                return
            why = self._crowded(peer)
            if why:
                self._refuse(fd, peer, why, CROWDED)
                return
            try:
                self._snapshot_users()
                self.ports.add(PortKind.SERVER, peer, now, options=self.options, fd=fd)
            except (OSError, LookupError) as exc:
                self._refuse(fd, peer, str(exc))
                return
            if self.refused:
                log.info("%d connections were refused before this one", self.refused)
                self.refused = 0
        finally:
            os.close(fd)

    def _crowded(self, peer: str) -> str:
        """Why a new connection from ``peer`` cannot have a worker now, or ""."""
        up, pending = self.ports.peers_by_state()
        if up >= self.cfg.max_peers:
            return f"{up} peers already (--max-peers)"
        if len(pending) >= MAX_PENDING:
            return f"{len(pending)} connections in their handshake already"
        source = source_of(peer)
        mine = sum(source_of(p) == source for p in pending)
        if mine >= PENDING_PER_SOURCE:
            return f"{mine} connections from {source} in their handshake already"
        return ""

    def _snapshot_users(self) -> None:
        """Write the table in force for the next peers, when it has changed (0600)."""
        if self.auth is None or self.users is None:
            return
        table = self.auth.table()  # one stat() while the file is unchanged
        if table is self._users_written or not self.auth.loaded:
            return
        tmp = f"{self.users}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with open(fd, "w", encoding="utf-8") as f:
            f.write(snapshot_text(table))  # with its verification time, measured once
        os.replace(tmp, self.users)
        self._users_written = table

    def _refuse(self, fd: int, peer: str, why: str, answer: bytes = BUSY) -> None:
        if not self.refused:  # once per run of refusals: a flood must not flood the log
            log.warning("peer %s refused: %s", peer, why)
        self.refused += 1
        with socket.socket(fileno=os.dup(fd)) as sock, contextlib.suppress(OSError):
            sock.setblocking(False)
            sock.send(answer)
            sock.shutdown(socket.SHUT_WR)
            # Unread input would make close() send a reset that can destroy the 503 before
            # the client reads it; the request is discarded unread, never parsed.
            sock.recv(DISCARD)

    def close(self) -> None:
        """Close every socket and remove the hand-over socket file."""
        if self.zygote is not None:
            self.zygote.close()
        for link in self._links.values():
            link.close()
        self._links.clear()
        for sock in (self._handover, self._listening):
            if sock is not None:
                sock.close()
        own_key = self.token_key_path if self.cfg.token_key is None else None
        for path in (self.path if self._handover is not None else None, self.users, own_key):
            if path is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        tokenkey.remove_lock_dir(self.rundir)  # no peer worker is left to hold a lock
        self._handover = self._listening = None


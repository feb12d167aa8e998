"""The supervisor process: run directory, control socket, and the supervision loop (I/O).

Start-up order matters: the lock first (a second supervisor on the same run directory
must fail before it touches anything: a second ZeroMQ bind on an ipc path silently
takes the address over), then the tables, then the control socket, then the broker.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import signal
import stat
import sys
import time
from collections import OrderedDict
from typing import Callable

import zmq

from etherws import config, control, events
from etherws.config import Config
from etherws.errors import EtherwsError
from etherws.paths import RunDir
from etherws.runtime import authfile, curvekeys, logsetup, rings, shm
from etherws.runtime.signals import StopSignal
from etherws.supervisor import handlers, offloads
from etherws.supervisor.ctlauth import KeyAuthenticator, sender
from etherws.supervisor.declared import Declared, read_ports
from etherws.supervisor.eventhub import EventHub
from etherws.supervisor.metrics import MetricsServer, SwitchCollector
from etherws.supervisor.policy import State
from etherws.supervisor.portops import PortError
from etherws.supervisor.ports import PortManager
from etherws.supervisor.server import Server, ServerError
from etherws.supervisor.watchdog import Watchdog, status_line
from etherws.tables import DEFAULT_PORT_SLOTS, PortKind

log = logging.getLogger(__name__)

TICK_S = 0.1
REPLY_CACHE = 64


def _internal_error(rid: str | int | None) -> bytes:
    return control.encode_error(rid, control.RpcError(
        control.Code.INTERNAL_ERROR, "internal error (see the supervisor log)"))


def _dir_stamp(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


class StartError(EtherwsError):
    """The supervisor cannot start; the message is one line for the user."""


def _open_rundir(path: str) -> None:
    """Create the run directory 0700, or accept an existing one only root can enter."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        st = os.stat(path)
        if not stat.S_ISDIR(st.st_mode):
            raise StartError(f"{path} exists and is not a directory") from None
        if st.st_uid != os.geteuid() or st.st_mode & 0o077:
            raise StartError(f"run directory {path} must belong to us with mode 0700 "
                             f"(it has {stat.S_IMODE(st.st_mode):04o})") from None
    except OSError as exc:
        raise StartError(f"cannot create run directory {path}: {exc.strerror}") from None


def _lock(rundir: RunDir) -> int:
    fd = os.open(rundir.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        try:
            with open(rundir.pidfile) as f:
                who = f"pid {int(f.read().strip())}"
        except (OSError, ValueError):
            who = "another process"
        raise StartError(f"another etherws-supervisor ({who}) is running "
                         f"in {rundir.root}") from None
    return fd


class Supervisor:
    """One switch: its run directory, tables, broker, ports and control socket."""

    def __init__(self, cfg: Config, config_path: str | None = None) -> None:
        self.cfg = cfg
        self.declared = Declared(config_path)
        self.watchdog = Watchdog()
        self._reload_requested = False
        self.rundir = RunDir(cfg.rundir)
        self.started = time.monotonic()
        self.stop = StopSignal()
        self._lock_fd = -1
        self._replies: OrderedDict[bytes, bytes] = OrderedDict()
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._ctl_socks: list[zmq.Socket[bytes]] = []
        self._auth: KeyAuthenticator | None = None
        self._clients_seen: int | None = None
        # requests answered later (addport client): request key -> where the reply goes
        self._pending: dict[bytes, tuple[zmq.Socket[bytes], bytes, control.Pending]] = {}
        self.server: Server | None = None
        self.metrics: MetricsServer | None = None
        self.events: EventHub | None = None
        self._ready = False  # prepared in full: a failed start stays one line on stderr

    # --- start-up ------------------------------------------------------------------
    def prepare(self) -> None:
        """Everything up to a bound control socket and a running broker; StartError."""
        _open_rundir(self.rundir.root)
        self._lock_fd = _lock(self.rundir)
        with open(self.rundir.pidfile, "w") as f:
            f.write(f"{os.getpid()}\n")
        self.table = shm.create_port_table(self.rundir.port_table, DEFAULT_PORT_SLOTS)
        rings.remove_stale(self.rundir.root)  # a killed supervisor's: no port names them
        rings.make_bell(self.rundir.broker_bell)
        self.fdb = shm.create_fdb_table(self.rundir.fdb_table, self.cfg.fdb_size)
        self._bind_control()
        self.ports = PortManager(self.table, self._child_argv, self.rundir.root)
        self.ports.offload = not self.cfg.no_offload
        if not self.cfg.no_server:
            self.server = Server(self.cfg, self.rundir.root, self.ports)
            try:
                self.server.open()
            except ServerError as exc:
                raise StartError(str(exc)) from None
        self.ports.broker.spawn(time.monotonic())
        if self.server is not None:
            self.server.start_listener(self._child_argv("etherws.workers.listener"),
                                       time.monotonic())
            if not self.cfg.no_zygote:
                self.server.start_zygote(self._child_argv("etherws.workers.zygote"),
                                         time.monotonic())
        self._start_declared_ports()
        self._start_metrics()
        self._switch = handlers.Switch(
            ports=self.ports, table=self.table, fdb=self.fdb, ageout_s=self.cfg.ageout_s,
            rundir=self.rundir.root, started=self.started, stop=self.stop.request,
            isolate=self.cfg.isolate, move_hold_s=self.cfg.move_hold_s,
            offload=not self.cfg.no_offload, loop_guard=not self.cfg.no_loop_guard,
            token_key=None if self.server is None else self.server.token_key_path,
            declared=self.declared, reloading=self.watchdog.reloading,
            reloaded=lambda: self.watchdog.reloaded(self.status_line()))
        self._handlers = handlers.table(self._switch)
        self._ready = True
        log.info("supervisor started: run directory %s, control %s, broker pid %s",
                 self.rundir.root, self.ctl_endpoint, self.ports.broker.pid)

    def _start_metrics(self) -> None:
        if self.cfg.metrics is None:
            return
        host, port = config.metrics_address(self.cfg.metrics)
        self.metrics = MetricsServer(host, port, SwitchCollector(self.ports, self.table,
                                                                  self.fdb))
        try:
            self.metrics.start()
        except OSError as exc:
            raise StartError(f"--metrics {self.cfg.metrics}: cannot listen: "
                             f"{exc.strerror or exc}") from None
        log.info("Prometheus metrics on http://%s:%d/metrics", host, port)

    def _start_declared_ports(self) -> None:
        """The configuration file's ports, before READY: a start that answers has them."""
        if self.declared.path is None:
            return
        try:
            self.declared.start(self.ports, read_ports(self.declared.path))
        except PortError as exc:
            raise StartError(str(exc)) from None

    @property
    def ctl_endpoint(self) -> str:
        """Where a local etherws-ctl reaches us: always the run directory's socket, which
        the run directory's lock protects from a second supervisor."""
        return self.rundir.ctl_endpoint

    def _control_socket(self) -> zmq.Socket[bytes]:
        assert self._ctx is not None
        sock: zmq.Socket[bytes] = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, control.MAX_MESSAGE)
        self._ctl_socks.append(sock)  # closed by cleanup() whatever happens next
        return sock

    def _bind_control(self) -> None:
        self._ctx = zmq.Context()
        sock = self._control_socket()
        old = os.umask(0o077)  # the socket file must never be reachable by others
        try:
            sock.bind(self.ctl_endpoint)
        except zmq.ZMQError as exc:
            raise StartError(f"cannot bind control socket {self.ctl_endpoint}: {exc}") from None
        finally:
            os.umask(old)
        os.chmod(self.ctl_endpoint[len("ipc://"):], 0o600)
        keys = self._bind_remote_control(self.cfg.ctl) if self.cfg.ctl else None
        self.events = EventHub(self._ctx, self.rundir.root)
        try:  # beside the control sockets, with the same access rules
            self.events.open(None if keys is None or self.cfg.ctl is None else
                             (events.remote_endpoint(self.cfg.ctl), *keys))
        except (zmq.ZMQError, events.EventError) as exc:
            raise StartError(f"cannot bind the event socket: {exc}") from None

    def _bind_remote_control(self, endpoint: str) -> tuple[bytes, bytes]:
        """A CURVE-only ROUTER: ZAP lets in only clients whose public key is allowed."""
        assert self._ctx is not None and self.cfg.ctl_secret_key and self.cfg.ctl_clients
        try:
            public, secret = curvekeys.load_secret(self.cfg.ctl_secret_key)
        except curvekeys.KeyFileError as exc:
            raise StartError(str(exc)) from None
        if not os.path.isdir(self.cfg.ctl_clients):
            raise StartError(f"--ctl-clients {self.cfg.ctl_clients} is not a directory")
        self._auth = KeyAuthenticator(self._ctx, self.cfg.ctl_clients)
        self._auth.start()
        self._auth.reload()
        self._clients_seen = _dir_stamp(self.cfg.ctl_clients)
        sock = self._control_socket()
        sock.curve_publickey, sock.curve_secretkey = public, secret
        sock.curve_server = True
        # a silent TCP peer must not hold a handshake slot for libzmq's default 30 s
        sock.setsockopt(zmq.HANDSHAKE_IVL, 5000)
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            raise StartError(f"cannot bind remote control {endpoint}: {exc}") from None
        log.info("remote control on %s (CURVE, clients from %s)", endpoint,
                 self.cfg.ctl_clients)
        return public, secret

    def _child_argv(self, module: str) -> list[str]:
        argv = [sys.executable, "-m", module, "--rundir", self.rundir.root,
                "--parent-pid", str(os.getpid())]
        argv += config.child_args(self.cfg, module.rpartition(".")[2])
        if module == "etherws.broker":
            argv += ["--fdb-per-port", str(self.cfg.fdb_per_port)]
        return argv

    # --- the loop --------------------------------------------------------------------
    def run(self) -> int:
        """Serve until stopped by a request or a signal; then stop everything."""
        self.stop.install()  # its pipe wakes the poll for every signal handled here
        signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake the poll up
        signal.signal(signal.SIGHUP, self._on_reload_signal)
        poller = zmq.Poller()
        for sock in self._ctl_socks:
            poller.register(sock, zmq.POLLIN)
        poller.register(self.stop.fileno(), zmq.POLLIN)
        server_fds: list[int] = []
        while not self.stop.requested:
            if self.server is not None and self.server.fds() != server_fds:
                for fd in server_fds:
                    poller.unregister(fd)
                server_fds = self.server.fds()
                for fd in server_fds:
                    poller.register(fd, zmq.POLLIN)
            events = dict(poller.poll(int(TICK_S * 1000)))
            if self.stop.fileno() in events:
                self.stop.drain()
            for sock in self._ctl_socks:
                if sock in events:
                    self._serve_control(sock)
            for fd in server_fds:
                if fd in events and self.server is not None:
                    self.server.ready(fd, time.monotonic())
            now = time.monotonic()
            self.ports.tick(now)
            if self.events is not None:
                self.events.tick(now, self.ports, self.fdb, self.cfg.ageout_s)
            offloads.restore_unused(p.target for p in self.ports.ports.values()
                                    if p.kind is PortKind.NETDEV)
            self._reread_client_keys()
            silent_s = (time.monotonic_ns() - self.table.broker_heartbeat_ns()) / 1e9
            self.watchdog.tick(now, silent_s, self.status_line)
            if self.ports.escalation:
                log.critical("stopping with an error: %s", self.ports.escalation)
                break
            self._answer_pending()
            if self._reload_requested:
                self._reload_requested = False
                self._hang_up_children()
                self._reload()
        log.info("supervisor stopping")
        self.watchdog.stopping()
        self._answer_pending(control.Refused("stopping", "the supervisor is stopping"))
        return 1 if self.ports.escalation else 0


    def _reread_client_keys(self) -> None:
        """A key added to or removed from --ctl-clients counts at once, without a restart
        (a directory's mtime moves with every entry added, removed or renamed)."""
        if self._auth is None or self.cfg.ctl_clients is None:
            return
        stamp = _dir_stamp(self.cfg.ctl_clients)
        if stamp != self._clients_seen:
            self._clients_seen = stamp
            self._auth.reload()
            log.info("remote control: client keys re-read from %s", self.cfg.ctl_clients)

    def _on_reload_signal(self, signum: int, frame: object) -> None:
        self._reload_requested = True  # done by the loop, not inside a signal handler
        logsetup.request_reopen()  # logrotate's postrotate: our files, at the next line

    def _hang_up_children(self) -> None:
        """Pass a SIGHUP on, so every process reopens its log files. Only to children that
        are up: one still starting may not handle SIGHUP yet, and would die of it."""
        children = [self.ports.broker,
                    *(c for c in (self.ports.listener, self.ports.zygote) if c is not None),
                    *(p.child for p in self.ports.ports.values())]
        for child in children:
            if child.popen is not None and child.life.state is State.UP:
                with contextlib.suppress(ProcessLookupError):
                    child.popen.send_signal(signal.SIGHUP)

    def _reload(self) -> None:
        """SIGHUP: apply the configuration file; the outcome goes to the log."""
        self.watchdog.reloading()
        try:
            self.declared.reload(self.ports)
        except PortError as exc:
            log.error("reload refused: %s", exc)
        self.watchdog.reloaded(self.status_line())

    def status_line(self) -> str:
        """The one-line summary the service manager shows."""
        states = []
        for port in self.ports.ports.values():
            link = self.ports.link(port)
            states.append(str(link["state"]) if link is not None
                          else port.child.life.state.value)
        return status_line(states, self.fdb.in_use)

    def _serve_control(self, sock: zmq.Socket[bytes]) -> None:
        for _ in range(32):  # bounded: the loop must keep supervising under a flood
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if len(frames) != 3 or frames[1].bytes != b"":
                log.debug("control: dropped a message that is not a REQ envelope")
                continue
            identity, data = frames[0].bytes, frames[2].bytes
            # A Lazy Pirate retry resends the very same bytes: answer it from the cache
            # (or, while the work is still going on, join it) rather than doing the work
            # twice. Keyed by the whole request, not its id alone: clients that count ids
            # from 1 must never get another request's reply.
            key = hashlib.blake2b(data, digest_size=16).digest()
            if key in self._pending:  # the retry's REQ socket is the one still waiting
                self._pending[key] = (sock, identity, self._pending[key][2])
                continue
            # the audit log names the remote key (its file's name in --ctl-clients)
            self._switch.source = "local" if sock is self._ctl_socks[0] \
                else sender(frames[2])
            reply = self._reply(key, data)
            if isinstance(reply, control.Pending):
                self._pending[key] = (sock, identity, reply)
            else:
                sock.send_multipart([identity, b"", reply])
            if self.stop.requested:
                return

    def _reply(self, key: bytes, data: bytes) -> bytes | control.Pending:
        cached = self._replies.get(key)
        if cached is not None:
            return cached
        try:
            reply = control.dispatch(data, self._handlers)
        except Exception:  # a bug in a handler: log it, answer, keep the switch running
            log.exception("control request failed")
            reply = _internal_error(control.request_id(data))
        if not isinstance(reply, control.Pending):
            self._remember(key, reply, control.request_id(data))
        return reply

    def _remember(self, key: bytes, reply: bytes, rid: str | int | None) -> None:
        if rid is not None:
            self._replies[key] = reply
            while len(self._replies) > REPLY_CACHE:
                self._replies.popitem(last=False)

    def _answer_pending(self, refusal: control.RpcError | None = None) -> None:
        """Send the replies whose answer is known now (all of them with ``refusal``)."""
        for key, (sock, identity, pending) in list(self._pending.items()):
            if refusal is not None:
                reply: bytes | None = control.encode_error(pending.id, refusal)
            else:
                try:
                    reply = pending.reply()
                except Exception:  # a bug: the client still gets its one line
                    log.exception("control request failed")
                    reply = _internal_error(pending.id)
            if reply is None:
                continue
            del self._pending[key]
            self._remember(key, reply, pending.id)
            sock.send_multipart([identity, b"", reply])

    # --- stop -------------------------------------------------------------------------
    def cleanup(self) -> None:
        """Stop every child, delete what we created, release the run directory."""
        if hasattr(self, "ports"):
            self.ports.stop_all()
            offloads.restore_unused(())
        if self.server is not None:
            self.server.close()
        if self.metrics is not None:
            self.metrics.close()
        if self.events is not None:
            self.events.close()
        for sock in self._ctl_socks:
            sock.close()
        if self._auth is not None:
            self._auth.stop()
        if self._ctx is not None:
            self._ctx.term()
        self.stop.close()
        verify_locks = [self.rundir.verify_lock(i) for i in range(authfile.slot_count())]
        for path in (self.rundir.ctl_sock, self.rundir.session_sock, self.rundir.port_table,
                     self.rundir.fdb_table, self.rundir.broker_bell, self.rundir.pidfile,
                     *verify_locks, events.local_endpoint(self.rundir.root)[len("ipc://"):]):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        if self._lock_fd >= 0:
            # The lock file stays: unlinking it would let a starter that opened it before
            # our exit lock a dead inode while another locks a new file, both "alone".
            os.close(self._lock_fd)
        if self._ready:
            log.info("supervisor stopped")


def serve(cfg: Config, notify: Callable[[str], None], config_path: str | None = None) -> int:
    """Run a supervisor in this process; ``notify`` gets "READY" or "ERROR <line>".
    ``config_path``: the configuration file whose ports it creates, saves and reloads."""
    sup = Supervisor(cfg, config_path)
    try:
        try:
            sup.prepare()
        except StartError as exc:
            notify(f"ERROR {exc}")
            return 1
        except OSError as exc:  # tmpfs full, read-only run directory, ...
            notify(f"ERROR cannot prepare {cfg.rundir}: {exc}")
            return 1
        notify("READY")
        sup.watchdog.started(sup.status_line())
        return sup.run()
    finally:
        if sup._lock_fd >= 0:
            sup.cleanup()

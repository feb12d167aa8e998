"""The listener process against this test as its supervisor; fdpass's message contract.

The test binds the TCP listening socket and the supervisor's SEQPACKET socket
(``RUNDIR/accept.sock``) as the real supervisor does, starts the listener with the
listening socket inherited, connects TCP clients, and receives each connection with
``fdpass.recv_conn``. Bytes exchanged over the received fd prove it is the client's
connection. Every wait has a deadline (socket timeouts or ``support.wait_until``).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
from pathlib import Path
from typing import Callable, Iterator

import pytest

from etherws.paths import RunDir
from etherws.runtime import fdpass, procargs
from etherws.runtime.shm import create_port_table
from etherws.workers.listener import peer_text
from tests import support

ROOT = Path(__file__).resolve().parents[3]
TIMEOUT_S = 5 * support.SCALE


class Harness:
    """The supervisor's side of a listener: its sockets, the process, the clients."""

    def __init__(self, rundir: str, logdir: Path) -> None:
        self.rundir = rundir
        self.table = create_port_table(RunDir(rundir).port_table, 4)  # for its heartbeat
        self.logfile = logdir / "listener.log"
        self.tcp = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self.address = self.tcp.getsockname()
        self.accept_server: socket.socket | None = None
        self.links: list[socket.socket] = []  # the listener's connections to accept.sock
        self.opened: list[socket.socket] = []
        self.proc: subprocess.Popen[bytes] | None = None

    def bind_accept_sock(self) -> None:
        """Bind RUNDIR/accept.sock, as the supervisor does before it starts the listener."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.bind(RunDir(self.rundir).accept_sock)
        s.listen(4)
        s.settimeout(TIMEOUT_S)
        self.accept_server = s

    def unbind_accept_sock(self) -> None:
        """The supervisor's socket goes away (the listener's connections with it)."""
        for link in self.links:
            link.close()
        self.links.clear()
        if self.accept_server is not None:
            self.accept_server.close()
            self.accept_server = None
            os.unlink(RunDir(self.rundir).accept_sock)

    def start(self, *extra: str, prefix: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
        """Start the listener with the TCP socket inherited (``prefix``: e.g. prlimit)."""
        fd = self.tcp.fileno()
        argv = [*prefix, support.PYTHON, "-m", "etherws.workers.listener",
                "--rundir", self.rundir, "--parent-pid", str(os.getpid()),
                "--listen-fd", str(fd), "--logfile", str(self.logfile), "--debug", *extra]
        self.proc = subprocess.Popen(argv, pass_fds=(fd,), cwd=ROOT)
        return self.proc

    def client(self) -> socket.socket:
        """A TCP client connected to the listening socket."""
        c = socket.create_connection(self.address, timeout=TIMEOUT_S)
        self.opened.append(c)
        return c

    def link(self) -> socket.socket:
        """The newest connection from the listener to accept.sock (accepted if new)."""
        assert self.accept_server is not None
        ready, _, _ = select.select([self.accept_server], [], [], 0)
        if ready or not self.links:
            conn, _ = self.accept_server.accept()
            conn.settimeout(TIMEOUT_S)
            self.links.append(conn)
        return self.links[-1]

    def receive(self) -> tuple[socket.socket, str]:
        """The next connection handed over: (the passed socket, the peer it names)."""
        got = fdpass.recv_conn(self.link())
        assert got is not None, "a malformed hand-over message"
        fd, peer = got
        passed = socket.socket(fileno=fd)
        passed.settimeout(TIMEOUT_S)
        self.opened.append(passed)
        return passed, peer

    def log(self) -> str:
        """The listener's log so far."""
        return self.logfile.read_text() if self.logfile.exists() else ""

    def close(self) -> None:
        """Stop the process, close every socket."""
        if self.proc is not None:
            support.kill_process(self.proc)
        for s in self.opened:
            s.close()
        self.unbind_accept_sock()
        self.tcp.close()


@pytest.fixture
def harness(rundir: str, tmp_path: Path) -> Iterator[Harness]:
    """A Harness in this test's run directory; everything closed afterwards."""
    h = Harness(rundir, tmp_path)
    try:
        yield h
    finally:
        h.close()


def exchange(client: socket.socket, passed: socket.socket, tag: bytes) -> None:
    """Bytes both ways: the passed socket is the client's connection."""
    client.sendall(b"to server " + tag)
    assert passed.recv(100) == b"to server " + tag
    passed.sendall(b"to client " + tag)
    assert client.recv(100) == b"to client " + tag


def assert_closed_by_listener(client: socket.socket) -> None:
    """The client's connection ends (EOF) within the deadline."""
    assert client.recv(1) == b""


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the listener process -------------------------------------------------------------
def test_connections_are_handed_over_with_their_peer(harness: Harness) -> None:
    harness.bind_accept_sock()
    harness.start()
    clients = {peer_text(c.getsockname()): c for c in (harness.client() for _ in range(4))}
    for _ in range(len(clients)):
        passed, peer = harness.receive()
        client = clients.pop(peer)
        exchange(client, passed, peer.encode())
        # SCM_RIGHTS passes the open file: the listener's options are on it.
        assert passed.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert passed.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
    assert not clients
    assert harness.proc is not None and harness.proc.poll() is None


def test_sigterm_exits_0(harness: Harness) -> None:
    harness.bind_accept_sock()
    proc = harness.start()
    exchange(harness.client(), harness.receive()[0], b"once")  # running, not starting
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=TIMEOUT_S) == 0
    assert "stopped by signal" in harness.log()


def test_without_the_supervisor_socket_connections_are_closed(harness: Harness) -> None:
    proc = harness.start()
    for _ in range(3):
        assert_closed_by_listener(harness.client())
    assert proc.poll() is None
    assert harness.log().count("closing accepted connections") == 1  # logged once
    # The supervisor's socket appears: connections are handed over again.
    harness.bind_accept_sock()
    client = harness.client()
    passed, peer = harness.receive()
    assert peer == peer_text(client.getsockname())
    exchange(client, passed, b"back")
    support.wait_until(lambda: "(3 closed meanwhile)" in harness.log(), 5, "recovery logged")


def test_supervisor_closing_its_end_is_reconnected(harness: Harness) -> None:
    harness.bind_accept_sock()
    harness.start()
    exchange(harness.client(), harness.receive()[0], b"first")
    harness.links.pop().close()  # the supervisor drops the listener's connection
    client = harness.client()
    passed, _ = harness.receive()  # over a new connection from the listener
    exchange(client, passed, b"second")


def test_a_supervisor_that_stops_reading_costs_connections_not_memory(
        harness: Harness) -> None:
    harness.bind_accept_sock()
    harness.start()
    exchange(harness.client(), harness.receive()[0], b"first")
    # Nobody reads the hand-overs: once the socket's queue is full the listener closes
    # what it accepts instead of queueing (and stays alive). The queue is bounded by the
    # listener's send buffer: about 280 hand-overs with wmem_default = 212992.
    for _ in range(600):
        harness.client()
    support.wait_until(lambda: "queue full" in harness.log(), 20, "the queue-full warning")
    last = harness.client()
    assert_closed_by_listener(last)
    assert harness.proc is not None and harness.proc.poll() is None


@pytest.mark.parametrize("make_fd", ["udp", "unlistening", "pipe"])
def test_a_bad_listen_fd_is_a_config_error(harness: Harness, make_fd: str,
                                           tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        if make_fd == "pipe":
            r, w = os.pipe()
            stack.callback(os.close, r)
            stack.callback(os.close, w)
            fd = r
        else:
            kind = socket.SOCK_DGRAM if make_fd == "udp" else socket.SOCK_STREAM
            s = stack.enter_context(socket.socket(socket.AF_INET, kind))
            fd = s.fileno()
        argv = [support.PYTHON, "-m", "etherws.workers.listener", "--rundir", harness.rundir,
                "--parent-pid", str(os.getpid()), "--listen-fd", str(fd)]
        done = subprocess.run(argv, pass_fds=(fd,), cwd=ROOT, capture_output=True, text=True,
                              timeout=TIMEOUT_S * 2)
    assert done.returncode == procargs.EXIT_CONFIG
    assert "--listen-fd" in done.stderr


def test_out_of_descriptors_pauses_instead_of_spinning(harness: Harness) -> None:
    harness.bind_accept_sock()
    # Room for the interpreter's start-up but not for one more socket once running:
    # stdio, the port table's mapping (mmap keeps a descriptor), the wakeup pipe, the log
    # file and the supervisor link use 0..7.
    proc = harness.start(prefix=("prlimit", "--nofile=8:64"))
    support.wait_until(lambda: "listening on" in harness.log(), 10, "the listener to start")
    harness.link()  # its connection to accept.sock exists: the 8th descriptor is in use
    client = harness.client()
    support.wait_until(lambda: "cannot accept" in harness.log(), 5, "the EMFILE warning")
    cpu_before = cpu_seconds(proc.pid)
    # For a second the connection waits in the backlog: no EOF, no hand-over...
    readable, _, _ = select.select([client, harness.link()], [], [], 1.0)
    assert readable == []
    # ...and the listener does not spin on it.
    assert cpu_seconds(proc.pid) - cpu_before < 0.2
    assert harness.log().count("cannot accept") == 1
    support.run("prlimit", f"--pid={proc.pid}", "--nofile=64:64")
    passed, _ = harness.receive()  # within one backoff period (at most 1 s)
    exchange(client, passed, b"after")
    support.wait_until(lambda: "accepting connections again" in harness.log(), 5,
                       "the recovery message")


# --- fdpass: the message contract -------------------------------------------------------
@pytest.fixture
def seqpair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected SOCK_SEQPACKET pair: the listener's end and the supervisor's."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    a.settimeout(TIMEOUT_S)
    b.settimeout(TIMEOUT_S)
    with a, b:
        yield a, b


@pytest.fixture
def stream_pair() -> Iterator[Callable[[], tuple[socket.socket, socket.socket]]]:
    """Make connected stream socket pairs (stand-ins for accepted connections)."""
    made: list[socket.socket] = []

    def make() -> tuple[socket.socket, socket.socket]:
        x, y = socket.socketpair()
        y.settimeout(TIMEOUT_S)
        made.extend((x, y))
        return x, y

    yield make
    for s in made:
        s.close()


SeqPair = tuple[socket.socket, socket.socket]
MakeStreamPair = Callable[[], tuple[socket.socket, socket.socket]]


def test_fdpass_round_trip(seqpair: SeqPair, stream_pair: MakeStreamPair) -> None:
    sender, receiver = seqpair
    mine, theirs = stream_pair()
    fdpass.send_conn(sender, mine.fileno(), "[2001:db8::7]:51234")
    mine.close()  # the sender's copy; the connection lives on in the passed fd
    got = fdpass.recv_conn(receiver)
    assert got is not None
    fd, peer = got
    assert peer == "[2001:db8::7]:51234"
    assert not os.get_inheritable(fd)  # MSG_CMSG_CLOEXEC
    with socket.socket(fileno=fd) as passed:
        passed.sendall(b"hello")
        assert theirs.recv(5) == b"hello"


def send_raw(sock: socket.socket, payload: bytes, fds: list[int]) -> None:
    """A message that fdpass.send_conn would not write."""
    socket.send_fds(sock, [payload], fds)


GOOD = json.dumps({"v": 1, "peer": "192.0.2.7:1"}).encode()
MALFORMED = {
    "not json": (b"hello", 1),
    "wrong version": (json.dumps({"v": 2, "peer": "192.0.2.7:1"}).encode(), 1),
    "not an object": (b"[1, 2]", 1),
    "peer not a string": (json.dumps({"v": 1, "peer": 7}).encode(), 1),
    "peer with a newline": (json.dumps({"v": 1, "peer": "a\nb"}).encode(), 1),
    "peer too long": (json.dumps({"v": 1, "peer": "x" * 100}).encode(), 1),
    "payload too long": (json.dumps({"v": 1, "peer": "x", "pad": "p" * 400}).encode(), 1),
    "not ascii": ('{"v": 1, "peer": "é"}'.encode(), 1),
    "no fd": (GOOD, 0),
    "two fds": (GOOD, 2),
    "more fds than room": (GOOD, 6),
    "empty payload with an fd": (b"", 1),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_fdpass_malformed_messages_close_their_fds(case: str, seqpair: SeqPair,
                                                   stream_pair: MakeStreamPair) -> None:
    payload, nfds = MALFORMED[case]
    sender, receiver = seqpair
    pairs = [stream_pair() for _ in range(nfds)]
    send_raw(sender, payload, [mine.fileno() for mine, _ in pairs])
    for mine, _ in pairs:
        mine.close()
    assert fdpass.recv_conn(receiver) is None
    for _, theirs in pairs:
        assert theirs.recv(1) == b""  # every copy is gone: the receiver closed its own
    # The channel still works afterwards.
    mine, theirs = stream_pair()
    fdpass.send_conn(sender, mine.fileno(), "192.0.2.7:2")
    got = fdpass.recv_conn(receiver)
    assert got is not None and got[1] == "192.0.2.7:2"
    os.close(got[0])


def test_fdpass_refuses_a_descriptor_that_is_not_a_socket(seqpair: SeqPair) -> None:
    sender, receiver = seqpair
    r, w = os.pipe()
    try:
        send_raw(sender, GOOD, [r])
        os.close(r)
        assert fdpass.recv_conn(receiver) is None
        with pytest.raises(BrokenPipeError):  # the received read end was closed
            os.write(w, b"x")
    finally:
        os.close(w)


def test_fdpass_eof_and_bad_peer(seqpair: SeqPair, stream_pair: MakeStreamPair) -> None:
    sender, receiver = seqpair
    mine, _ = stream_pair()
    with pytest.raises(ValueError):
        fdpass.send_conn(sender, mine.fileno(), "bad\npeer")
    sender.close()
    with pytest.raises(EOFError):
        fdpass.recv_conn(receiver)


def test_peer_text() -> None:
    assert peer_text(("192.0.2.7", 80)) == "192.0.2.7:80"
    assert peer_text(("2001:db8::7", 443, 0, 0)) == "[2001:db8::7]:443"


@pytest.mark.parametrize("address, text", [
    (("192.0.2.7", 51234), "192.0.2.7:51234"),
    (("::ffff:203.0.113.1", 80, 0, 0), "203.0.113.1:80"),
    (("2001:db8::7", 443, 0, 0), "[2001:db8::7]:443"),
    (("fe80::1%eth0", 8080, 0, 2), "[fe80::1%eth0]:8080"),
    ("", "unknown"),
])
def test_peer_text_shows_ipv4_mapped_peers_as_ipv4(address: object, text: str) -> None:
    assert peer_text(address) == text

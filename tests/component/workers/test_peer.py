"""The peer port worker (server side of a tunnel) against WebSocket clients on loopback.

This test process is the broker (``FakeBroker``), the listener (it accepts a TCP
connection and hands the socket to a real worker process with ``pass_fds``, as the
supervisor does) and the remote client: wsproto (``Client`` below) or websocket-client,
neither of them this project's code. TLS certificates come from ``openssl``.
"""

from __future__ import annotations

import base64
import select
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pytest
import websocket
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
)
from wsproto.extensions import PerMessageDeflate

from etherws import wsframe
from etherws.runtime import portstatus, procargs
from etherws.tables import PortKind, PortTable
from etherws.workers import peer
from tests import support
from tests.component.fakes import (
    PORT,
    ROOT,
    FakeBroker,
    make_frame,
    slot,
    wait_counters,
    worker_argv,
)
from tests.component.wsserver import make_ca, make_server_cert

FIXTURES = ROOT / "tests" / "fixtures" / "htpasswd"
PASSWORD = "s3cret!"  # alice's, in every fixture file (passwords.tsv)
WRONG = "wr0ng-Pa55"  # must never show up in the log
FAST_PINGS = ("--ping-interval", "0.5", "--ping-timeout", "0.5")


# --- the worker process ---------------------------------------------------------------
class PeerProc(subprocess.Popen[bytes]):
    """A peer worker given the accepted socket ``fd``; its stderr goes to ``log``."""

    def __init__(self, argv: list[str], log: Path, fd: int) -> None:
        self.log = log
        with open(log, "w") as err:
            super().__init__(argv, cwd=ROOT, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=err, pass_fds=[fd])

    def stderr_text(self) -> str:
        """What the worker wrote to stderr so far."""
        return self.log.read_text()

    def exits_with(self, status: int, timeout_s: float = 10) -> str:
        """Wait for the exit, check its status; the log."""
        assert self.wait(timeout=timeout_s * support.SCALE) == status, self.stderr_text()
        return self.stderr_text()


# --- this test's end of the connection ------------------------------------------------
class Client:
    """A WebSocket client on a connected socket, wsproto doing the protocol."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.accepted: AcceptConnection | None = None
        self.rejected: RejectConnection | None = None
        self.reject_body = b""
        self.messages: list[bytes] = []
        self.pongs: list[bytes] = []
        self.close_code: int | None = None
        self.eof = False
        self._parts = bytearray()

    def upgrade(self, path: str = "/", headers: Sequence[tuple[bytes, bytes]] = (),
                extensions: Sequence[PerMessageDeflate] = (), early: bytes = b"",
                subprotocols: Sequence[str] = ()) -> None:
        """Send the upgrade request (and ``early`` bytes in the same write)."""
        request = Request(host="localhost", target=path, extra_headers=list(headers),
                          extensions=list(extensions), subprotocols=list(subprotocols))
        self.sock.sendall(self.ws.send(request) + early)

    def send(self, event: Event) -> None:
        """Send one wsproto event."""
        self.sock.sendall(self.ws.send(event))

    def wait(self, predicate: Callable[[], object], what: str, timeout_s: float = 10) -> None:
        """Read and handle events until ``predicate`` holds."""
        def ready() -> object:
            self.pump()
            return predicate()
        support.wait_until(ready, timeout_s, what, interval_s=0)

    def pump(self) -> None:
        """Handle what arrived within 20 ms."""
        pending = isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()
        if self.eof or not (pending or select.select([self.sock], [], [], 0.02)[0]):
            return
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return
        self.ws.receive_data(data)
        for event in self.ws.events():
            self._event(event)

    def _event(self, event: Event) -> None:
        if isinstance(event, AcceptConnection):
            self.accepted = event
        elif isinstance(event, RejectConnection):
            self.rejected = event
        elif isinstance(event, RejectData):
            self.reject_body += event.data
        elif isinstance(event, BytesMessage):
            self._parts += event.data
            if event.message_finished:
                self.messages.append(bytes(self._parts))
                self._parts = bytearray()
        elif isinstance(event, Ping):
            self.send(event.response())
        elif isinstance(event, Pong):
            self.pongs.append(bytes(event.payload))
        elif isinstance(event, CloseConnection):
            self.close_code = event.code
            if self.ws.state is ConnectionState.REMOTE_CLOSING:  # not the echo of ours
                self.send(event.response())
        else:
            raise AssertionError(f"unexpected {event!r}")

    def open(self, path: str = "/", headers: Sequence[tuple[bytes, bytes]] = (),
             extensions: Sequence[PerMessageDeflate] = (),
             subprotocols: Sequence[str] = ()) -> None:
        """Upgrade and wait for the 101."""
        self.upgrade(path, headers, extensions, subprotocols=subprotocols)
        self.wait(lambda: self.accepted or self.rejected, "the answer to the upgrade")
        assert self.accepted is not None, (self.rejected, self.reject_body)

    def refused(self, path: str = "/",
                headers: Sequence[tuple[bytes, bytes]] = ()) -> RejectConnection:
        """Upgrade, expect a refusal and the end of the connection; the refusal."""
        self.upgrade(path, headers)
        self.wait(lambda: self.eof, "the refusal and the end of the connection")
        assert self.rejected is not None and self.accepted is None
        return self.rejected


def read_to_eof(sock: socket.socket, timeout_s: float = 15) -> bytes:
    """Everything the worker sends until it closes."""
    data, end = b"", support.deadline(timeout_s)
    while (left := end - time.monotonic()) > 0:
        if select.select([sock], [], [], left)[0]:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
    raise AssertionError(f"no end of stream within {timeout_s} s; got {data!r}")


def status_of(answer: bytes) -> int:
    """The status code of a raw HTTP answer."""
    return int(answer.split(b" ", 2)[1])


def basic(user: str, password: str) -> tuple[bytes, bytes]:
    """An Authorization header."""
    return (b"Authorization", b"Basic " + base64.b64encode(f"{user}:{password}".encode()))


# --- fixtures -------------------------------------------------------------------------
@pytest.fixture
def port_kind() -> PortKind:
    """Peer workers, in a server slot."""
    return PortKind.SERVER


StartPeer = Callable[..., tuple[PeerProc, socket.socket]]


@pytest.fixture
def start_peer(rundir: str, tmp_path: Path, table: PortTable) -> Iterator[StartPeer]:
    """``start(*options, tls=None)``: connect, accept, spawn a worker on the accepted
    socket; (worker, this test's end, TLS-wrapped with ``tls``). All stopped and closed
    afterwards."""
    procs: list[PeerProc] = []
    socks: list[socket.socket] = []

    def start(*options: str, tls: ssl.SSLContext | None = None
              ) -> tuple[PeerProc, socket.socket]:
        with socket.socket() as lsock:
            lsock.bind(("127.0.0.1", 0))
            lsock.listen(1)
            sock = socket.create_connection(lsock.getsockname(), timeout=10 * support.SCALE)
            socks.append(sock)
            conn, (host, port) = lsock.accept()
        with conn:
            argv = worker_argv("etherws.workers.peer", rundir, f"{host}:{port}",
                               options=("--fd", str(conn.fileno()), *options))
            procs.append(PeerProc(argv, tmp_path / f"peer{len(procs)}.err", conn.fileno()))
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname="localhost")
            socks.append(sock)
        return procs[-1], sock

    yield start
    for p in procs:
        support.kill_process(p)
    for s in socks:
        s.close()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A test CA and a server certificate for localhost/127.0.0.1 signed by it."""
    d = tmp_path_factory.mktemp("certs")
    ca = make_ca(d, "ca")
    cert, key = make_server_cert(d, ca, "server")
    return {"ca": ca[0], "cert": cert, "key": key}


def exchange(broker: FakeBroker, client: Client, seq: int = 0
             ) -> tuple[list[bytes], list[bytes]]:
    """Frames both ways through the tunnel; (broker -> client, client -> broker)."""
    before = len(client.messages)
    down = [make_frame(seq + i, size) for i, size in enumerate([14, 60, 1514, 9000, 65535])]
    broker.send(down)
    client.wait(lambda: len(client.messages) >= before + len(down), "the frames")
    assert client.messages[before:] == down
    up = [make_frame(seq + 100 + i, size) for i, size in enumerate([60, 1514, 65535, 14])]
    for f in up:
        client.send(Message(data=f))
    assert broker.collect(len(up)) == up
    return down, up


# --- frames ------------------------------------------------------------------------------
def test_frames_flow_both_ways_and_are_counted(rundir: str, table: PortTable,
                                               broker: FakeBroker,
                                               start_peer: StartPeer) -> None:
    proc, sock = start_peer()
    client = Client(sock)
    client.open()
    # the 101 is on the wire before the worker records "up": wait for the record
    support.wait_until(lambda: (portstatus.read(rundir, PORT) or {}).get("state") == "up",
                       5, "the status file to say up")
    assert portstatus.read(rundir, PORT) == {"v": 1, "state": "up", "error": "",
                                             "next_retry_ns": None, "first": None,
                                             "offload": False}
    down, up = exchange(broker, client)
    # Many masked frames in few TCP segments.
    many = [make_frame(1000 + i, 60 + i) for i in range(300)]
    sock.sendall(wsframe.binary_batch(many, [bytes([i % 256, 1, 2, 3]) for i in range(300)]))
    assert broker.collect(len(many)) == many
    wait_counters(table, broker, down)
    assert (slot(table).errors, slot(table).drops) == (0, 0)
    assert "WebSocket peer accepted (path /)" in proc.stderr_text()


@pytest.mark.parametrize("options", [(), ("--no-offload",), ("--max-message", "65534")],
                         ids=["offload", "no-offload", "smaller-max-message"])
def test_a_client_offering_etherws_gso_gets_messages_with_a_header(
        rundir: str, broker: FakeBroker, start_peer: StartPeer, options: tuple[str, ...]
        ) -> None:
    from etherws.gso import ZERO_HEADER
    no_offload = bool(options)
    _, sock = start_peer(*options)
    client = Client(sock)
    client.open(subprotocols=["etherws.gso.1"])
    assert client.accepted is not None
    assert client.accepted.subprotocol == (None if no_offload else "etherws.gso.1")
    support.wait_until(lambda: (portstatus.read(rundir, PORT) or {}).get("state") == "up",
                       5, "the status file to say up")
    assert portstatus.read(rundir, PORT)["offload"] is not no_offload  # type: ignore[index]
    frames = [make_frame(i, size) for i, size in enumerate([60, 1514, 9000])]
    broker.send(frames)
    client.wait(lambda: len(client.messages) >= 3, "the frames")
    if no_offload:
        assert client.messages == frames
        return
    assert client.messages == [ZERO_HEADER + f for f in frames]
    header = bytes([1, 0, 0, 0, 0, 0, 34, 0, 16, 0])  # a checksum left to do at 34+16
    up = [make_frame(100 + i, size) for i, size in enumerate([60, 65535])]
    for f in up:
        client.send(Message(data=header + f))
    assert broker.collect(len(up)) == up
    assert [broker.headers[f] for f in up] == [header, header]
    client.send(Message(data=header + make_frame(200, 65536)))  # 65546: one over
    client.wait(lambda: client.close_code is not None, "the close")
    assert client.close_code == 1009


def test_wss_with_websocket_client(table: PortTable, broker: FakeBroker,
                                   start_peer: StartPeer, certs: dict[str, Path]) -> None:
    tls = ssl.create_default_context(cafile=str(certs["ca"]))
    proc, sock = start_peer("--sslcert", str(certs["cert"]), "--sslkey", str(certs["key"]),
                            tls=tls)
    assert isinstance(sock, ssl.SSLSocket) and sock.version() in ("TLSv1.2", "TLSv1.3")
    ws = websocket.WebSocket()
    ws.connect("wss://localhost/", socket=sock,  # type: ignore[no-untyped-call]
               timeout=10 * support.SCALE)
    down = [make_frame(i, size) for i, size in enumerate([14, 1514, 65535])]
    broker.send(down)
    assert [ws.recv() for _ in down] == down
    up = [make_frame(100 + i, size) for i, size in enumerate([60, 65535, 9000])]
    for f in up:
        ws.send_binary(f)
    assert broker.collect(len(up)) == up
    wait_counters(table, broker, down)
    ws.close()  # sends Close 1000 and waits for the echo
    assert "peer closed the connection (1000)" in proc.exits_with(0)


def test_plain_http_to_a_tls_peer_fails_the_handshake(start_peer: StartPeer,
                                                      certs: dict[str, Path]) -> None:
    proc, sock = start_peer("--sslcert", str(certs["cert"]), "--sslkey", str(certs["key"]))
    sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    read_to_eof(sock)
    assert "TLS handshake failed" in proc.exits_with(0)


# --- refusals -----------------------------------------------------------------------------
@pytest.mark.parametrize("htpasswd", ["sha1.htpasswd", "bcrypt.htpasswd"])
@pytest.mark.parametrize("credentials", [None, ("alice", WRONG), ("nobody", WRONG)])
def test_auth_refuses_missing_or_wrong_credentials(htpasswd: str,
                                                   credentials: tuple[str, str] | None,
                                                   start_peer: StartPeer) -> None:
    proc, sock = start_peer("--htpasswd", str(FIXTURES / htpasswd))
    client = Client(sock)
    refusal = client.refused(headers=[basic(*credentials)] if credentials else [])
    assert refusal.status_code == 401
    assert (b"www-authenticate", b'Basic realm="etherws"') in refusal.headers
    log = proc.exits_with(procargs.EXIT_AUTH_FAILED)  # the supervisor counts it
    why = f"authentication failed for user '{credentials[0]}'" if credentials \
        else "no credentials"
    assert f"INFO refused with 401: {why}" in log and WRONG not in log


@pytest.mark.parametrize("htpasswd", ["sha1.htpasswd", "bcrypt.htpasswd"])
def test_auth_lets_the_right_credentials_in(htpasswd: str, broker: FakeBroker,
                                            start_peer: StartPeer) -> None:
    proc, sock = start_peer("--htpasswd", str(FIXTURES / htpasswd))
    client = Client(sock)
    client.open(headers=[basic("alice", PASSWORD)])
    exchange(broker, client)
    log = proc.stderr_text()
    assert "accepted as user 'alice'" in log and PASSWORD not in log


def test_wrong_path_is_404(start_peer: StartPeer) -> None:
    proc, sock = start_peer("--path", "/tunnel")
    assert Client(sock).refused(path="/other").status_code == 404
    assert "refused with 404: wrong path '/other'" in proc.exits_with(0)


def test_a_plain_get_is_426(start_peer: StartPeer) -> None:
    proc, sock = start_peer()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    answer = read_to_eof(sock)
    assert status_of(answer) == 426 and b"\r\nUpgrade: websocket\r\n" in answer
    assert "refused with 426: not a WebSocket upgrade" in proc.exits_with(0)


def test_an_origin_outside_the_allow_list_is_403(start_peer: StartPeer) -> None:
    proc, sock = start_peer("--origin", "https://good.example")
    refusal = Client(sock).refused(headers=[(b"Origin", b"https://evil.example")])
    assert refusal.status_code == 403
    proc.exits_with(0)


def test_a_silent_client_gets_408_and_the_heartbeat_stays_fresh(
        table: PortTable, start_peer: StartPeer) -> None:
    started = time.monotonic()
    proc, sock = start_peer()
    ages: list[int] = []

    def ended() -> bool:
        beat = slot(table).heartbeat_ns
        if beat:
            ages.append(time.monotonic_ns() - beat)
        return proc.poll() is not None
    support.wait_until(ended, 15, "the worker to give up on the silent client", 0.1)
    took = time.monotonic() - started
    assert peer.HANDSHAKE_TIMEOUT_S <= took <= 15 * support.SCALE, took
    assert proc.returncode == 0
    assert len(ages) > 30 and max(ages) < 1_000_000_000, max(ages)
    assert status_of(read_to_eof(sock)) == 408
    assert "no complete upgrade request within 5 s" in proc.stderr_text()


# --- the protocol ---------------------------------------------------------------------------
def test_permessage_deflate_is_not_negotiated(broker: FakeBroker,
                                              start_peer: StartPeer) -> None:
    proc, sock = start_peer()
    client = Client(sock)
    client.open(extensions=[PerMessageDeflate()])
    assert client.accepted is not None and client.accepted.extensions == []
    exchange(broker, client)  # uncompressed frames, byte for byte


@pytest.mark.parametrize("options, size", [((), 65536), (("--max-message", "1514"), 1515)])
def test_a_message_over_the_maximum_is_closed_with_1009(options: tuple[str, ...], size: int,
                                                        broker: FakeBroker,
                                                        start_peer: StartPeer) -> None:
    proc, sock = start_peer(*options)
    client = Client(sock)
    client.open()
    client.send(Message(data=b"\x00" * (size + 5000)))  # more follows the refused header
    client.wait(lambda: client.close_code is not None, "the Close")
    assert client.close_code == 1009
    assert f"message over {size - 1} bytes (closed with 1009)" in proc.exits_with(0)


def test_text_is_ignored_and_counted_and_a_ping_is_answered(
        table: PortTable, broker: FakeBroker, start_peer: StartPeer) -> None:
    proc, sock = start_peer()
    client = Client(sock)
    client.open()
    client.send(Message(data="hello"))
    client.send(Ping(payload=b"are you there"))
    client.wait(lambda: client.pongs == [b"are you there"], "the pong")
    support.wait_until(lambda: slot(table).errors == 1, 5, "the text counted as an error")
    exchange(broker, client)  # still up
    assert proc.poll() is None and client.messages and not client.eof


def test_bytes_before_the_101_are_a_protocol_error(broker: FakeBroker,
                                                   start_peer: StartPeer) -> None:
    proc, sock = start_peer()
    client = Client(sock)
    client.upgrade(early=wsframe.frame(wsframe.Opcode.BINARY, make_frame(1), b"abcd"))
    client.wait(lambda: client.close_code is not None, "the Close")
    assert client.accepted is not None and client.close_code == 1002
    assert "sent before the 101 (closed with 1002)" in proc.exits_with(0)


# --- the end ----------------------------------------------------------------------------------
def test_the_client_closes_and_the_worker_exits_0(rundir: str, broker: FakeBroker,
                                                  start_peer: StartPeer) -> None:
    proc, sock = start_peer()
    client = Client(sock)
    client.open()
    client.send(CloseConnection(code=1000, reason="bye"))
    client.wait(lambda: client.close_code is not None, "the Close echo")
    assert client.close_code == 1000
    assert "peer gone: peer closed the connection (1000 bye)" in proc.exits_with(0)
    s = portstatus.read(rundir, PORT)
    assert s is not None and (s["state"], s["error"]) == (
        "failed", "peer closed the connection (1000 bye)")


def test_the_client_vanishes_and_the_worker_exits_0(broker: FakeBroker,
                                                    start_peer: StartPeer) -> None:
    proc, sock = start_peer()
    client = Client(sock)
    client.open()
    sock.close()
    assert "peer gone: connection closed by the peer" in proc.exits_with(0)


def test_sigterm_closes_with_1001(broker: FakeBroker, start_peer: StartPeer) -> None:
    proc, sock = start_peer()
    client = Client(sock)
    client.open()
    proc.send_signal(signal.SIGTERM)
    client.wait(lambda: client.close_code is not None, "the Close")
    assert client.close_code == 1001
    assert "stopped by signal" in proc.exits_with(0, timeout_s=2)


def test_sigterm_during_the_opening_handshake_exits_promptly(rundir: str,
                                                            start_peer: StartPeer) -> None:
    proc, sock = start_peer()
    support.wait_until(lambda: (portstatus.read(rundir, PORT) or {}).get("state") == "connecting",
                       5, "the opening phase")
    proc.send_signal(signal.SIGTERM)
    assert "stopped by signal during the opening" in proc.exits_with(0, timeout_s=2)


def test_a_dead_client_is_given_up(broker: FakeBroker, start_peer: StartPeer) -> None:
    proc, sock = start_peer(*FAST_PINGS)
    client = Client(sock)
    client.open()
    opened = time.monotonic()
    # From now on nothing is read here: the worker's ping is never answered.
    log = proc.exits_with(0, timeout_s=5)
    assert time.monotonic() - opened >= 1.0
    assert "peer silent for 0.5 s and 0.5 s after a ping: connection dead" in log


# --- configuration --------------------------------------------------------------------------
@pytest.mark.parametrize("options, message", [
    (("--sslkey", "/nonexistent"), "--sslkey and --sslcert go together"),
    (("--sslkey", "/nonexistent", "--sslcert", "/nonexistent"), "cannot use --sslcert/--sslkey"),
    (("--max-message", "70000"), "--max-message must be 14..65535"),
    (("--ping-timeout", "0"), "--ping-timeout must be between 0.5 and 3600 s"),
    (("--path", "tunnel"), "path must start with '/'"),
])
def test_unusable_options_are_a_config_error(options: tuple[str, ...], message: str,
                                            start_peer: StartPeer) -> None:
    proc, sock = start_peer(*options)
    lines = proc.exits_with(procargs.EXIT_CONFIG).splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert read_to_eof(sock) == b""  # the connection is closed, not left hanging

"""A WebSocket server in the test process, the far end of a client port worker.

wsproto does the server side (not this project's code, so the worker is tested against
an independent implementation); a thread accepts and serves connections on loopback,
optionally over TLS, and records what it saw. The test thread drives it through
methods that take the same lock as the thread. ``openssl`` makes the test certificates.
"""

from __future__ import annotations

import base64
import select
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)

from tests import support


@dataclass
class Conn:
    """One accepted connection and what came over it."""

    sock: socket.socket
    ws: WSConnection = field(default_factory=lambda: WSConnection(ConnectionType.SERVER))
    headers: dict[str, str] = field(default_factory=dict)
    open: bool = False
    messages: list[bytes] = field(default_factory=list)
    pongs: list[bytes] = field(default_factory=list)
    pings: list[bytes] = field(default_factory=list)
    close_code: int | None = None
    _parts: bytearray = field(default_factory=bytearray)


class WsServer:
    """Accepts WebSocket connections on 127.0.0.1; ``conns`` in order of arrival.

    ``credentials`` (user, password): Basic auth required, else 401. ``status``: answer
    every upgrade with this HTTP status instead (e.g. 401). ``answer_pings``: False
    makes a silent peer.
    """

    def __init__(self, tls: ssl.SSLContext | None = None,
                 credentials: tuple[str, str] | None = None, port: int = 0) -> None:
        self.tls = tls
        self.credentials = credentials
        self.status: int | None = None
        self.answer_pings = True
        self.conns: list[Conn] = []
        self.accepted = 0
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="ws-server", daemon=True)
        self._thread.start()

    def url(self, path: str = "/") -> str:
        """The URL a client connects to."""
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.port}{path}"

    # --- driven by the test ----------------------------------------------------
    def current(self) -> Conn:
        """The last upgraded connection still open (fails the test when there is none)."""
        with self.lock:
            for c in reversed(self.conns):
                if c.open:
                    return c
        raise AssertionError("no open WebSocket connection")

    def wait_open(self, count: int = 1, timeout_s: float = 10) -> Conn:
        """Until ``count`` upgrades were accepted and one connection is open; that one."""
        support.wait_until(lambda: self.accepted >= count and any(c.open for c in self.conns),
                           timeout_s, f"{count} accepted upgrade(s)")
        return self.current()

    def send(self, event: Message | Ping | CloseConnection, conn: Conn | None = None) -> None:
        """Send one wsproto event on ``conn`` (the current connection by default)."""
        c = conn or self.current()
        with self.lock:
            c.sock.sendall(c.ws.send(event))

    def send_raw(self, data: bytes, conn: Conn | None = None) -> None:
        """Send bytes as they are (hand-made frames)."""
        c = conn or self.current()
        with self.lock:
            c.sock.sendall(data)

    def close(self) -> None:
        """Stop serving and drop every connection at once (no Close frame)."""
        self._stop.set()
        self._thread.join(timeout=5 * support.SCALE)
        with self.lock:
            for c in self.conns:
                c.open = False
                c.sock.close()
        self.listener.close()

    # --- the thread ----------------------------------------------------------------
    def _serve(self) -> None:
        while not self._stop.is_set():
            with self.lock:
                socks = [c.sock for c in self.conns if c.sock.fileno() >= 0]
            ready = select.select([self.listener, *socks], [], [], 0.02)[0]
            for s in ready:
                if s is self.listener:
                    self._accept()
                else:
                    self._readable(s)

    def _accept(self) -> None:
        sock, _addr = self.listener.accept()
        if self.tls is not None:
            sock.settimeout(5)
            try:
                sock = self.tls.wrap_socket(sock, server_side=True)
            except (ssl.SSLError, OSError) as e:
                self.errors.append(f"TLS handshake: {e}")
                sock.close()
                return
            sock.settimeout(None)
        with self.lock:
            self.conns.append(Conn(sock))

    def _readable(self, sock: socket.socket) -> None:
        with self.lock:
            conn = next(c for c in self.conns if c.sock is sock)
            try:
                data = sock.recv(65536)
                while isinstance(sock, ssl.SSLSocket) and sock.pending():
                    data += sock.recv(65536)  # decrypted bytes poll() would not announce
            except OSError:
                data = b""
            if not data:
                conn.open = False
                sock.close()
                return
            conn.ws.receive_data(data)
            for event in conn.ws.events():
                self._event(conn, event)

    def _event(self, conn: Conn, event: object) -> None:
        """Handle one event under the lock."""
        out = b""
        if isinstance(event, Request):
            out = self._upgrade(conn, event)
        elif isinstance(event, BytesMessage):
            conn._parts += event.data
            if event.message_finished:
                conn.messages.append(bytes(conn._parts))
                conn._parts = bytearray()
        elif isinstance(event, TextMessage):
            self.errors.append("text from the client")
        elif isinstance(event, Ping):
            conn.pings.append(bytes(event.payload))
            if self.answer_pings:
                out = conn.ws.send(event.response())
        elif isinstance(event, Pong):
            conn.pongs.append(bytes(event.payload))
        elif isinstance(event, CloseConnection):
            conn.close_code = event.code
            try:
                conn.sock.sendall(conn.ws.send(event.response()))
            except OSError:
                pass
            conn.open = False
            conn.sock.close()
            return
        if out:
            conn.sock.sendall(out)

    def _upgrade(self, conn: Conn, request: Request) -> bytes:
        conn.headers = {k.decode().lower(): v.decode() for k, v in request.extra_headers}
        conn.headers["host"] = request.host
        conn.headers["path"] = request.target
        if self.status is not None or not self._authorized(conn.headers):
            status = self.status or 401
            return conn.ws.send(RejectConnection(
                status_code=status,
                headers=[(b"www-authenticate", b'Basic realm="etherws"')], has_body=False))
        conn.open = True
        self.accepted += 1
        return conn.ws.send(AcceptConnection())

    def _authorized(self, headers: dict[str, str]) -> bool:
        if self.credentials is None:
            return True
        token = base64.b64encode(":".join(self.credentials).encode()).decode()
        return headers.get("authorization") == f"Basic {token}"


# --- certificates -------------------------------------------------------------------
def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True,
                   timeout=30 * support.SCALE)


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    """A CA (certificate, key) in ``directory``, files ``name.pem`` and ``name.key``."""
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
             "-subj", f"/CN=etherws test {name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
    return directory / f"{name}.pem", directory / f"{name}.key"


def make_server_cert(directory: Path, ca: tuple[Path, Path], name: str) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost signed by ``ca``: (cert, key)."""
    ext = directory / f"{name}.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                   "extendedKeyUsage=serverAuth\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", "/CN=localhost",
             cwd=directory)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", str(ca[0]), "-CAkey", str(ca[1]),
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", str(ext),
             cwd=directory)
    return directory / f"{name}.pem", directory / f"{name}.key"


def server_context(cert: tuple[Path, Path]) -> ssl.SSLContext:
    """A TLS server context with ``cert``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return ctx

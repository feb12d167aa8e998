"""The client port worker against a wsproto WebSocket server on loopback.

This test process is the broker (``FakeBroker``) and the server (``wsserver.WsServer``,
TLS certificates from ``openssl``); the worker is a real process. Proxy tests start
Debian's tinyproxy.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from wsproto.events import BytesMessage, Message, Ping, TextMessage

from etherws import wsframe
from etherws.runtime import portstatus
from etherws.tables import PortKind, PortTable
from tests import support
from tests.component.fakes import (
    PORT,
    FakeBroker,
    Spawner,
    Worker,
    make_frame,
    slot,
    wait_counters,
)
from tests.component.wsserver import WsServer, make_ca, make_server_cert, server_context

PASSWORD = "s3cret-Pa55"  # must never show up outside stdin and the Authorization header
FAST_PINGS = ("--ping-interval", "0.5", "--ping-timeout", "0.5")

MakeServer = Callable[..., WsServer]


# --- fixtures -------------------------------------------------------------------------
@pytest.fixture
def port_kind() -> PortKind:
    """Client workers, in a client slot."""
    return PortKind.CLIENT


@pytest.fixture
def server() -> Iterator[MakeServer]:
    """Start WebSocket servers (``WsServer`` arguments); all closed afterwards."""
    started: list[WsServer] = []

    def start(**kw: Any) -> WsServer:
        s = WsServer(**kw)
        started.append(s)
        return s

    yield start
    for s in started:
        s.close()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """CA ``ca`` with server certificate ``good``; ``other`` from another CA."""
    d = tmp_path_factory.mktemp("certs")
    ca, other_ca = make_ca(d, "ca"), make_ca(d, "otherca")
    good, other = make_server_cert(d, ca, "good"), make_server_cert(d, other_ca, "other")
    return {"ca": ca[0], "good": good[0], "good_key": good[1],
            "other": other[0], "other_key": other[1]}


def secrets(user: str | None = None, passwd: str | None = None,
            proxy: str | None = None) -> bytes:
    """The worker's stdin."""
    return json.dumps({"user": user, "passwd": passwd, "proxy": proxy}).encode()


def status(rundir: str) -> dict[str, Any]:
    """The port's status file (fails when there is none)."""
    s = portstatus.read(rundir, PORT)
    assert s is not None, "no status file"
    return s


def wait_state(rundir: str, proc: Worker, state: str, timeout_s: float = 10) -> dict[str, Any]:
    """Until the status file says ``state`` (the worker must not exit meanwhile)."""
    def reached() -> dict[str, Any] | None:
        s = portstatus.read(rundir, PORT)
        if s is None or s["state"] != state:
            assert proc.poll() is None or state == "failed", proc.stderr_text()
            return None
        return s
    return support.wait_until(reached, timeout_s, f"state {state}")


def exchange(broker: FakeBroker, srv: WsServer, seq: int = 0) -> tuple[list[bytes], list[bytes]]:
    """Frames both ways through the tunnel; (broker -> server, server -> broker)."""
    conn = srv.current()
    before = len(conn.messages)
    down = [make_frame(seq + i, size) for i, size in enumerate([14, 60, 1514, 9000, 65535])]
    broker.send(down)
    support.wait_until(lambda: len(conn.messages) >= before + len(down), 10,
                       "the server to receive the frames")
    assert conn.messages[before:] == down
    up = [make_frame(seq + 100 + i, size) for i, size in enumerate([60, 1514, 65535, 14])]
    for f in up:
        srv.send(Message(data=f))
    assert broker.collect(len(up)) == up
    return down, up


# --- frames and counters ----------------------------------------------------------------
def test_frames_flow_both_ways_and_are_counted(rundir: str, table: PortTable,
                                               broker: FakeBroker, spawn: Spawner,
                                               server: MakeServer) -> None:
    srv = server()
    proc = spawn(srv.url("/tunnel"))
    wait_state(rundir, proc, "up")
    conn = srv.wait_open()
    assert conn.headers["path"] == "/tunnel" and "authorization" not in conn.headers
    assert "sec-websocket-extensions" not in conn.headers  # no permessage-deflate
    down, up = exchange(broker, srv)
    # Many frames in few TCP segments: the worker parses whole buffers.
    many = [make_frame(1000 + i, 60 + i) for i in range(300)]
    srv.send_raw(wsframe.binary_batch(many))
    assert broker.collect(len(many)) == many
    wait_counters(table, broker, down)
    s = status(rundir)
    assert (s["first"], s["error"], slot(table).errors, slot(table).drops) == ("ok", "", 0, 0)


def test_basic_auth_is_sent_and_the_password_stays_secret(
        rundir: str, table: PortTable, broker: FakeBroker, spawn: Spawner,
        server: MakeServer) -> None:
    srv = server(credentials=("alice", PASSWORD))
    proc = spawn(srv.url(), stdin_data=secrets("alice", PASSWORD))
    wait_state(rundir, proc, "up")
    srv.wait_open()
    exchange(broker, srv)
    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
    environ = Path(f"/proc/{proc.pid}/environ").read_bytes()
    for where in (cmdline, environ, Path(portstatus.path(rundir, PORT)).read_bytes(),
                  proc.log.read_bytes()):
        assert PASSWORD.encode() not in where


def test_401_fails_the_first_attempt_without_retry(rundir: str, table: PortTable,
                                                   broker: FakeBroker, spawn: Spawner,
                                                   server: MakeServer) -> None:
    srv = server(credentials=("alice", "right"))
    proc = spawn(srv.url(), stdin_data=secrets("alice", PASSWORD))
    assert proc.wait(timeout=10 * support.SCALE) == 0
    s = status(rundir)
    assert (s["state"], s["first"], s["error"]) == (
        "failed", "failed", "authentication failed (HTTP 401)")
    assert PASSWORD not in proc.stderr_text()


def test_with_retry_it_keeps_trying_and_connects_once_accepted(
        rundir: str, table: PortTable, broker: FakeBroker, spawn: Spawner,
        server: MakeServer) -> None:
    srv = server()
    srv.status = 401
    proc = spawn(srv.url(), "--retry")
    s = wait_state(rundir, proc, "backoff")
    assert (s["first"], s["error"]) == ("failed", "authentication failed (HTTP 401)")
    assert isinstance(s["next_retry_ns"], int)
    # The second retry waits (0.8-1.2 s): its time is in the future when published.
    support.wait_until(lambda: len(srv.conns) >= 3, 10, "three attempts")
    s = wait_state(rundir, proc, "backoff")
    assert s["next_retry_ns"] > time.monotonic_ns() - 1_000_000_000
    srv.status = None
    s = wait_state(rundir, proc, "up", timeout_s=20)
    assert s["first"] == "failed"
    srv.wait_open()
    exchange(broker, srv)


def test_server_away_and_back_reconnects_without_a_restart(
        rundir: str, table: PortTable, broker: FakeBroker, spawn: Spawner,
        server: MakeServer) -> None:
    srv = server()
    proc = spawn(srv.url())
    wait_state(rundir, proc, "up")
    srv.wait_open()
    exchange(broker, srv)
    port = srv.port
    srv.close()
    s = wait_state(rundir, proc, "backoff")
    assert s["error"]
    # Frames from the broker while there is no connection: dropped and counted.
    drops = slot(table).drops
    broker.send([make_frame(7), make_frame(8)])
    support.wait_until(lambda: slot(table).drops >= drops + 2, 5, "two drops counted")
    support.wait_until(lambda: "refused" in status(rundir)["error"], 10, "a refused attempt")
    again = server(port=port)
    wait_state(rundir, proc, "up", timeout_s=20)
    again.wait_open()
    exchange(broker, again, seq=500)
    assert proc.poll() is None


# --- TLS ----------------------------------------------------------------------------
def test_wss_with_the_right_ca_works(rundir: str, table: PortTable, broker: FakeBroker,
                                     spawn: Spawner, server: MakeServer,
                                     certs: dict[str, Path]) -> None:
    srv = server(tls=server_context((certs["good"], certs["good_key"])))
    proc = spawn(srv.url(), "--cacerts", str(certs["ca"]))
    wait_state(rundir, proc, "up")
    srv.wait_open()
    exchange(broker, srv)
    # Many small messages in few TLS records: decrypted bytes must not wait unseen.
    many = [make_frame(2000 + i, 60) for i in range(200)]
    srv.send_raw(wsframe.binary_batch(many))
    assert broker.collect(len(many)) == many


def test_wss_with_a_certificate_from_another_ca_fails(rundir: str, table: PortTable,
                                                      broker: FakeBroker, spawn: Spawner,
                                                      server: MakeServer,
                                                      certs: dict[str, Path]) -> None:
    srv = server(tls=server_context((certs["other"], certs["other_key"])))
    proc = spawn(srv.url(), "--cacerts", str(certs["ca"]))
    assert proc.wait(timeout=10 * support.SCALE) == 0
    s = status(rundir)
    assert s["state"] == "failed"
    assert s["error"].startswith("certificate verify failed: "), s


def test_insecure_works_and_warns(rundir: str, table: PortTable, broker: FakeBroker,
                                  spawn: Spawner, server: MakeServer,
                                  certs: dict[str, Path]) -> None:
    srv = server(tls=server_context((certs["other"], certs["other_key"])))
    proc = spawn(srv.url(), "--insecure")
    wait_state(rundir, proc, "up")
    srv.wait_open()
    exchange(broker, srv)
    assert "WARNING connecting to wss://127.0.0.1" in proc.stderr_text()
    assert "--insecure" in proc.stderr_text()


# --- the protocol -------------------------------------------------------------------------
def test_text_is_ignored_and_counted_and_a_ping_is_answered(
        rundir: str, table: PortTable, broker: FakeBroker, spawn: Spawner,
        server: MakeServer) -> None:
    srv = server()
    proc = spawn(srv.url())
    wait_state(rundir, proc, "up")
    conn = srv.wait_open()
    srv.send(TextMessage(data="hello"))
    srv.send(Ping(payload=b"are you there"))
    support.wait_until(lambda: conn.pongs == [b"are you there"], 5, "the pong")
    support.wait_until(lambda: slot(table).errors == 1, 5, "the text counted as an error")
    exchange(broker, srv)  # still up, on the same connection
    assert srv.current() is conn and status(rundir)["state"] == "up"


def test_a_message_over_the_maximum_is_closed_with_1009(
        rundir: str, table: PortTable, broker: FakeBroker, spawn: Spawner,
        server: MakeServer) -> None:
    srv = server()
    proc = spawn(srv.url())
    wait_state(rundir, proc, "up")
    conn = srv.wait_open()
    srv.send(BytesMessage(data=b"\x00" * 70000))
    support.wait_until(lambda: conn.close_code == 1009, 5, "close 1009")
    srv.wait_open(count=2)  # and it comes back (first retry at once)
    assert "message over 65535 bytes (closed with 1009)" in proc.stderr_text()
    assert proc.poll() is None


def test_a_silent_server_is_declared_dead(rundir: str, table: PortTable, broker: FakeBroker,
                                          spawn: Spawner, server: MakeServer) -> None:
    srv = server()
    srv.answer_pings = False
    started = time.monotonic()
    proc = spawn(srv.url(), *FAST_PINGS)
    conn = srv.wait_open()
    srv.wait_open(count=2)  # the first retry is at once
    assert time.monotonic() - started >= 1.0
    assert "peer silent for 0.5 s and 0.5 s after a ping: connection dead" in proc.stderr_text()
    assert conn.pongs == [] and not conn.open


def test_an_answering_idle_server_stays_up(rundir: str, table: PortTable, broker: FakeBroker,
                                           spawn: Spawner, server: MakeServer) -> None:
    srv = server()
    proc = spawn(srv.url(), *FAST_PINGS)
    conn = srv.wait_open()
    beat = slot(table).heartbeat_ns
    support.wait_until(lambda: slot(table).heartbeat_ns > beat + 2_500_000_000, 6, "3 s idle")
    assert srv.current() is conn and status(rundir)["state"] == "up" and srv.accepted == 1
    assert len(conn.pings) >= 2 and proc.poll() is None  # idle: pinged, answered, kept


# --- lifecycle ---------------------------------------------------------------------------
def test_sigterm_while_connecting_exits_promptly_and_the_heartbeat_stays_fresh(
        rundir: str, table: PortTable, broker: FakeBroker, spawn: Spawner) -> None:
    with socket.socket() as mute:  # accepts TCP (backlog) and never answers the upgrade
        mute.bind(("127.0.0.1", 0))
        mute.listen(1)
        proc = spawn(f"ws://127.0.0.1:{mute.getsockname()[1]}/")
        wait_state(rundir, proc, "connecting")
        start = time.monotonic_ns()
        support.wait_until(lambda: slot(table).heartbeat_ns > start + 1_500_000_000, 5,
                           "a heartbeat 1.5 s into the attempt")
        assert status(rundir)["state"] == "connecting"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=2 * support.SCALE) == 0


def test_sigterm_in_backoff_exits_promptly(rundir: str, table: PortTable, broker: FakeBroker,
                                           spawn: Spawner) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    proc = spawn(f"ws://127.0.0.1:{free}/", "--retry")
    support.wait_until(lambda: portstatus.read(rundir, PORT) is not None
                       and status(rundir)["state"] == "backoff"
                       and status(rundir)["next_retry_ns"] > time.monotonic_ns() + 500_000_000,
                       15, "a backoff of more than 0.5 s")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=2 * support.SCALE) == 0


@pytest.mark.parametrize("stdin, url, error", [
    (b"{not json", "ws://127.0.0.1:1/", "secrets on stdin are not one JSON object"),
    (b'{"user": "a", "password": "x"}', "ws://127.0.0.1:1/", "unknown keys"),
    (b"", "http://127.0.0.1:1/", "URL scheme must be ws or wss"),
    (b"", f"ws://bob:{PASSWORD}@127.0.0.1:1/", "credentials in the URL are not supported"),
    (b'{"proxy": "socks5://127.0.0.1:1"}', "ws://127.0.0.1:1/", "proxy scheme"),
])
def test_unusable_configuration_fails_at_once(stdin: bytes, url: str, error: str, rundir: str,
                                              table: PortTable, spawn: Spawner) -> None:
    proc = spawn(url, "--retry", stdin_data=stdin)
    assert proc.wait(timeout=10 * support.SCALE) == 0
    s = status(rundir)
    assert s["state"] == "failed" and error in s["error"], s
    assert PASSWORD not in s["error"] and PASSWORD not in proc.stderr_text()


# --- proxies ---------------------------------------------------------------------------
@pytest.fixture
def tinyproxy(tmp_path: Path) -> Iterator[Callable[..., int]]:
    """Start tinyproxy on a free loopback port (optional Basic auth); the port."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(auth: tuple[str, str] | None = None) -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        conf = tmp_path / f"tinyproxy{len(procs)}.conf"
        lines = [f"Port {port}", "Listen 127.0.0.1", "Timeout 30", "MaxClients 16",
                 "Allow 127.0.0.1", f'LogFile "{tmp_path}/tinyproxy{len(procs)}.log"',
                 "LogLevel Connect"]
        if auth:
            lines.append(f"BasicAuth {auth[0]} {auth[1]}")
        conf.write_text("\n".join(lines) + "\n")
        proc = subprocess.Popen(["tinyproxy", "-d", "-c", str(conf)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        procs.append(proc)

        def listening() -> bool:
            assert proc.poll() is None, "tinyproxy exited"
            with socket.socket() as c:
                return c.connect_ex(("127.0.0.1", port)) == 0
        support.wait_until(listening, 10, "tinyproxy to listen")
        return port

    yield start
    for p in procs:
        support.kill_process(p)


def proxy_log(tmp_path: Path, index: int = 0) -> str:
    """What tinyproxy number ``index`` logged."""
    return (tmp_path / f"tinyproxy{index}.log").read_text()


def test_explicit_proxy_with_credentials(rundir: str, tmp_path: Path, table: PortTable,
                                         broker: FakeBroker, spawn: Spawner,
                                         server: MakeServer,
                                         tinyproxy: Callable[..., int]) -> None:
    pport = tinyproxy(auth=("pu", PASSWORD))
    srv = server()
    proc = spawn(srv.url(), stdin_data=secrets(proxy=f"http://pu:{PASSWORD}@127.0.0.1:{pport}"))
    wait_state(rundir, proc, "up")
    srv.wait_open()
    exchange(broker, srv)
    assert f"127.0.0.1:{srv.port}" in proxy_log(tmp_path)  # the CONNECT went through it
    assert f"through proxy 127.0.0.1:{pport}" in proc.stderr_text()
    assert PASSWORD not in proc.stderr_text() + json.dumps(status(rundir))


def test_a_proxy_refusing_credentials_is_reported(rundir: str, table: PortTable,
                                                  spawn: Spawner, server: MakeServer,
                                                  tinyproxy: Callable[..., int]) -> None:
    pport = tinyproxy(auth=("pu", "right"))
    srv = server()
    proc = spawn(srv.url(), stdin_data=secrets(proxy=f"http://pu:{PASSWORD}@127.0.0.1:{pport}"))
    assert proc.wait(timeout=10 * support.SCALE) == 0
    s = status(rundir)
    # tinyproxy 1.11 answers a CONNECT with bad credentials 401, not 407.
    assert s["error"] in (f"proxy 127.0.0.1:{pport}: failed CONNECT via proxy status: {code}"
                          for code in (401, 407)), s


def test_environment_proxy_and_no_proxy(rundir: str, tmp_path: Path, table: PortTable,
                                        broker: FakeBroker, spawn: Spawner,
                                        server: MakeServer,
                                        tinyproxy: Callable[..., int]) -> None:
    pport = tinyproxy()
    srv = server()
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    proc = spawn(srv.url(), env={**env, "http_proxy": f"http://127.0.0.1:{pport}"})
    wait_state(rundir, proc, "up")
    srv.wait_open()
    assert f"127.0.0.1:{srv.port}" in proxy_log(tmp_path)
    support.kill_process(proc)
    # no_proxy wins over the environment's proxy: a dead proxy is never tried.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    for no_proxy in ("127.0.0.1", "127.0.0.0/8", f"localhost,127.0.0.1:{srv.port}"):
        proc = spawn(srv.url(), env={**env, "HTTP_PROXY": f"http://127.0.0.1:{dead}",
                                     "NO_PROXY": no_proxy})
        wait_state(rundir, proc, "up")
        support.kill_process(proc)

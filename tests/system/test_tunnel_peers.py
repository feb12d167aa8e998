"""The WebSocket server against clients that are not etherws, and through a proxy.

The raw client is websocket-client's own API run inside namespace A (a script, so that
its traffic really crosses the underlay): it speaks ARP to site B's TAP over the
tunnel, sends text (ignored), an oversized message (closed with 1009), and counts
peers against --max-peers. Another client path goes through tinyproxy (HTTP CONNECT).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from tests.support import PYTHON, kill_process, run, wait_until
from tests.system.tunnel import (
    OVERLAY_A,
    OVERLAY_B,
    UNDERLAY_B,
    Site,
    Underlay,
    connected,
    fresh_rundir,
    ns_python,
    pings_both_ways,
    site,
)

# A websocket-client session from namespace A: ARP for site B's overlay address from a
# made-up MAC, text in between, and last an oversized message. Prints one JSON line.
RAW_CLIENT = r"""
import json, socket, struct, sys, websocket
url, target, big = sys.argv[1], sys.argv[2], int(sys.argv[3])
MAC = bytes.fromhex("020000000099")
def arp_request():
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, MAC,
                       socket.inet_aton("198.51.100.99"), bytes(6), socket.inet_aton(target))
    return b"\xff" * 6 + MAC + b"\x08\x06" + body
def arp_reply(ws):
    while True:
        frame = ws.recv()
        if isinstance(frame, bytes) and frame[:6] == MAC and frame[12:14] == b"\x08\x06" \
                and frame[20:22] == b"\x00\x02":
            return socket.inet_ntoa(frame[28:32])
ws = websocket.create_connection(url, timeout=10, suppress_origin=True)
ws.send_binary(arp_request())
out = {"first": arp_reply(ws)}
ws.send("hello, this text is ignored")
ws.send_binary(arp_request())
out["after_text"] = arp_reply(ws)
ws.send_binary(b"\x00" * big)
while True:
    opcode, data = ws.recv_data(control_frame=True)
    if opcode == websocket.ABNF.OPCODE_CLOSE:
        out["close"] = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
        break
print(json.dumps(out))
"""

# Connects and holds its slot until the server closes (prints the close code) or it is
# stopped by the test.
HOLDING_CLIENT = r"""
import struct, sys, websocket
ws = websocket.create_connection(sys.argv[1], timeout=None)
print("up", flush=True)
while True:
    opcode, data = ws.recv_data(control_frame=True)
    if opcode == websocket.ABNF.OPCODE_CLOSE:
        print(struct.unpack("!H", data[:2])[0], flush=True)
        break
"""

# One more connection (with the extra header lines in argv[2], if any): its HTTP status
# line, or the error it got.
STATUS_CLIENT = r"""
import socket, sys
extra = sys.argv[2].encode() + b"\r\n" if len(sys.argv) > 2 else b""
s = socket.create_connection((sys.argv[1], 80), timeout=10)
s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
          + extra + b"\r\n")
try:
    print(s.recv(4096).split(b"\r\n")[0].decode())
except ConnectionResetError:
    print("reset")
"""




def test_a_third_party_client_exchanges_frames_text_is_ignored_oversize_gets_1009(
        net: Underlay, tmp_path: Path) -> None:
    with site(net.b, fresh_rundir(tmp_path, "rb"), tmp_path / "b.log", OVERLAY_B) as b:
        res = ns_python(net.a, RAW_CLIENT, f"ws://{UNDERLAY_B}/", OVERLAY_B, "70000")
        assert res.returncode == 0, res.stderr
        out = json.loads(res.stdout)
        assert out == {"first": OVERLAY_B, "after_text": OVERLAY_B, "close": 1009}
        # the peer's port is gone with its connection, its learned address with it
        wait_until(lambda: b.tunnel_ports("server") == [], 10, "the peer port to go")
        assert b.fdb_port("02:00:00:00:00:99") is None


def _holder(ns: str) -> subprocess.Popen[str]:
    """A HOLDING_CLIENT in ``ns``, connected once this returns."""
    proc = subprocess.Popen(["ip", "netns", "exec", ns, PYTHON, "-c", HOLDING_CLIENT,
                             f"ws://{UNDERLAY_B}/"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "up\n"
    except BaseException:
        kill_process(proc)
        raise
    return proc


def test_a_peer_port_is_deleted_not_restarted(net: Underlay, tmp_path: Path) -> None:
    with site(net.b, fresh_rundir(tmp_path, "rb"), tmp_path / "b.log", OVERLAY_B) as b:
        holder = _holder(net.a)
        try:
            [peer] = wait_until(lambda: b.tunnel_ports("server"), 10, "the peer port")
            res = b.ctl("restartport", str(peer["port"]), check=False)
            assert res.returncode == 1 and "cannot be restarted" in res.stderr
            b.ctl("delport", str(peer["port"]))
            assert holder.stdout is not None and holder.stdout.readline() == "1001\n"
            assert b.tunnel_ports("server") == []
        finally:
            kill_process(holder)


def test_max_peers_refuses_the_next_connection_with_503(net: Underlay, tmp_path: Path) -> None:
    with site(net.b, fresh_rundir(tmp_path, "rb"), tmp_path / "b.log", OVERLAY_B,
              "--max-peers", "1") as b:
        holder = _holder(net.a)
        try:
            wait_until(lambda: len(b.tunnel_ports("server")) == 1, 10, "one peer port")
            res = ns_python(net.a, STATUS_CLIENT, UNDERLAY_B)
            assert res.returncode == 0, res.stderr
            assert res.stdout.strip() == "HTTP/1.1 503 Service Unavailable"
            assert len(b.tunnel_ports("server")) == 1
            assert "refused: 1 peers already (--max-peers)" in (tmp_path / "b.log").read_text()
        finally:
            kill_process(holder)
        # the slot is free again once the holder is gone
        wait_until(lambda: b.tunnel_ports("server") == [], 10, "the peer port to go")
        res = ns_python(net.a, STATUS_CLIENT, UNDERLAY_B)
        assert res.stdout.strip() == "HTTP/1.1 101 Switching Protocols"


@contextlib.contextmanager
def tinyproxy(ns: str, tmp_path: Path, auth: tuple[str, str] | None = None) -> Iterator[str]:
    """tinyproxy on 127.0.0.1:8888 inside ``ns``; yields its log file's path."""
    conf, log = tmp_path / "tinyproxy.conf", tmp_path / "tinyproxy.log"
    lines = ["Port 8888", "Listen 127.0.0.1", "Timeout 30", "MaxClients 8",
             "Allow 127.0.0.1", f'LogFile "{log}"', "LogLevel Connect"]
    if auth:
        lines.append(f"BasicAuth {auth[0]} {auth[1]}")
    conf.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen(["ip", "netns", "exec", ns, "tinyproxy", "-d", "-c", str(conf)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: proc.poll() is not None or ns_python(
            ns, "import socket; socket.create_connection(('127.0.0.1', 8888), 1)"
        ).returncode == 0, 10, "tinyproxy to listen")
        assert proc.poll() is None, "tinyproxy exited"
        yield str(log)
    finally:
        kill_process(proc)


@pytest.fixture
def pair(net: Underlay, tmp_path: Path) -> Iterator[tuple[Site, Site]]:
    with site(net.a, fresh_rundir(tmp_path, "ra"), tmp_path / "a.log", OVERLAY_A,
              server=False) as a, \
         site(net.b, fresh_rundir(tmp_path, "rb"), tmp_path / "b.log", OVERLAY_B) as b:
        yield a, b


def test_through_an_http_connect_proxy_with_credentials(
        pair: tuple[Site, Site], tmp_path: Path) -> None:
    a, b = pair
    with tinyproxy(a.ns, tmp_path, auth=("proxyuser", "proxy-pass")) as log:
        wrong = a.add_client(f"ws://{UNDERLAY_B}/", "--proxy",
                             "http://proxyuser:nope@127.0.0.1:8888")
        assert wrong.returncode == 1 and "proxy" in wrong.stderr and "nope" not in wrong.stderr
        connected(a, f"ws://{UNDERLAY_B}/", "--proxy",
                  "http://proxyuser:proxy-pass@127.0.0.1:8888")
        pings_both_ways(a, b)
        assert "CONNECT" in Path(log).read_text() and UNDERLAY_B in Path(log).read_text()
        assert "proxy-pass" not in a.ctl("--json", "listport").stdout
        assert "proxy-pass" not in (tmp_path / "a.log").read_text()


def test_proxy_from_the_callers_environment_and_no_proxy(
        pair: tuple[Site, Site], tmp_path: Path) -> None:
    a, b = pair
    url = f"ws://{UNDERLAY_B}/"

    def add(env: dict[str, str]) -> subprocess.CompletedProcess:
        return run(PYTHON, "-m", "etherws.ctl.cli", "--rundir", a.switch.rundir, "--json",
                   "addport", "client", url, check=False, timeout_s=60,
                   env={**os.environ, **env})

    # nothing listens on port 9 in namespace A: used, this proxy fails the connection
    dead = {"http_proxy": "http://127.0.0.1:9"}
    res = add(dead)
    assert res.returncode == 1 and "proxy 127.0.0.1:9" in res.stderr
    res = add({**dead, "no_proxy": UNDERLAY_B})
    assert res.returncode == 0, res.stderr
    a.ctl("delport", str(json.loads(res.stdout)["entries"][0]["port"]))
    with tinyproxy(a.ns, tmp_path) as log:
        res = add({"http_proxy": "http://127.0.0.1:8888"})
        assert res.returncode == 0, res.stderr
        pings_both_ways(a, b)
        assert UNDERLAY_B in Path(log).read_text()


def test_origin_allow_list_keeps_other_pages_out_but_not_etherws_clients(
        net: Underlay, tmp_path: Path) -> None:
    with site(net.a, fresh_rundir(tmp_path, "ra"), tmp_path / "a.log", OVERLAY_A,
              server=False) as a, \
         site(net.b, fresh_rundir(tmp_path, "rb"), tmp_path / "b.log", OVERLAY_B,
              "--origin", "https://vm.example") as b:
        def status(origin: str) -> str:
            res = ns_python(net.a, STATUS_CLIENT, UNDERLAY_B, f"Origin: {origin}")
            assert res.returncode == 0, res.stderr
            return res.stdout.strip()
        assert status("https://evil.example") == "HTTP/1.1 403 Forbidden"
        assert status("https://VM.example") == "HTTP/1.1 101 Switching Protocols"
        connected(a, f"ws://{UNDERLAY_B}/")  # sends no Origin: not a browser
        pings_both_ways(a, b)

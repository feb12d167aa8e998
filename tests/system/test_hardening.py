"""Smaller holes: a run directory without room, log file modes, oversized requests."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import zmq

from etherws import control
from tests.support import PYTHON, free_port, run, term_context, wait_until
from tests.system.harness import Switch

SUPERVISOR = [PYTHON, "-m", "etherws.supervisor"]


def test_a_run_directory_without_room_fails_start_with_one_line(tmp_path: Path) -> None:
    rundir = tmp_path / "tiny"
    rundir.mkdir(mode=0o700)
    run("mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "etw-tiny", str(rundir))
    try:
        res = run(*SUPERVISOR, "start", "--rundir", str(rundir), "--no-server",
                  "--logfile", str(tmp_path / "log"), check=False)
        assert res.returncode == 1, res
        assert len(res.stderr.splitlines()) == 1, res.stderr
        assert "No space left on device" in res.stderr
        assert "etherws-supervisor" in res.stderr
    finally:
        run("umount", str(rundir), check=False)


def test_a_new_log_file_is_private_whatever_the_umask(tmp_path: Path) -> None:
    log = tmp_path / "etherws.log"
    rundir = tmp_path / "run"
    res = run("sh", "-c", f"umask 000 && exec {PYTHON} -m etherws.supervisor start "
              f"--rundir {rundir} --no-server --logfile {log}", check=False)
    try:
        assert res.returncode == 0, res.stderr
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
    finally:
        assert run(*SUPERVISOR, "stop", "--rundir", str(rundir), check=False).returncode == 0


def test_an_oversized_control_request_gets_an_error_reply(switch: Switch) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(f"ipc://{switch.rundir}/ctl.sock")
        sock.send(json.dumps({"jsonrpc": "2.0", "id": "big", "method": "etherws.control.listPort",
                              "params": {"pad": "x" * (2 * control.MAX_REQUEST)}}).encode())
        assert sock.poll(5000, zmq.POLLIN), "no reply"
        reply = json.loads(sock.recv())
    finally:
        sock.close()
        term_context(ctx, "the test's client")
    assert reply["id"] == "big" and reply["error"]["code"] == control.Code.INVALID_REQUEST
    assert switch.entries("listport") == []  # and the switch goes on
    assert os.path.exists(f"{switch.rundir}/ctl.sock")


def _upgrade_status(port: int, user: str, password: str) -> int:
    """The HTTP status a WebSocket upgrade with Basic credentials gets."""
    import base64
    import socket
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request = (f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               f"Sec-WebSocket-Version: 13\r\nAuthorization: Basic {token}\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request.encode())
        head = b""
        while b"\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    return int(head.split(b" ", 2)[1])


def test_a_password_flood_from_one_address_is_refused_without_hashing(
        tmp_path: Path) -> None:
    import bcrypt
    users = tmp_path / "htpasswd"
    users.write_text(f"alice:{bcrypt.hashpw(b'right', bcrypt.gensalt(4)).decode()}\n")
    port = free_port()
    os.mkdir(tmp_path / "srv", 0o700)
    sw = Switch(str(tmp_path / "srv"), tmp_path / "srv.log", server=True,
                extra=["--host", "127.0.0.1", "--port", str(port), "--htpasswd", str(users)])
    try:
        for i in range(1, 6):
            assert _upgrade_status(port, "alice", "wrong") == 401
            # the failure counts when the supervisor reaps the peer's exit
            wait_until(lambda: sw.log_text().count("refused a login") == i, 10,  # noqa: B023
                       f"failure {i} to be counted")
        assert _upgrade_status(port, "alice", "wrong") == 429
        assert _upgrade_status(port, "alice", "right") == 429  # the address waits, whoever
        log = sw.log_text()
        assert "too many failed logins" in log
        assert log.count("refused a login") == 5  # the sixth never got a worker
    finally:
        sw.close()


def _uss(sw: Switch) -> int:
    import psutil
    total = 0
    for proc in [psutil.Process(sw.proc.pid), *sw.descendants()]:
        try:
            total += proc.memory_full_info().uss
        except psutil.Error:
            pass  # a peer that just ended
    return total


def test_idle_and_slow_connections_do_not_lock_a_real_client_out(tmp_path: Path) -> None:
    import socket
    import time
    port = free_port()
    os.mkdir(tmp_path / "srv", 0o700)
    sw = Switch(str(tmp_path / "srv"), tmp_path / "srv.log", server=True,
                extra=["--host", "127.0.0.1", "--port", str(port), "--max-peers", "64"])
    conns: list[socket.socket] = []
    try:
        before = _uss(sw)
        for _ in range(200):  # connect and say nothing
            conns.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        for _ in range(50):  # slowloris: a request head that never ends
            c = socket.create_connection(("127.0.0.1", port), timeout=5)
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            conns.append(c)
        # the limits are per address: another one still gets in, and fast
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=5,
                                      source_address=("127.0.0.2", 0)) as legit:
            legit.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                          b"Connection: Upgrade\r\nSec-WebSocket-Key: "
                          b"dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            head = legit.recv(4096)
            took = time.monotonic() - started
        assert head.startswith(b"HTTP/1.1 101"), head
        assert took < 2.0, took
        grown = _uss(sw) - before
        print(f"250 hostile connections: legit client in {took:.2f} s, "
              f"switch grew {grown / 2**20:.0f} MiB")
        assert grown < 300 * 2**20
        assert sw.proc.poll() is None
        assert "in their handshake already" in sw.log_text()
    finally:
        for c in conns:
            c.close()
        sw.close()

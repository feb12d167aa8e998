"""Running under a service manager: sd_notify READY, STATUS, WATCHDOG and STOPPING over a
datagram socket of the test's own as NOTIFY_SOCKET (no systemd needed)."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.support import deadline, delete_link, unique, wait_until
from tests.system.harness import Switch


def _messages(sock: socket.socket, until: float) -> list[tuple[float, str]]:
    out = []
    while time.monotonic() < until:
        sock.settimeout(max(0.01, until - time.monotonic()))
        try:
            data = sock.recv(4096)
        except TimeoutError:
            break
        out.append((time.monotonic(), data.decode()))
    return out


def test_ready_watchdog_and_stopping(tmp_path: Path, rundir: str,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    tap = unique("etwt")
    config = tmp_path / "etherws.toml"
    config.write_text(f'[[ports]]\ntap = "{tap}"\n')
    sw = Switch(rundir, tmp_path / "switch.log", ["--config", str(config)])
    try:
        first = _messages(sock, deadline(10))
        ready = next(m for _, m in first if m.startswith("READY=1"))
        assert "STATUS=1 port" in ready
        assert os.path.exists(f"/sys/class/net/{tap}")  # the port existed when READY came
        pings = [t for t, m in _messages(sock, deadline(3)) if m == "WATCHDOG=1"]
        assert len(pings) >= 4  # every 0.5 s
        assert max(b - a for a, b in zip(pings, pings[1:])) < 1.0

        broker = sw.status()["broker"]["pid"]
        os.kill(broker, signal.SIGSTOP)  # wedged: no heartbeat, no watchdog
        try:
            stopped = time.monotonic()
            quiet = [t for t, m in _messages(sock, stopped + 4.0) if m == "WATCHDOG=1"]
            assert all(t < stopped + 2.5 for t in quiet), [t - stopped for t in quiet]
        finally:
            os.kill(broker, signal.SIGCONT)
        # the supervisor brings a new broker (the stopped one is killed as hung) and the
        # watchdog comes back
        wait_until(lambda: any(m == "WATCHDOG=1" for _, m in _messages(sock, deadline(1))),
                   15, "the watchdog to come back")
    finally:
        sw.close()
        delete_link(tap)
    assert any(m.startswith("STOPPING=1") for _, m in _messages(sock, deadline(2)))
    sock.close()

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


def test_metrics_are_scraped_and_parsed(tmp_path: Path, rundir: str) -> None:
    import statistics
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    from tests.support import free_port
    port = free_port()
    sw = Switch(rundir, tmp_path / "switch.log", ["--metrics", f"127.0.0.1:{port}"])
    taps = [unique("etwt") for _ in range(8)]
    try:
        for tap in taps:
            sw.add("tap", tap)
        sw.ctl("setport", "1", "--shut", "1")
        for n in range(1, 9):
            sw.wait_port(n, "up")

        def scrape() -> tuple[float, str]:
            started = time.perf_counter()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                body = r.read().decode()
            return time.perf_counter() - started, body

        times = [scrape()[0] for _ in range(10)]
        families = {f.name: f for f in text_string_to_metric_families(scrape()[1])}
        rx = [s for s in families["etherws_port_rx_frames"].samples
              if s.name == "etherws_port_rx_frames_total"]
        assert sorted(int(s.labels["port"]) for s in rx) == list(range(1, 9))
        assert {s.labels["type"] for s in rx} == {"tap"}
        assert {s.labels["target"] for s in rx} == set(taps)
        up = {s.labels["port"]: s.value for s in families["etherws_port_up"].samples}
        assert all(v == 1.0 for v in up.values())
        assert families["etherws_fdb_capacity"].samples[0].value == 8192
        assert families["etherws_broker_heartbeat_age_seconds"].samples[0].value < 2
        rss = [s.value for s in families["etherws_port_rss_bytes"].samples]
        assert len(rss) == 8 and all(v > 1e6 for v in rss)
        print(f"metrics scrape with 8 ports: median {statistics.median(times) * 1e3:.1f} ms")
    finally:
        sw.close()
        for tap in taps:
            delete_link(tap)

"""What a connection costs before login: peer workers forked by the zygote, supervised.

Real switches on loopback, or in two namespaces joined by a tunnel for the flood; the
zygote is killed and stopped for real.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import statistics
import subprocess
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest

from tests.support import PYTHON, SCALE, free_port, run, wait_until
from tests.system.harness import Switch, alive, sigkill
from tests.system.tunnel import (
    OVERLAY_B,
    UNDERLAY_B,
    Underlay,
    connected,
    server_and_client,
)

UPGRADE = ("GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


class Server:
    """A switch with a WebSocket server on 127.0.0.1."""

    def __init__(self, tmp_path: Path, *extra: str) -> None:
        os.mkdir(tmp_path / "srv", 0o700)
        self.port = free_port()
        self.sw = Switch(str(tmp_path / "srv"), tmp_path / "srv.log", server=True,
                         extra=["--host", "127.0.0.1", "--port", str(self.port), *extra])

    def status(self, path: str = "/") -> int:
        """The HTTP status an upgrade request for ``path`` gets."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10 * SCALE) as s:
            s.sendall(UPGRADE.format(path=path).encode())
            head = s.recv(64)
        return int(head.split(b" ", 2)[1])

    def zygote(self) -> dict[str, Any] | None:
        """The zygote's entry in status."""
        z: dict[str, Any] | None = self.sw.status()["zygote"]
        return z

    def up_zygote(self, timeout_s: float = 15) -> dict[str, Any]:
        """Wait until the zygote is up; its entry."""
        return wait_until(lambda: (z := self.zygote()) and z["state"] == "up" and z,
                          timeout_s, "the zygote up")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A server switch whose zygote is up."""
    s = Server(tmp_path)
    try:
        s.up_zygote()
        yield s
    finally:
        s.sw.close()


def test_peer_workers_are_forked_by_the_zygote_as_the_supervisors_children(
        server: Server) -> None:
    before = server.up_zygote()
    held = socket.create_connection(("127.0.0.1", server.port), timeout=10 * SCALE)
    try:
        held.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # a head that is not finished
        entry = wait_until(lambda: next(iter(server.sw.entries("listport")), None), 10,
                           "the pending connection's port")
        worker = psutil.Process(entry["pid"])
        assert worker.ppid() == server.sw.proc.pid  # reparented: the supervisor reaps it
        assert "etherws.workers.peer" in " ".join(worker.cmdline())  # as ps shows it
        assert worker.memory_full_info().uss < 8 * 2**20  # shared with the zygote
    finally:
        held.close()
    assert server.status() == 101
    assert server.status("/elsewhere") == 404
    after = server.zygote()
    assert after is not None
    assert after["forked"] == before["forked"] + 3 and after["spawned"] == 0
    assert after["pid"] == before["pid"] and after["restarts"] == 0
    wait_until(lambda: server.sw.entries("listport") == [], 10, "the peers gone")
    assert "gone (exited with status 0)" in server.sw.log_text()


def test_a_killed_zygote_is_restarted_and_peers_start_meanwhile(server: Server) -> None:
    old = server.up_zygote()
    sigkill(old["pid"])
    wait_until(lambda: (z := server.zygote()) and z["pid"] != old["pid"], 10,
               "the zygote restarted")
    # Starting or up, the new zygote does not matter to a client: forked or spawned,
    # the peer gets its worker.
    assert server.status() == 101
    new = server.up_zygote()
    assert new["forked"] + new["spawned"] == old["forked"] + old["spawned"] + 1
    assert new["restarts"] == 1
    assert "zygote: killed by SIGKILL" in server.sw.log_text()
    assert server.status() == 101
    assert server.zygote()["forked"] == new["forked"] + 1  # type: ignore[index]
    assert not alive(old["pid"])


def test_a_stopped_zygote_is_killed_and_replaced(server: Server) -> None:
    old = server.up_zygote()
    os.kill(old["pid"], signal.SIGSTOP)  # alive, but neither beating nor forking
    try:
        wait_until(lambda: (z := server.zygote()) and z["pid"] != old["pid"]
                   and z["state"] == "up", 20, "a new zygote")
    finally:
        if alive(old["pid"]):
            os.kill(old["pid"], signal.SIGCONT)
    new = server.up_zygote()
    assert new["restarts"] == 1 and "no heartbeat" in new["reason"]
    assert server.status() == 101


def test_without_the_zygote_every_peer_is_spawned(tmp_path: Path) -> None:
    s = Server(tmp_path, "--no-zygote")
    try:
        assert s.zygote() is None
        assert s.status() == 101
        assert not any("etherws.workers.zygote" in " ".join(p.cmdline())
                       for p in s.sw.descendants())
    finally:
        s.sw.close()


FLOOD = """
import concurrent.futures, json, socket, sys, time
host, port, rate, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
request = sys.argv[5].encode()
def one():
    try:
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(request)
            return s.recv(64).split(b" ", 2)[1].decode() or "eof"
    except (OSError, IndexError) as e:
        return type(e).__name__
counts, late, n = {}, 0, int(rate * seconds)
with concurrent.futures.ThreadPoolExecutor(32) as pool:
    start, futures = time.monotonic(), []
    for i in range(n):
        wait = start + i / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        elif wait < -0.05:
            late += 1
        futures.append(pool.submit(one))
    for f in futures:
        counts[f.result()] = counts.get(f.result(), 0) + 1
print(json.dumps({"counts": counts, "late": late, "took": time.monotonic() - start}))
"""


def test_a_flood_of_new_connections_leaves_a_tunnel_responsive(
        net: Underlay, tmp_path: Path) -> None:
    # 100 connections a second for 10 s to the server that carries the tunnel, each
    # asking for a path it does not serve: a peer worker each, answering 404.
    with server_and_client(net, tmp_path) as (b, a):
        connected(a, f"ws://{UNDERLAY_B}/")
        a.host.wait_ping(OVERLAY_B, 15 * SCALE)
        wait_until(lambda: (b.switch.status()["zygote"] or {}).get("state") == "up", 15,
                   "the zygote up")
        flood = subprocess.Popen(
            ["ip", "netns", "exec", net.a, PYTHON, "-c", FLOOD, UNDERLAY_B, "80", "100",
             "10", UPGRADE.format(path="/elsewhere")], stdout=subprocess.PIPE, text=True)
        try:
            pings = run("ip", "netns", "exec", net.a, "ping", "-n", "-i", "0.05", "-c", "200",
                        "-W", "1", OVERLAY_B, check=False, timeout_s=60)
            out, _ = flood.communicate(timeout=60)
        finally:
            if flood.poll() is None:
                flood.kill()
                flood.wait()
        result = json.loads(out)
        rtts = sorted(float(t) for t in re.findall(r"time=([\d.]+) ms", pings.stdout))
        lost = 200 - len(rtts)
        rtts += [float("inf")] * lost  # a lost ping is worse than any late one
        p99 = rtts[int(len(rtts) * 0.99) - 1]
        print(f"1000 connections in {result['took']:.1f} s ({result['late']} started late): "
              f"{result['counts']}; tunnel ping median {statistics.median(rtts):.2f} ms, "
              f"p99 {p99:.2f} ms, {lost} lost")
        # Every one was answered: a worker's 404, or the supervisor's 503 while 8 from
        # this address were in their handshake already (the per-address cap at work).
        counts = result["counts"]
        assert counts.get("404", 0) + counts.get("503", 0) == 1000, result
        assert counts.get("404", 0) >= 500, result  # most got a worker
        assert p99 < 50 * SCALE, (p99, lost)
        assert b.switch.proc.poll() is None
        assert [e["state"] for e in b.tunnel_ports("server")] == ["up"]


def test_a_request_the_zygote_does_not_answer_is_refused_and_the_zygote_replaced(
        server: Server) -> None:
    old = server.up_zygote()
    os.kill(old["pid"], signal.SIGSTOP)  # still "up" for the supervisor: it gets the request
    try:
        assert server.status() == 503  # after REPLY_TIMEOUT_S, not a second worker
        new = wait_until(lambda: (z := server.zygote()) and z["pid"] != old["pid"]
                         and z["state"] == "up" and z, 20, "a new zygote")
    finally:
        if alive(old["pid"]):
            os.kill(old["pid"], signal.SIGCONT)
    assert "did not answer a fork request in 2s" in new["reason"]
    assert re.search(r"peer 127\.0\.0\.1:\d+ refused: the zygote did not answer",
                     server.sw.log_text())
    assert server.status() == 101

"""The path probe across a real tunnel: two switches in namespaces, ``etherws-ctl probe``
from either end, a far side with a smaller --max-message, a TAP port, and a busy tunnel."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.support import PYTHON, run, wait_until
from tests.system.tunnel import (
    OVERLAY_A,
    OVERLAY_B,
    UNDERLAY_B,
    Site,
    Underlay,
    connected,
    fresh_rundir,
    pings_both_ways,
    site,
)


PLAIN_SERVER = """
import sys
from websockets.sync.server import serve

def ignore(ws):  # a plain peer: takes every message, answers none (as etherws 1.3 does text)
    for _ in ws:
        pass

with serve(ignore, sys.argv[1], 8765, max_size=None) as server:
    server.serve_forever()
"""
"""A WebSocket server that is not an etherws switch."""


def probe(s: Site, port: int, *options: str) -> dict[str, Any]:
    """``etherws-ctl --json probe``, which must succeed: its one entry."""
    res = s.ctl("--json", "probe", str(port), *options, timeout_s=30)
    entries: list[dict[str, Any]] = json.loads(res.stdout)["entries"]
    assert len(entries) == 1
    return entries[0]


def server_port(s: Site) -> dict[str, Any]:
    [entry] = s.tunnel_ports("server")
    return entry


def test_probe_from_either_end_a_tap_port_and_a_busy_tunnel(net: Underlay,
                                                             tmp_path: Path) -> None:
    with site(net.b, fresh_rundir(tmp_path, "rb"), tmp_path / "b.log", OVERLAY_B) as b, \
            site(net.a, fresh_rundir(tmp_path, "ra"), tmp_path / "a.log", OVERLAY_A,
                 server=False) as a:
        client = connected(a, f"ws://{UNDERLAY_B}/")
        pings_both_ways(a, b)
        peer = server_port(b)["port"]

        for s, port in ((a, client), (b, peer)):  # probe works from either end
            e = probe(s, port, "--size", "9014")
            assert e["answered"] and e["rtt_ms"] > 0, e
            assert (e["largest"], e["asked"], e["lost"]) == (9014, 9014, []), e
            assert e["far_max_message"] == 65535 and e["port"] == port

        line = a.ctl("probe", str(client), timeout_s=30).stdout.strip()
        assert line.startswith(f"port {client}: round trip ") and \
            "largest frame 1514 bytes (of 1514 asked)" in line, line

        res = a.ctl("probe", str(a.tap_port), check=False, timeout_s=30)
        assert res.returncode == 1 and res.stdout == ""
        assert res.stderr.count("\n") == 1 and "[not-a-tunnel]" in res.stderr, res.stderr

        # Probes are not errors on either side, and the tunnel kept its worker.
        assert a.switch.port(client)["errors"] == 0  # type: ignore[index]
        assert server_port(b)["errors"] == 0 and server_port(b)["port"] == peer

        # A probe beside a bulk transfer through the same tunnel.
        server = subprocess.Popen(["ip", "netns", "exec", b.ns, "iperf3", "-s", "-1", "-B",
                                   OVERLAY_B], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: f"{OVERLAY_B}:5201" in run(
                "ip", "netns", "exec", b.ns, "ss", "-ltn", check=False).stdout,
                10, "iperf3 to listen")
            bulk = subprocess.Popen(["ip", "netns", "exec", a.ns, "iperf3", "-c", OVERLAY_B,
                                     "-t", "3", "-J"], stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True)
            try:
                start_rx = server_port(b)["rx_bytes"]
                wait_until(lambda: server_port(b)["rx_bytes"] > start_rx + 5_000_000, 10,
                           "the bulk transfer to run")
                e = probe(a, client, "--size", "9014")
                assert e["answered"] and e["largest"] == 9014, e
                out, _ = bulk.communicate(timeout=30)
            finally:
                bulk.kill()
                bulk.wait()
            assert bulk.returncode == 0, out[-800:]
            assert json.loads(out)["end"]["sum_received"]["bytes"] > 0
        finally:
            server.kill()
            server.wait()


def test_a_far_side_with_a_smaller_max_message_limits_the_probe_and_stays_up(
        net: Underlay, tmp_path: Path) -> None:
    with site(net.b, fresh_rundir(tmp_path, "rb"), tmp_path / "b.log", OVERLAY_B,
              "--max-message", "2000") as b, \
            site(net.a, fresh_rundir(tmp_path, "ra"), tmp_path / "a.log", OVERLAY_A,
                 server=False) as a:
        client = connected(a, f"ws://{UNDERLAY_B}/")
        pings_both_ways(a, b)
        before = server_port(b)

        e = probe(a, client, "--size", "9014")
        assert e["answered"] and e["far_max_message"] == 2000, e
        assert 1514 <= e["largest"] <= 2000 and e["lost"] == [], e
        line = a.ctl("probe", str(client), "--size", "9014", timeout_s=30).stdout
        assert "the far side takes at most 2000" in line, line

        # No 1009: the same peer worker, the same client link, traffic still flows.
        after = server_port(b)
        assert (after["port"], after["pid"], after["state"]) == (
            before["port"], before["pid"], "up")
        assert a.switch.port(client)["restarts"] == 0  # type: ignore[index]
        pings_both_ways(a, b)

        # From the server's side the far end (the client) takes every size.
        e = probe(b, before["port"], "--size", "9014")
        assert e["answered"] and e["largest"] == 9014 and e["far_max_message"] == 65535, e


def test_a_far_side_that_is_not_an_etherws_switch_gives_no_answer(net: Underlay,
                                                                  tmp_path: Path) -> None:
    server = subprocess.Popen(["ip", "netns", "exec", net.b, PYTHON, "-c", PLAIN_SERVER,
                               UNDERLAY_B], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: f"{UNDERLAY_B}:8765" in run(
            "ip", "netns", "exec", net.b, "ss", "-ltn", check=False).stdout,
            10, "the plain WebSocket server to listen")
        with site(net.a, fresh_rundir(tmp_path, "ra"), tmp_path / "a.log", OVERLAY_A,
                  server=False) as a:
            client = connected(a, f"ws://{UNDERLAY_B}:8765/")
            e = probe(a, client)
            assert not e["answered"] and e["largest"] is None and e["rtt_ms"] is None, e
            assert a.switch.port(client)["state"] == "up"  # type: ignore[index]
    finally:
        server.kill()
        server.wait()

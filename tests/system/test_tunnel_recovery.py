"""A tunnel comes back by itself: server restarts, killed client and peer workers."""

from __future__ import annotations

import json
import os
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Iterator

import pytest

from tests.support import link_exists, run, wait_until
from tests.system.harness import sigkill
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

URL = f"ws://{UNDERLAY_B}/"


@pytest.fixture
def side_a(net: Underlay, tmp_path: Path) -> Iterator[Site]:
    with site(net.a, fresh_rundir(tmp_path, "ra"), tmp_path / "a.log", OVERLAY_A,
              server=False) as s:
        yield s


def _side_b(net: Underlay, tmp_path: Path) -> AbstractContextManager[Site]:
    """Site B's switch on a TAP that outlives it: the far host keeps its MAC address
    across a restart of the switch, so only the tunnel is what comes and goes."""
    tap = "etwtb"  # in B's own namespace, which goes with the test
    if not link_exists(tap, net.b):
        run("ip", "-n", net.b, "tuntap", "add", "dev", tap, "mode", "tap")
    return site(net.b, fresh_rundir(tmp_path, "rb"), tmp_path / "b.log", OVERLAY_B, tap=tap)


def test_server_restart_client_backs_off_then_traffic_returns_by_itself(
        net: Underlay, side_a: Site, tmp_path: Path) -> None:
    with _side_b(net, tmp_path) as b:
        port = connected(side_a, URL)
        pings_both_ways(side_a, b)
    entry = side_a.switch.wait_port(port, "backoff", timeout_s=30)
    assert entry["reason"] and entry["next_retry"] is not None
    assert entry["pid"] is not None  # the worker lives on; only the link is down
    with _side_b(net, tmp_path) as b:
        side_a.switch.wait_port(port, "up", timeout_s=45)  # no operator action on A
        pings_both_ways(side_a, b)
        assert side_a.switch.port(port)["restarts"] == 0  # type: ignore[index]


def test_kill_9_client_worker_is_restarted_and_traffic_returns(
        net: Underlay, side_a: Site, tmp_path: Path) -> None:
    with _side_b(net, tmp_path) as b:
        port = connected(side_a, URL)
        pings_both_ways(side_a, b)
        old = side_a.switch.port(port)["pid"]  # type: ignore[index]
        sigkill(old)
        entry = wait_until(lambda: (e := side_a.switch.port(port)) and e["pid"] not in
                           (None, old) and e["state"] == "up" and e, 20,
                           "the client worker to be back up")
        assert entry["restarts"] == 1
        pings_both_ways(side_a, b)


def test_kill_9_peer_worker_the_client_reconnects(
        net: Underlay, side_a: Site, tmp_path: Path) -> None:
    with _side_b(net, tmp_path) as b:
        port = connected(side_a, URL)
        pings_both_ways(side_a, b)
        [peer] = b.tunnel_ports("server")
        sigkill(peer["pid"])
        # the peer's port goes away for good; the client dials in again: a new port
        new = wait_until(lambda: [e for e in b.tunnel_ports("server")
                                  if e["port"] != peer["port"] and e["state"] == "up"],
                         20, "the client to reconnect")
        assert len(new) == 1 and not any(e["port"] == peer["port"]
                                         for e in b.tunnel_ports("server"))
        side_a.switch.wait_port(port, "up", timeout_s=20)
        pings_both_ways(side_a, b)
        assert b.fdb_port(side_a.host.mac()) == new[0]["port"]


def test_retry_keeps_a_port_whose_server_is_not_there_yet(
        net: Underlay, side_a: Site, tmp_path: Path) -> None:
    res = side_a.add_client(URL, "--retry")
    assert res.returncode == 0, res.stderr
    [entry] = json.loads(res.stdout)["entries"]
    # the first retry comes at once: by now it may be connecting again, never up
    assert entry["state"] in ("backoff", "connecting"), entry
    assert "203.0.113.2:80: Connection refused" in entry["reason"]
    listing = side_a.switch.wait_port(entry["port"], "backoff")  # 1 s, then 2 s, ...
    assert listing["next_retry"] > 0 and "Connection refused" in listing["reason"]
    assert "retry in" in side_a.ctl("listport").stdout
    with _side_b(net, tmp_path) as b:
        side_a.switch.wait_port(entry["port"], "up", timeout_s=45)
        pings_both_ways(side_a, b)


def test_without_retry_an_unreachable_server_fails_addport_and_leaves_nothing(
        side_a: Site) -> None:
    res = side_a.add_client(URL)
    assert res.returncode == 1 and res.stderr.count("\n") == 1
    assert res.stderr.startswith("etherws-ctl: cannot connect to ws://203.0.113.2/: ")
    assert side_a.tunnel_ports("client") == []
    assert [f for f in os.listdir(side_a.switch.rundir)
            if f.startswith("port-")] == []

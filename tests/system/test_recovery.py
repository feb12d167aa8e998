"""Crash isolation: killed workers and brokers come back, crash loops end FATAL,
and nothing outlives a killed supervisor."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.support import delete_link, wait_until
from tests.system.harness import Host, Switch, alive, host, sigkill, two_hosts


@pytest.fixture
def hosts(switch: Switch) -> Iterator[tuple[Host, Host, int, int]]:
    with two_hosts(switch, "203.0.113.11", "203.0.113.12") as p:
        p.a.wait_ping(p.b.address, 10)
        yield p.a, p.b, p.tap_port, p.net_port


@pytest.mark.parametrize("which", ["tap", "netdev"])
def test_killed_worker_is_back_within_2s_same_port(switch: Switch, hosts, which: str) -> None:
    a, b, tap_port, net_port = hosts
    port = tap_port if which == "tap" else net_port
    old = switch.port(port)
    sigkill(old["pid"])
    a.wait_ping(b.address, 2, "traffic to return after kill -9 of a worker")
    new = wait_until(lambda: (e := switch.port(port)) and e["pid"] != old["pid"] and e,
                     5, "a new worker pid")
    assert new["port"] == port and new["restarts"] == 1 and new["state"] == "up"
    assert new["target"] == old["target"]


def test_killed_broker_is_back_within_2s_and_keeps_the_fdb(switch: Switch, hosts) -> None:
    a, b, tap_port, net_port = hosts
    learned = {(e["mac"], e["port"]) for e in switch.entries("listfdb")}
    assert (a.mac(), tap_port) in learned and (b.mac(), net_port) in learned
    old = switch.status()["broker"]
    sigkill(old["pid"])
    a.wait_ping(b.address, 2, "traffic to return after kill -9 of the broker")
    broker = wait_until(lambda: (s := switch.status()["broker"]) and s["pid"] != old["pid"]
                        and s["state"] == "up" and s, 5, "a new broker")
    assert broker["restarts"] == 1
    assert learned <= {(e["mac"], e["port"]) for e in switch.entries("listfdb")}


def test_crash_loop_ends_fatal_and_other_ports_keep_forwarding(switch: Switch, hosts) -> None:
    a, b, _, _ = hosts
    with host("203.0.113.13") as victim:
        port = switch.add("netdev", victim.outer)
        switch.wait_port(port, "up")
        delete_link(victim.outer)  # the worker's interface is gone: every restart fails
        entry = switch.wait_port(port, "fatal", 30)
    assert entry["restarts"] >= 4 and entry["pid"] is None
    assert "crashes" in entry["reason"]
    assert a.ping(b.address, 1)
    listed = switch.ctl("listport").stdout
    assert "fatal" in listed
    # an operator restart clears FATAL (the interface is still missing: it crashes again)
    switch.ctl("restartport", str(port))
    assert switch.port(port)["state"] in ("starting", "backoff", "up")
    switch.ctl("delport", str(port))
    assert switch.port(port) is None


def test_killed_supervisor_leaves_no_process(switch: Switch, hosts) -> None:
    kids = switch.descendants()
    assert len(kids) >= 3  # broker and two workers
    sigkill(switch.proc.pid)
    wait_until(lambda: not any(alive(k.pid) for k in kids), 2,
               "every child of a killed supervisor to exit")

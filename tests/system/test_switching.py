"""Two hosts on one switch: learning, forwarding, shut ports, removing ports."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import pytest

from etherws.runtime import tuntap
from tests.support import delete_link, link_exists, run, unique, wait_until
from tests.system.harness import Pair, Switch, two_hosts


@pytest.fixture
def pair(switch: Switch) -> Iterator[Pair]:
    with two_hosts(switch, "203.0.113.1", "203.0.113.2") as p:
        yield p


@contextlib.contextmanager
def foreign_tuntap() -> Iterator[tuple[str, str]]:
    """A TUN device, and a TAP that another process (this test) holds open."""
    tun, busy = unique("etwu"), unique("etwb")
    run("ip", "tuntap", "add", "dev", tun, "mode", "tun")
    fd = -1
    try:
        fd = tuntap.attach_tap(busy)  # non-persistent: gone when the fd closes
        yield tun, busy
    finally:
        if fd >= 0:
            os.close(fd)
        delete_link(tun)


def test_two_hosts_ping_and_listfdb_shows_each_mac_on_its_port(
        switch: Switch, pair: Pair) -> None:
    pair.a.wait_ping("203.0.113.2", 10)
    assert pair.b.ping("203.0.113.1")
    fdb = {(e["mac"], e["port"]) for e in switch.entries("listfdb")}
    assert (pair.a.mac(), pair.tap_port) in fdb
    assert (pair.b.mac(), pair.net_port) in fdb
    ports = {e["port"]: e for e in switch.entries("listport")}
    assert ports[pair.tap_port]["type"] == "tap" and ports[pair.tap_port]["target"] == pair.tap
    assert ports[pair.net_port]["type"] == "netdev"
    for e in ports.values():
        assert e["rx"] > 0 and e["tx"] > 0 and e["rx_bytes"] > 0 and e["pid"] > 0
        assert e["rss"] > 0 and e["uptime"] >= 0 and e["restarts"] == 0


def test_shut_stops_traffic_and_unshut_brings_it_back(switch: Switch, pair: Pair) -> None:
    pair.a.wait_ping("203.0.113.2", 10)
    switch.ctl("setport", str(pair.net_port), "--shut", "1")
    assert switch.port(pair.net_port)["shut"] is True
    # the ARP entry keeps unicast flowing only if frames pass: none may pass now
    assert not any(pair.a.ping("203.0.113.2", 0.3) for _ in range(3))
    switch.ctl("setport", str(pair.net_port), "--shut", "0")
    pair.a.wait_ping("203.0.113.2", 5)


def test_delport_removes_port_fdb_entries_and_tap(switch: Switch, pair: Pair) -> None:
    pair.a.wait_ping("203.0.113.2", 10)
    a_mac = pair.a.mac()
    assert any(e["mac"] == a_mac for e in switch.entries("listfdb"))
    switch.ctl("delport", str(pair.tap_port))
    assert switch.port(pair.tap_port) is None
    assert all(e["port"] != pair.tap_port for e in switch.entries("listfdb"))
    assert not link_exists(pair.tap)
    res = switch.ctl("delport", str(pair.tap_port), check=False)
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and "no port" in res.stderr


def test_port_numbers_are_not_reused(switch: Switch) -> None:
    first = switch.add("tap", unique("etwt"))
    switch.ctl("delport", str(first))
    second = switch.add("tap", unique("etwt"))
    assert second == first + 1


def test_setif_and_listif(switch: Switch) -> None:
    tap = unique("etwt")
    port = switch.add("tap", tap)
    switch.ctl("setif", str(port), "--address", "198.51.100.1", "--netmask",
               "255.255.255.0", "--mtu", "1400")
    switch.ctl("setif", str(port), "--address", "2001:db8::1/64")
    (entry,) = [e for e in switch.entries("listif") if e["port"] == port]
    assert entry["target"] == tap and entry["mtu"] == 1400
    assert entry["address"] == "198.51.100.1" and entry["netmask"] == "255.255.255.0"
    assert "2001:db8::1/64" in entry["addresses"]


@pytest.mark.parametrize("args, message", [
    (["setif", "{port}", "--mtu", "70000"], "out of range"),
    (["setif", "{port}", "--mtu", "20"], "out of range"),
    (["setif", "{port}", "--address", "198.51.100.300/24"], "not an address"),
    (["setif", "{port}", "--address", "198.51.100.1", "--netmask", "255.0.255.0"],
     "not an address"),
    (["setif", "99", "--mtu", "1400"], "no port 99"),
    (["setport", "99", "--shut", "1"], "no port 99"),
    (["restartport", "99"], "no port 99"),
    (["addport", "tap", "{tap}"], "already port"),
    (["addport", "netdev", "etwnope0"], "no interface"),
    (["addport", "tap", "lo"], "not a TAP"),
    (["addport", "tap", "bad/name"], "not a valid interface name"),
    (["addport", "tap", "{tun}"], "cannot attach"),
    (["addport", "tap", "{busy}"], "cannot attach"),
])
def test_bad_requests_fail_with_one_line_and_change_nothing(
        switch: Switch, args: list[str], message: str) -> None:
    tap = unique("etwt")
    port = switch.add("tap", tap)
    switch.ctl("setif", str(port), "--mtu", "1500")
    before = (switch.entries("listport"), switch.entries("listif"))
    with foreign_tuntap() as (tun, busy):
        res = switch.ctl(*[a.format(port=port, tap=tap, tun=tun, busy=busy) for a in args],
                         check=False)
    assert res.returncode == 1, res
    assert res.stderr.startswith("etherws-ctl: ") and res.stderr.count("\n") == 1
    assert message in res.stderr
    assert res.stdout == ""
    after = (switch.entries("listport"), switch.entries("listif"))
    assert [e["port"] for e in after[0]] == [e["port"] for e in before[0]]
    assert after[1] == before[1]
    assert not link_exists("etwnope0")
    wait_until(lambda: switch.port(port)["state"] == "up", 10, "the port to stay up")

"""Offload end to end: super-frames between two etherws switches, segments for the rest.

Three sites in namespaces: B runs the WebSocket server; A connects to it with offload (the
default on both sides, so the tunnel negotiates etherws.gso.1); C connects with
``--no-offload`` (its TAP and its tunnel take wire frames only). iperf3 runs across the
tunnels; the receiving kernels verify every checksum (their InCsumErrors stay 0), and a
capture on C's TAP shows that what reaches a port without offload are wire-sized frames.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.support import PYTHON, delete_link, netns, run, unique, wait_until
from tests.system.harness import no_offloads
from tests.system.tunnel import (
    OVERLAY_A,
    OVERLAY_B,
    UNDERLAY_B,
    Site,
    Underlay,
    connected,
    fresh_rundir,
    server_and_client,
    site,
    underlay,
)

OVERLAY_C = "198.51.100.3"
LINK_B, LINK_C = "192.0.2.1", "192.0.2.2"
"""The second underlay, B to C."""

SNIFF = r"""
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[1], 0))
s.settimeout(0.2)
print("ready", flush=True)
largest = frames = 0
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    try:
        n = len(s.recv(70000))
    except socket.timeout:
        continue
    frames += 1
    largest = max(largest, n)
print(frames, largest, flush=True)
"""


@pytest.fixture
def net() -> Iterator[Underlay]:
    with underlay() as u:
        yield u


@contextlib.contextmanager
def third(net: Underlay) -> Iterator[str]:
    """Namespace C, joined to B by its own veth (192.0.2.0/24); removed after."""
    tag = unique("")
    with netns(f"etw-c{tag}") as c:
        ub, uc = f"etwvb{tag}", f"etwvc{tag}"
        run("ip", "link", "add", ub, "type", "veth", "peer", "name", uc)
        try:
            run("ip", "link", "set", ub, "netns", net.b)
            run("ip", "link", "set", uc, "netns", c)
            for ns, dev, address in ((net.b, ub, LINK_B), (c, uc, LINK_C)):
                run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", dev)
                run("ip", "-n", ns, "link", "set", dev, "up")
                no_offloads(dev, ns)
            yield c
        finally:
            delete_link(ub)
            delete_link(uc)


@pytest.fixture
def sites(net: Underlay, tmp_path: Path) -> Iterator[tuple[Site, Site, Site]]:
    """(a, b, c): A and C connected to B's server, A with offload, C without."""
    with third(net) as c_ns, \
            site(net.b, fresh_rundir(tmp_path, "rb"), tmp_path / "b.log", OVERLAY_B) as b, \
            site(net.a, fresh_rundir(tmp_path, "ra"), tmp_path / "a.log", OVERLAY_A,
                 server=False) as a, \
            site(c_ns, fresh_rundir(tmp_path, "rc"), tmp_path / "c.log", OVERLAY_C,
                 "--no-offload", server=False) as c:
        connected(a, f"ws://{UNDERLAY_B}/")
        connected(c, f"ws://{LINK_B}/")
        a.host.wait_ping(OVERLAY_B, 15, "A to reach B")
        a.host.wait_ping(OVERLAY_C, 15, "A to reach C")
        yield a, b, c


def csum_errors(ns: str) -> dict[str, int]:
    """The namespace's InCsumErrors for TCP and UDP (/proc/net/snmp)."""
    lines = run("ip", "netns", "exec", ns, "cat", "/proc/net/snmp").stdout.splitlines()
    out = {}
    for names, values in zip(lines[::2], lines[1::2]):
        proto, _, keys = names.partition(": ")
        if proto in ("Tcp", "Udp") and "InCsumErrors" in keys:
            out[proto] = int(values.split()[keys.split().index("InCsumErrors") + 1])
    return out


def iperf(client: Site, server: Site, address: str, *options: str) -> dict[str, Any]:
    """One iperf3 run from ``client`` to ``server`` (listening on ``address``): its JSON."""
    proc = subprocess.Popen(["ip", "netns", "exec", server.ns, "iperf3", "-s", "-1", "-B",
                             address], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: f"{address}:5201" in run("ip", "netns", "exec", server.ns, "ss",
                                                    "-ltn", check=False).stdout,
                   10, "iperf3 to listen")
        res = run("ip", "netns", "exec", client.ns, "iperf3", "-c", address, "-t", "3",
                  "-J", *options, check=False, timeout_s=60)
    finally:
        proc.kill()
        proc.wait()
    assert res.returncode == 0, res.stdout[-800:]
    result: dict[str, Any] = json.loads(res.stdout)
    return result


def received_bytes(result: dict[str, Any]) -> int:
    end = result["end"]
    return int(end["sum_received"]["bytes"] if "sum_received" in end else end["sum"]["bytes"])


def port(s: Site, kind: str) -> dict[str, Any]:
    ports = s.tunnel_ports(kind)
    assert len(ports) == 1, ports
    return ports[0]


def test_two_etherws_switches_carry_super_frames_both_ways(
        sites: tuple[Site, Site, Site]) -> None:
    a, b, c = sites
    assert port(a, "client")["offload"] is True  # negotiated
    peers = {e["offload"] for e in b.tunnel_ports("server")}
    assert peers == {True, False}  # A's link with it, C's without
    assert port(c, "client")["offload"] is False
    assert b.switch.entries("listport")[0]["offload"] is True  # B's TAP
    before = port(a, "client")
    errors = {s.ns: csum_errors(s.ns) for s in (a, b)}
    up = iperf(a, b, OVERLAY_B)
    down = iperf(a, b, OVERLAY_B, "-R")
    after = port(a, "client")
    for result in (up, down):
        assert received_bytes(result) > 5_000_000
    frames = (after["tx"] - before["tx"]) + (after["rx"] - before["rx"])
    nbytes = (after["tx_bytes"] - before["tx_bytes"]) + (after["rx_bytes"] - before["rx_bytes"])
    # wire frames are at most 1514 bytes; the tunnel carried far fewer, larger ones
    assert nbytes / frames > 4000, (nbytes, frames)
    udp_up = iperf(a, b, OVERLAY_B, "-u", "-b", "100M", "-l", "1400")
    udp_down = iperf(a, b, OVERLAY_B, "-u", "-b", "100M", "-l", "1400", "-R")
    for result in (udp_up, udp_down):
        s = result["end"]["sum"]
        assert s["packets"] > 10_000 and s["lost_percent"] < 5, s
    for s in (a, b):
        assert csum_errors(s.ns) == errors[s.ns], s.ns


@pytest.mark.parametrize("udp", [False, True], ids=["tcp", "udp"])
def test_a_port_without_offload_gets_wire_frames_of_the_same_streams(
        sites: tuple[Site, Site, Site], udp: bool) -> None:
    a, _, c = sites
    errors = csum_errors(c.ns)
    sniffer = subprocess.Popen(["ip", "netns", "exec", c.ns, PYTHON, "-c", SNIFF,
                                c.host.inner, "8"], stdout=subprocess.PIPE, text=True)
    try:
        assert sniffer.stdout is not None and sniffer.stdout.readline().strip() == "ready"
        result = iperf(a, c, OVERLAY_C, *(["-u", "-b", "100M", "-l", "1400"] if udp else []))
        out, _ = sniffer.communicate(timeout=20)
    finally:
        if sniffer.poll() is None:
            sniffer.kill()
            sniffer.wait()
    frames, largest = map(int, out.split())
    assert frames > 1000 and largest <= 1514, (frames, largest)
    if udp:
        s = result["end"]["sum"]
        assert s["packets"] > 10_000 and s["lost_percent"] < 5, s
    else:
        assert received_bytes(result) > 5_000_000
    assert csum_errors(c.ns) == errors  # every segment's checksums right


def test_a_client_port_with_no_offload_sends_wire_frames(net: Underlay,
                                                         tmp_path: Path) -> None:
    """addport client --no-offload: the server is not offered etherws.gso.1; the TAP's
    super-frames are cut into segments by the client worker before the tunnel."""
    with server_and_client(net, tmp_path) as (b, a):
        number = connected(a, f"ws://{UNDERLAY_B}/", "--no-offload")
        a.host.wait_ping(OVERLAY_B, 15, "A to reach B")
        assert port(a, "client")["offload"] is False
        assert port(b, "server")["offload"] is False
        assert a.switch.port(a.tap_port)["offload"] is True  # the TAP still hands them over
        errors = csum_errors(b.ns)
        before = a.switch.port(number)
        result = iperf(a, b, OVERLAY_B)
        after = a.switch.port(number)
        assert received_bytes(result) > 5_000_000
        sent = after["tx_bytes"] - before["tx_bytes"]
        frames = after["tx"] - before["tx"]
        assert sent / frames < 1514, (sent, frames)  # segments, not super-frames
        assert csum_errors(b.ns) == errors

"""VLANs, storm control and rate limits on real namespaces: two switches joined by a tunnel
that is an 802.1Q trunk, hosts on access ports, a flood injected with AF_PACKET, iperf3.

Site A (namespace A) has its TAP host 198.51.100.1 on an access port of VLAN 10; site B has
its TAP host 198.51.100.2 on VLAN 10 and host 198.51.100.3 (its own namespace, on a netdev
port) on VLAN 20. The tunnel's ports at both ends are trunks of 10 and 20.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import SCALE, delete_link, netns, run, unique, wait_until
from tests.system.harness import Host, no_offloads
from tests.system.tunnel import (
    OVERLAY_A,
    OVERLAY_B,
    UNDERLAY_B,
    Site,
    Underlay,
    connected,
    fresh_rundir,
    ns_python,
    site,
)

OVERLAY_C = "198.51.100.3"

# Frames on an interface with their 802.1Q tag: the kernel takes a tag off into the
# packet's metadata before AF_PACKET sees the frame, and gives it back as PACKET_AUXDATA.
CAPTURE = r"""
import socket, struct, sys, time
dev, seconds = sys.argv[1], float(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.setsockopt(263, 8, 1)  # SOL_PACKET, PACKET_AUXDATA
s.bind((dev, 0))
s.settimeout(0.2)
print("ready", flush=True)
end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        data, anc, _, _ = s.recvmsg(65536, 64)
    except TimeoutError:
        continue
    vid = None
    for level, kind, aux in anc:
        if level == 263 and kind == 8:
            status, _, _, _, _, tci, _ = struct.unpack("IIIHHHH", aux[:20])
            if status & 0x10:  # TP_STATUS_VLAN_VALID
                vid = tci & 0xFFF
    if vid is None and data[12:14] == b"\x81\x00":
        vid = int.from_bytes(data[14:16], "big") & 0xFFF
    print(data[6:12].hex(":"), vid, flush=True)
"""

FLOOD = r"""
import socket, sys
dev, n = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((dev, 0))
frame = b"\xff" * 6 + bytes.fromhex("02eeeeeeee01") + b"\x88\xb5" + bytes(46)
for _ in range(n):
    s.send(frame)
"""


@contextlib.contextmanager
def host_on(switch_ns: str, address: str) -> Iterator[Host]:
    """A host namespace with ``address``/24, its veth's other end in ``switch_ns``."""
    tag = unique("")
    with netns(f"etw-h{tag}") as ns:
        h = Host(ns, f"etwi{tag}", f"etwo{tag}", address)
        run("ip", "link", "add", h.outer, "type", "veth", "peer", "name", h.inner)
        try:
            run("ip", "link", "set", h.inner, "netns", ns)
            run("ip", "link", "set", h.outer, "netns", switch_ns)
            run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", h.inner)
            run("ip", "-n", ns, "link", "set", h.inner, "up")
            run("ip", "-n", switch_ns, "link", "set", h.outer, "up")
            no_offloads(h.outer, switch_ns)
            no_offloads(h.inner, ns)
            yield h
        finally:
            delete_link(h.outer, switch_ns)


def entry(s: Site, port: int) -> dict:
    e = s.switch.port(port)
    assert e is not None
    return e


@pytest.fixture
def sites(net: Underlay, tmp_path: Path) -> Iterator[tuple[Site, Site]]:
    with site(net.a, fresh_rundir(tmp_path, "ra"), tmp_path / "a.log", OVERLAY_A,
              server=False) as a, \
            site(net.b, fresh_rundir(tmp_path, "rb"), tmp_path / "b.log", OVERLAY_B) as b:
        yield a, b


def test_access_ports_across_a_trunk_tunnel(sites: tuple[Site, Site]) -> None:
    a, b = sites
    with host_on(b.ns, OVERLAY_C) as c:
        c_port = b.switch.add("netdev", c.outer)
        b.switch.wait_port(c_port, "up")
        a.ctl("setport", str(a.tap_port), "--vlan", "10")
        b.ctl("setport", str(b.tap_port), "--vlan", "10")
        b.ctl("setport", str(c_port), "--vlan", "20")
        tunnel = connected(a, f"ws://{UNDERLAY_B}/")
        a.ctl("setport", str(tunnel), "--trunk", "10,20")
        peer = b.tunnel_ports("server")[0]["port"]
        b.ctl("setport", str(peer), "--trunk", "10,20")
        assert entry(a, tunnel)["trunk"] == "10,20"
        assert entry(b, c_port)["vlan"] == 20

        mon = unique("etwm")  # a transparent TAP on A: it gets every VLAN, tagged
        a.switch.taps.append(mon)
        mon_port = a.switch.add("tap", mon)
        a.switch.wait_port(mon_port, "up")
        cap = subprocess.Popen(["ip", "netns", "exec", a.ns, "python3", "-c", CAPTURE, mon,
                                str(20 * SCALE)], stdout=subprocess.PIPE, text=True)
        try:
            assert cap.stdout is not None and cap.stdout.readline().strip() == "ready"
            a.host.wait_ping(OVERLAY_B, 15, "VLAN 10 to reach across the trunk")
            b.host.wait_ping(OVERLAY_A, 15, "VLAN 10 to reach back")
            for target in (OVERLAY_A, OVERLAY_B):  # VLAN 20 reaches neither
                assert not c.ping(target, 1.0) and not c.ping(target, 1.0)
            seen: list[tuple[str, str]] = []
            mac_a, mac_b, mac_c = a.host.mac(), b.host.mac(), c.mac()
            wait_until(lambda: _read(cap, seen, {mac_a, mac_b, mac_c}), 15,
                       "A's monitor port to see A, B and C's frames")
        finally:
            cap.kill()
            cap.wait()
        vids = {mac: {v for m, v in seen if m == mac} for mac in (mac_a, mac_b, mac_c)}
        assert vids == {mac_a: {"10"}, mac_b: {"10"}, mac_c: {"20"}}, seen

        fdb_a = {(e["mac"], e["vid"]): e["port"] for e in a.switch.entries("listfdb")}
        assert fdb_a[(mac_b, 10)] == tunnel and fdb_a[(mac_c, 20)] == tunnel
        assert (mac_c, 10) not in fdb_a  # C's frames never entered VLAN 10
        fdb_b = {(e["mac"], e["vid"]): e["port"] for e in b.switch.entries("listfdb")}
        assert fdb_b[(mac_a, 10)] == peer  # came tagged 10 over the tunnel
        assert fdb_b[(mac_c, 20)] == c_port and fdb_b[(mac_b, 10)] == b.tap_port


def _read(cap: subprocess.Popen[str], seen: list[tuple[str, str]], want: set[str]) -> bool:
    assert cap.stdout is not None
    line = cap.stdout.readline()
    if line:
        mac, vid = line.split()
        seen.append((mac, vid))
    return want <= {m for m, _ in seen}


def test_storm_control_cuts_a_broadcast_flood(sites: tuple[Site, Site]) -> None:
    a, b = sites
    connected(a, f"ws://{UNDERLAY_B}/")
    a.ctl("setport", str(a.tap_port), "--storm", "200")
    before = entry(a, a.tap_port)
    n = 20_000
    start = time.monotonic()
    res = ns_python(a.ns, FLOOD, a.host.inner, str(n))
    assert res.returncode == 0, res.stderr
    # The TAP's queue keeps frames in order: once a ping went through after the flood, the
    # broker has handled every flood frame the TAP's queue did not drop itself.
    a.host.wait_ping(OVERLAY_B, 15, "a ping after the storm")
    elapsed = time.monotonic() - start
    after = entry(a, a.tap_port)
    came = after["rx"] - before["rx"]
    dropped = after["storm_drops"] - before["storm_drops"]
    passed = came - dropped
    assert came > n // 4, came  # a flood came in
    assert passed <= 64 + 200 * elapsed + 50, (passed, elapsed)  # burst + rate + ARP, ping
    assert dropped > came // 2 and after["drops"] >= dropped
    b_peer = b.tunnel_ports("server")[0]
    assert b_peer["rx"] < n // 4  # the far side got the limit, not the flood


def test_a_rate_limited_port_stays_near_its_limit(sites: tuple[Site, Site]) -> None:
    a, b = sites
    connected(a, f"ws://{UNDERLAY_B}/")
    a.host.wait_ping(OVERLAY_B, 15, "the tunnel")
    a.ctl("setport", str(a.tap_port), "--rate", "10")
    server = subprocess.Popen(["ip", "netns", "exec", b.ns, "iperf3", "-s", "-1", "-B",
                               OVERLAY_B], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: run("ip", "netns", "exec", b.ns, "ss", "-ltn", check=False)
                   .stdout.count(":5201") > 0, 10, "iperf3 to listen")
        res = run("ip", "netns", "exec", a.ns, "iperf3", "-c", OVERLAY_B, "-t", "4", "-J",
                  check=False, timeout_s=60)
    finally:
        server.kill()
        server.wait()
    assert res.returncode == 0, res.stdout[-500:]
    mbps = json.loads(res.stdout)["end"]["sum_received"]["bits_per_second"] / 1e6
    assert 1 < mbps < 15, mbps  # the limit is 10; without it this path does hundreds
    assert entry(a, a.tap_port)["rate_drops"] > 0


def test_rules_from_the_file_save_and_reload(tmp_path: Path, rundir: str) -> None:
    from tests.system.test_persistence import SUPERVISOR, by_number, start, taps

    tap = unique("etwt")
    config = tmp_path / "etherws.toml"
    config.write_text(f'[[ports]]\ntap = "{tap}"\nname = "lan"\nvlan = 10\n')
    with taps(tap):
        sw = start(tmp_path, rundir, config)
        try:
            sw.wait_port(1, "up")
            first = by_number(sw)[1]
            assert (first["vlan"], first["storm"], first["unsaved"]) == (10, None, False)
            sw.ctl("setport", "lan", "--trunk", "10,20", "--native", "1", "--rate", "50")
            assert by_number(sw)[1]["unsaved"]
            sw.ctl("save")
            saved = tomllib.loads(config.read_text())["ports"][0]
            assert {k: saved.get(k) for k in ("vlan", "trunk", "native", "rate")} == {
                "vlan": None, "trunk": "10,20", "native": 1, "rate": 50}
            config.write_text(f'[[ports]]\ntap = "{tap}"\nname = "lan"\nvlan = 20\n'
                              'storm = 500\n')
            out = run(*SUPERVISOR, "reload", "--rundir", rundir)
            assert out.stdout.splitlines() == [
                "changed port 1 (lan): vlan, trunk, native, storm, rate"]
            now = by_number(sw)[1]
            assert (now["vlan"], now["trunk"], now["storm"], now["rate"]) == (20, None, 500, None)
            assert now["pid"] == first["pid"] and not now["unsaved"]
        finally:
            sw.close()

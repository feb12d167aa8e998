"""Netdev ports and the interface's offloads: by default the port reads and writes
super-frames with their virtio-net header (PACKET_VNET_HDR) and the interface keeps its
offloads; with --no-offload addport netdev turns off the offloads that would break TCP
through the port, logs them, and restores them on delport and at stop. Veth pairs in
namespaces of the test's."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from etherws.supervisor import offloads
from tests.support import PYTHON, SCALE, run, wait_until
from tests.system.harness import Host, Switch, host

WATCHED = ("rx-gro", "tx-generic-segmentation", "tx-tcp-segmentation",
           "tx-checksum-ip-generic", "rx-checksum")
"""What a veth has on by default, of offloads.FEATURES."""
SERVER = """
import socket, sys
s = socket.create_server((sys.argv[1], 5201)); print("ready", flush=True)
c, _ = s.accept(); c.settimeout(20); n = 0
while n < int(sys.argv[2]):
    b = c.recv(65536)
    if not b: break
    n += len(b)
c.sendall(str(n).encode()); c.close()
"""
CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], 5201), timeout=20)
c.sendall(b"x" * int(sys.argv[2])); print(c.recv(64).decode())
"""


@pytest.fixture
def switch(tmp_path: Path, rundir: str) -> Iterator[Switch]:
    """A supervisor with --no-offload: netdev ports without the virtio-net header."""
    sw = Switch(rundir, tmp_path / "switch.log", ["--no-offload"])
    try:
        yield sw
    finally:
        sw.close()


def offloaded_host(address: str) -> contextlib.AbstractContextManager[Host]:
    """A host whose veth keeps the kernel's default offloads on the switch's end (the
    port's interface); a veth peer with its own offloads on would hand the port its
    unsegmented TSO buffers, which no setting of the port's end can change."""
    return host(address, outer_offloads=True)


def tcp_transfer(a: Host, b: Host, nbytes: int = 4_000_000) -> int:
    """Bytes B received of ``nbytes`` sent by A over TCP."""
    server = subprocess.Popen(["ip", "netns", "exec", b.ns, PYTHON, "-c", SERVER, b.address,
                               str(nbytes)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        res = run("ip", "netns", "exec", a.ns, PYTHON, "-c", CLIENT, b.address, str(nbytes),
                  check=False, timeout_s=40)
        return int(res.stdout.strip() or 0)
    finally:
        server.kill()
        server.wait()


def test_offloads_off_while_the_port_exists_and_tcp_flows(switch: Switch) -> None:
    with offloaded_host("203.0.113.1") as a, host("203.0.113.2") as b:
        before = offloads.enabled(a.outer)
        on = [f for f in WATCHED if before.get(f)]
        assert on, f"this veth has none of {WATCHED} on: {before}"
        port = switch.add("netdev", a.outer)
        other = switch.add("netdev", b.outer)
        switch.wait_port(port, "up")
        switch.wait_port(other, "up")
        now = offloads.enabled(a.outer)
        assert not any(now[f] for f in on), now
        line = next(ln for ln in switch.log_text().splitlines()
                    if f"turned off on {a.outer}" in ln)
        assert all(f in line.split() for f in on), line

        a.wait_ping(b.address, 10 * SCALE)
        assert tcp_transfer(a, b) == 4_000_000

        switch.ctl("delport", str(port))
        assert offloads.enabled(a.outer) == before
        assert f"offloads restored on {a.outer}" in switch.log_text()


def test_offloads_are_restored_when_the_supervisor_stops(switch: Switch) -> None:
    with offloaded_host("203.0.113.1") as a:
        before = offloads.enabled(a.outer)
        port = switch.add("netdev", a.outer)
        switch.wait_port(port, "up")
        assert offloads.enabled(a.outer) != before
        switch.close()
        wait_until(lambda: offloads.enabled(a.outer) == before, 5, "the restore")


def test_by_default_the_interfaces_keep_their_offloads_and_super_frames_pass(
        tmp_path: Path, rundir: str) -> None:
    sw = Switch(rundir, tmp_path / "offload.log")
    try:
        with host("203.0.113.1", outer_offloads=True, inner_offloads=True) as a, \
                host("203.0.113.2", outer_offloads=True, inner_offloads=True) as b:
            before = offloads.enabled(a.outer)
            assert before.get("tx-tcp-segmentation"), before
            port = sw.add("netdev", a.outer)
            other = sw.add("netdev", b.outer)
            sw.wait_port(port, "up")
            sw.wait_port(other, "up")
            a.wait_ping(b.address, 10 * SCALE)
            assert tcp_transfer(a, b, 20_000_000) == 20_000_000
            assert offloads.enabled(a.outer) == before  # untouched
            assert "turned off" not in sw.log_text()
            entry = sw.port(port)
            assert entry is not None and entry["offload"] is True
            # The sender's stack handed its veth TSO buffers: they came in whole.
            assert entry["rx_bytes"] / entry["rx"] > 4000, entry
    finally:
        sw.close()

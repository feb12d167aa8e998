"""etherws.gso against super-frames the kernel really hands over.

Two TAPs opened with a virtio-net header and TCP segmentation offload, each moved into a
namespace of its own with an address, and a relay in this test that copies what one
TAP gives (header and all) into the other: a TCP stream from one namespace to the other
then crosses as 64 KiB super-frames. Every super-frame the relay saw is cut by
``gso.segment`` and each segment checked by scapy (lengths, IPv4 header and TCP
checksums); the segments' payloads must be the stream's bytes, in order.
"""

from __future__ import annotations

import os
import select
import subprocess
import threading
from collections.abc import Iterator

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from etherws import gso
from etherws.runtime import tuntap
from tests.support import PYTHON, SCALE, netns, run, unique
from tests.unit.test_gso import checked

A, B = "192.0.2.1", "192.0.2.2"
STREAM = 256 * 7813  # about 2 MB, whole runs of 0..255
SERVER = """
import socket, sys
s = socket.create_server((sys.argv[1], 5201))
c, _ = s.accept()
n = 0
while (chunk := c.recv(1 << 16)):
    n += len(chunk)
print(n)
"""
CLIENT = """
import socket, sys, time
end = time.monotonic() + 10
while True:
    try:
        c = socket.create_connection((sys.argv[1], 5201), timeout=5)
        break
    except OSError:
        if time.monotonic() > end:
            raise
        time.sleep(0.05)
data = bytes(range(256)) * (int(sys.argv[2]) // 256)
c.sendall(data)
c.close()
"""


class Relay(threading.Thread):
    """Copies frames, virtio-net header included, between two TAP fds; keeps what went
    from the first to the second."""

    def __init__(self, fd_a: int, fd_b: int) -> None:
        super().__init__(daemon=True)
        self.fds = (fd_a, fd_b)
        self.seen: list[bytes] = []
        self.stop = False

    def run(self) -> None:
        fd_a, fd_b = self.fds
        while not self.stop:
            ready, _, _ = select.select([fd_a, fd_b], [], [], 0.1)
            for fd in ready:
                try:
                    data = os.read(fd, 65536 + gso.VNET_HDR_LEN)
                except BlockingIOError:
                    continue
                if fd == fd_a:
                    self.seen.append(data)
                try:
                    os.write(fd_b if fd == fd_a else fd_a, data)
                except OSError:
                    pass  # a full queue: TCP sends it again


@pytest.fixture
def taps() -> Iterator[tuple[str, str, Relay]]:
    """Namespaces with a TSO-enabled TAP each, joined by the relay."""
    tag = unique("")
    with netns(f"etw-ga{tag}") as ns_a, netns(f"etw-gb{tag}") as ns_b:
        fds = []
        try:
            for ns, name, address in ((ns_a, f"etwga{tag}", A), (ns_b, f"etwgb{tag}", B)):
                fd = tuntap.attach_tap(name, vnet=True)
                fds.append(fd)
                got = tuntap.set_offload(fd, tuntap.TUN_F_CSUM | tuntap.TUN_F_TSO4
                                         | tuntap.TUN_F_TSO6)
                assert got & tuntap.TUN_F_TSO4, "this kernel has no TSO on TAPs"
                run("ip", "link", "set", name, "netns", ns)
                run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", name)
                run("ip", "-n", ns, "link", "set", name, "up")
            relay = Relay(fds[0], fds[1])
            relay.start()
            try:
                yield ns_a, ns_b, relay
            finally:
                relay.stop = True
                relay.join(timeout=5)
        finally:
            for fd in fds:
                os.close(fd)  # the TAPs are not persistent: they go with their fds


def test_kernel_super_frames_segment_into_the_stream(taps: tuple[str, str, Relay]) -> None:
    ns_a, ns_b, relay = taps
    server = subprocess.Popen(["ip", "netns", "exec", ns_b, PYTHON, "-c", SERVER, B],
                              stdout=subprocess.PIPE, text=True)
    try:
        run("ip", "netns", "exec", ns_a, PYTHON, "-c", CLIENT, B, str(STREAM),
            timeout_s=60 * SCALE)
        out, _ = server.communicate(timeout=30 * SCALE)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert int(out) == STREAM
    stream: dict[int, bytes] = {}
    supers = 0
    for data in relay.seen:
        h = gso.VnetHeader.unpack(data)
        frame = data[gso.VNET_HDR_LEN:]
        if Ether(frame).type != 0x0800 or TCP not in Ether(frame):
            continue
        if h.gso_type != gso.GSO_NONE:
            supers += 1
            assert h.flags & gso.NEEDS_CSUM and len(frame) > 1514
        for seg in gso.segment(frame, h):
            p = checked(seg)
            assert len(seg) <= 1514
            if p[TCP].dport == 5201 and len(p[TCP].payload):
                stream[p[TCP].seq] = bytes(p[TCP].payload)
        assert IP in Ether(frame)
    print(f"{len(relay.seen)} frames from the sending TAP, {supers} super-frames, the "
          f"largest {max(len(d) for d in relay.seen) - gso.VNET_HDR_LEN} bytes")
    assert supers > 0  # the kernel really handed over super-frames
    first = min(stream)
    data, at = b"", first
    while at in stream:  # retransmissions overwrite equal bytes: read in sequence
        data += stream[at]
        at = (at + len(stream[at])) & 0xFFFFFFFF
    expected = bytes(range(256)) * (STREAM // 256)
    assert data == expected[:len(data)] and len(data) == STREAM

"""The reference for one Python process: a TAP <-> TCP relay (asyncio, no switching).

``python -m benchlib.relay listen|connect ADDRESS PORT TAP`` relays every frame of the TAP
to the TCP peer and back, each as a 2-byte length and the frame: what a single Python
process reaches on this machine without isolation, learning or WebSocket framing. The
bench runs one on each host, like the OpenVPN path.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import struct
import sys
from pathlib import Path

import psutil

from benchlib.lab import UNDERLAY_B, Lab
from benchlib.paths import BenchPath, Roles, overlay_addresses, tap_pair, wait_reachable
from benchlib.proc import Background, in_ns

TUNSETIFF, IFF_TAP, IFF_NO_PI = 0x400454CA, 0x0002, 0x1000
LEN = struct.Struct("!H")


def open_tap(name: str) -> int:
    """A non-blocking fd on TAP ``name`` (created if missing)."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


async def relay(tap: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Frames both ways until the connection ends."""
    loop = asyncio.get_running_loop()

    def tap_readable() -> None:
        out: list[bytes] = []
        for _ in range(64):
            try:
                frame = os.read(tap, 65536)
            except BlockingIOError:
                break
            out += (LEN.pack(len(frame)), frame)
        writer.write(b"".join(out))
        if writer.transport.get_write_buffer_size() > 4 << 20:
            loop.remove_reader(tap)  # resumed once the socket drained
            asyncio.ensure_future(resume())

    async def resume() -> None:
        await writer.drain()
        loop.add_reader(tap, tap_readable)

    loop.add_reader(tap, tap_readable)
    try:
        while True:
            (n,) = LEN.unpack(await reader.readexactly(2))
            with contextlib.suppress(BlockingIOError, OSError):  # a full TAP queue drops
                os.write(tap, await reader.readexactly(n))
    except asyncio.IncompleteReadError:
        pass


async def serve(mode: str, address: str, port: int, tap_name: str) -> None:
    tap = open_tap(tap_name)
    if mode == "connect":
        reader, writer = await asyncio.open_connection(address, port)
    else:
        accepted: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = \
            asyncio.get_running_loop().create_future()
        server = await asyncio.start_server(lambda r, w: accepted.set_result((r, w)),
                                            address, port)
        print("listening", flush=True)
        reader, writer = await accepted
        server.close()
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    print("connected", flush=True)
    await relay(tap, reader, writer)


def relay_path(stack: contextlib.ExitStack, lab: Lab, index: int) -> BenchPath:
    """Start the relay pair of path ``index`` (host B listens), address the TAPs, wait for
    pings; stopping the relays goes on ``stack``."""
    addr_a, addr_b = overlay_addresses(index)
    port = str(7100 + index)
    taps = {"A": lab.ifname(f"r{index}a"), "B": lab.ifname(f"r{index}b")}
    here = str(Path(__file__).resolve().parents[1])
    relays: dict[str, Background] = {}
    for side, ns, mode, address in (("B", lab.ns_b, "listen", UNDERLAY_B),
                                    ("A", lab.ns_a, "connect", UNDERLAY_B)):
        cmd = in_ns(ns, "env", f"PYTHONPATH={here}", sys.executable, "-m", "benchlib.relay",
                    mode, address, port, taps[side])
        relays[side] = Background(cmd, Path(lab.work, f"relay-{side}.log"))
        stack.callback(relays[side].stop)
        if side == "B":
            lab_wait(relays["B"], "listening")
    lab_wait(relays["A"], "connected")
    mtu = tap_pair(lab, taps, (addr_a, addr_b))

    def processes() -> Roles:
        roles: Roles = []
        for side, daemon in relays.items():
            with contextlib.suppress(psutil.NoSuchProcess):
                proc = psutil.Process(daemon.pid)
                # ip netns exec / env exec the relay: the python process is the one
                roles.append((f"{side}:relay", proc))
        return roles

    path = BenchPath("relay", "one Python process per host: TAP <-> TCP (asyncio)",
                     addr_a, addr_b, mtu, processes)
    wait_reachable(path, lab.ns_a)
    return path


def lab_wait(daemon: Background, text: str) -> None:
    """Wait until the relay printed ``text``."""
    from benchlib.proc import BenchError, wait_until

    def said() -> bool:
        if text in daemon.log.read_text(errors="replace"):
            return True
        if not daemon.alive():
            raise BenchError(f"relay exited: {daemon.tail()}")
        return False
    wait_until(said, 20, f"the relay to say {text!r}")


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]))

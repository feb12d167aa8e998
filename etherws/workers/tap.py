"""The TAP port worker: a TAP device <-> the broker (I/O).

``python -m etherws.workers.tap --rundir R --parent-pid P --port N --slot S [log opts] NAME``

The supervisor creates the TAP persistent (``etherws.runtime.tuntap.create_persistent_tap``)
before it starts this worker; the worker only attaches, so after a restart it finds
the same device with its addresses, MTU and bridge membership. If the device does not
exist the kernel creates a non-persistent one, gone again when the worker exits.
Frames are raw Ethernet (IFF_NO_PI) behind a virtio-net header (IFF_VNET_HDR), with
checksum and TCP (and UDP, where the kernel has it) segmentation offload enabled: the
kernel hands over super-frames of up to 64 KiB and frames whose checksum is left to do,
and takes them back the same way (``etherws.gso``). In a Python relay between two TAPs
that carried 10-11.6 Gbit/s at 0.5-0.6 CPU s/GB against 0.9 Gbit/s at 8.8 CPU s/GB
without (tools/measure-tso, one run). ``--no-offload``: plain frames, no header.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys

from etherws import config
from etherws.frame import ETH_HLEN, MAX_FRAME
from etherws.gso import VNET_HDR_LEN, ZERO_HEADER
from etherws.ring import Ring
from etherws.runtime import tuntap
from etherws.workers.link import Medium, MediumClosed, worker_main, write_segments

log = logging.getLogger(__name__)

READ_SIZE = MAX_FRAME + 1
"""One byte more than the data plane carries, so an oversized frame shows as too long
(the loop counts it as an error) instead of arriving silently truncated."""

# tun_get_user() refuses a write with EIO while the interface is down and EINVAL for a
# frame shorter than an Ethernet header; EAGAIN/ENOBUFS are lack of room. All: a drop.
_WRITE_DROPS = frozenset({errno.EAGAIN, errno.ENOBUFS, errno.EIO, errno.EINVAL})
OFFLOADS = (tuntap.TUN_F_CSUM | tuntap.TUN_F_TSO4 | tuntap.TUN_F_TSO6 | tuntap.TUN_F_USO4
            | tuntap.TUN_F_USO6)


class TapMedium(Medium):
    """A non-blocking fd attached to a TAP, plus the device's kernel drop counter;
    ``offload``: with the virtio-net header and the kernel's offloads."""

    def __init__(self, name: str, offload: bool = True) -> None:
        self.name = name
        self.fd = tuntap.attach_tap(name, vnet=offload)
        self.offload = offload
        self._vnet = VNET_HDR_LEN if offload else 0
        try:  # a persistent TAP keeps what the last worker set: say it every time
            tuntap.set_offload(self.fd, OFFLOADS if offload else 0)
        except OSError as e:
            os.close(self.fd)
            raise OSError(e.errno, f"cannot set the offloads of TAP {name!r}: "
                                   f"{e.strerror}") from None
        # tun_net_xmit() drops frames when the fd's queue (txqueuelen) is full — which
        # is where drop-early leaves them — and counts them in the device's tx_dropped.
        self._stats_fd: int | None = None
        self._last_dropped = 0
        try:
            self._stats_fd = os.open(f"/sys/class/net/{name}/statistics/tx_dropped",
                                     os.O_RDONLY | os.O_CLOEXEC)
            self._last_dropped = self._read_dropped()
        except OSError as e:
            log.warning("no kernel drop counter for %s: %s", name, e.strerror)
            self._close_stats()

    def fileno(self) -> int:
        """The TAP fd."""
        return self.fd

    def read_batch(self, max_frames: int) -> list[bytes]:
        """Read frames until the queue is empty or ``max_frames``."""
        frames = []
        read, fd, size = os.read, self.fd, READ_SIZE + self._vnet
        try:
            for _ in range(max_frames):
                frames.append(read(fd, size))
        except BlockingIOError:
            pass
        except OSError as e:
            if e.errno == errno.EBADFD:  # tun_chr_read_iter(): the device was deleted
                raise MediumClosed(f"TAP {self.name} was deleted") from None
            raise
        return frames

    def read_into(self, ring: Ring, max_frames: int) -> tuple[int, int, int] | None:
        """Read frames straight into the ring's reserved records (no bytes object per
        frame, no second copy) until the queue is empty, the ring is full or
        ``max_frames``; a frame too short or too long is counted, not put."""
        readv, fd, reserve, put = os.readv, self.fd, ring.reserve, ring.put_reserved
        vnet = self._vnet
        low, high, size = ETH_HLEN + vnet, MAX_FRAME + vnet, READ_SIZE + vnet
        frames = nbytes = errors = 0
        try:
            for _ in range(max_frames):
                view = reserve(size)
                if view is None:
                    break
                n = readv(fd, (view,))
                if low <= n <= high:
                    put(n, 0, vnet)
                    frames += 1
                    nbytes += n - vnet
                else:
                    errors += 1
        except BlockingIOError:
            pass
        except OSError as e:
            if e.errno != errno.EBADFD:
                raise
            if not frames:  # tun_chr_read_iter(): the device was deleted
                raise MediumClosed(f"TAP {self.name} was deleted") from None
            # what was read before goes first; the next read raises
        return frames, nbytes, errors

    def write(self, frame: bytes | memoryview) -> bool:
        """Write one frame (behind a zero header with offload); False when the kernel
        refused it."""
        return self._writev((ZERO_HEADER, frame) if self.offload else (frame,))

    def write_vnet(self, header: bytes | memoryview, frame: bytes | memoryview) -> bool:
        """Write one frame behind its virtio-net header (one system call); False when the
        kernel refused it. A header it refuses (EINVAL) is done here instead."""
        return self._writev((header, frame))

    def _writev(self, parts: tuple[bytes | memoryview, ...]) -> bool:
        try:
            os.writev(self.fd, parts)
        except OSError as e:
            if e.errno == errno.EINVAL and len(parts) == 2 and parts[0] != ZERO_HEADER:
                return write_segments(self.write, parts[0], parts[1])
            if e.errno in _WRITE_DROPS:
                return False
            if e.errno == errno.EBADFD:
                raise MediumClosed(f"TAP {self.name} was deleted") from None
            raise
        return True

    def take_counts(self) -> tuple[int, int]:
        """``(0, frames the kernel dropped on the TAP's queue since the last call)``."""
        if self._stats_fd is None:
            return 0, 0
        try:
            now = self._read_dropped()
        except (OSError, ValueError):  # the device moved or vanished: stop asking
            self._close_stats()
            return 0, 0
        delta, self._last_dropped = now - self._last_dropped, now
        return 0, max(delta, 0)

    def _read_dropped(self) -> int:
        assert self._stats_fd is not None
        # A sysfs attribute is regenerated by each read from offset 0.
        return int(os.pread(self._stats_fd, 32, 0))

    def _close_stats(self) -> None:
        if self._stats_fd is not None:
            os.close(self._stats_fd)
            self._stats_fd = None

    def close(self) -> None:
        """Detach (the persistent device stays)."""
        self._close_stats()
        os.close(self.fd)


def _open(args: argparse.Namespace) -> TapMedium:
    return TapMedium(args.target, offload=not args.no_offload)


def main(argv: list[str] | None = None) -> int:
    """Run a TAP port worker; the exit status (see link.worker_main)."""
    return worker_main(argv, "etherws-tap-worker", "tap", _open,
                       lambda p: config.add_child_arguments(p, "tap"))


if __name__ == "__main__":
    sys.exit(main())

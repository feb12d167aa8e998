"""The netdev port worker: an existing interface <-> the broker, via AF_PACKET (I/O).

``python -m etherws.workers.netdev --rundir R --parent-pid P --port N --slot S [log opts] IFNAME``

How a switch joins an existing kernel bridge, OVS, a VXLAN or a NIC: the port is
"plugged into the interface's wire". Frames received on the interface enter the
switch; frames the switch sends leave through the interface.

- The interface is put in promiscuous mode (PACKET_MR_PROMISC membership: reference
  counted by the kernel and dropped when the socket closes, so a crashed worker leaves
  nothing behind), so frames for MACs behind the switch are seen.
- PACKET_IGNORE_OUTGOING (Linux 4.20): the socket does not see frames transmitted on
  the interface — neither its own nor the host's own traffic out of it.
- 802.1Q: the receive path strips VLAN tags into skb metadata (hardware rx-vlan offload,
  or ``skb_vlan_untag()`` in ``__netif_receive_skb_core`` before taps run), so a raw
  read returns the frame untagged. The tag is reported in PACKET_AUXDATA
  (TP_STATUS_VLAN_VALID, tp_vlan_tci, tp_vlan_tpid) and re-inserted here: the switch
  sees frames as they were on the wire. Tagged frames the switch sends go out as is.
- Kernel drops (receive buffer full, which is where drop-early leaves frames when the
  broker is slow) come from PACKET_STATISTICS and show as the port's drops.

Offloads (``etherws.gso``): the socket has PACKET_VNET_HDR, so every frame comes behind a
virtio-net header and goes out behind one. The interface keeps its offloads: a GRO
super-packet or a frame with a partial checksum (a veth's peer's own traffic) comes with
the header that says so, and travels on as such to the ports that take super-frames and
as wire frames to the others; a super-frame sent out is segmented by the kernel (in the
device, or in software if it cannot). A stripped 802.1Q tag put back moves the header's
offsets with it. With ``--no-offload`` the socket reads plain frames and the supervisor
turns GRO, GSO, TSO and the checksum offloads off on the interface instead
(``etherws.supervisor.offloads``): without the header, super-packets and partial checksums
are frames no port can use (those larger than the data plane carries are counted as
errors and dropped).
"""

from __future__ import annotations

import argparse
import errno
import logging
import socket
import struct
import sys

from etherws import config
from etherws.frame import MAX_FRAME
from etherws.gso import VNET_HDR_LEN, ZERO_HEADER, GsoError, shifted
from etherws.ifaddr import valid_ifname
from etherws.workers.link import Medium, MediumClosed, worker_main, write_segments

log = logging.getLogger(__name__)

# <linux/if_ether.h>, <linux/if_packet.h>, <asm-generic/socket.h>, <linux/if_arp.h>
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_STATISTICS = 6
PACKET_AUXDATA = 8
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
SO_RCVBUFFORCE = 33
ARPHRD_ETHER = 1
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
TPID_8021Q = 0x8100

RCVBUF = 4 * 1024 * 1024
"""Receive buffer: room for bursts while the loop is busy writing (SO_RCVBUFFORCE, root)."""

_MREQ = struct.Struct("iHH8s")  # struct packet_mreq
_AUXDATA = struct.Struct("IIIHHHH")  # struct tpacket_auxdata
_STATS = struct.Struct("II")  # struct tpacket_stats: tp_packets, tp_drops
_TAG = struct.Struct("!HH")
_ANC_SIZE = socket.CMSG_SPACE(_AUXDATA.size)

# packet_snd(): EMSGSIZE frame over the MTU, ENETDOWN interface down, ENXIO device
# gone (the read side notices and ends the worker), EINVAL frame shorter than the
# header; EAGAIN/ENOBUFS no room. All: a drop.
_WRITE_DROPS = frozenset({errno.EAGAIN, errno.ENOBUFS, errno.ENETDOWN, errno.EMSGSIZE,
                          errno.ENXIO, errno.EINVAL})


def vlan_tag(ancdata: list[tuple[int, int, bytes]]) -> bytes:
    """The 4-byte 802.1Q/802.1ad tag the kernel stripped into PACKET_AUXDATA, or b""."""
    for level, kind, data in ancdata:
        if level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= _AUXDATA.size:
            status, _len, _snap, _mac, _net, tci, tpid = _AUXDATA.unpack_from(data)
            if status & TP_STATUS_VLAN_VALID:
                # Kernels before 3.14 do not report the TPID: it was 802.1Q then.
                if not status & TP_STATUS_VLAN_TPID_VALID:
                    tpid = TPID_8021Q
                return _TAG.pack(tpid, tci)
    return b""


def _open_socket(name: str, vnet: bool) -> tuple[socket.socket, int]:
    """A bound, promiscuous, non-blocking packet socket on ``name`` (``vnet``: with
    PACKET_VNET_HDR) and its ifindex."""
    if not valid_ifname(name):
        raise OSError(errno.EINVAL, f"invalid interface name {name!r}")
    try:
        ifindex = socket.if_nametoindex(name)
    except OSError:
        raise OSError(errno.ENODEV, f"no interface {name!r}") from None
    # Protocol 0 until bind(): a socket created with ETH_P_ALL would see every
    # interface's frames in between.
    sock = socket.socket(socket.AF_PACKET,
                         socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, 0)
    try:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        if vnet:  # (the kernel refuses it once a packet ring is mapped: there is none)
            sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        sock.bind((name, ETH_P_ALL))
        hatype = sock.getsockname()[3]
        if hatype != ARPHRD_ETHER:
            raise OSError(errno.EINVAL, f"{name!r} is not an Ethernet interface "
                                        f"(ARPHRD type {hatype})")
        sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP,
                        _MREQ.pack(ifindex, PACKET_MR_PROMISC, 0, b""))
    except OSError as e:
        sock.close()
        if e.errno == errno.ENODEV:
            raise OSError(errno.ENODEV, f"no interface {name!r}") from None
        raise OSError(e.errno, f"cannot open interface {name!r}: {e.strerror}") from None
    return sock, ifindex


class NetdevMedium(Medium):
    """An AF_PACKET socket on one interface; ``offload``: with the virtio-net header."""

    def __init__(self, name: str, offload: bool = True) -> None:
        self.name = name
        self.sock, self.ifindex = _open_socket(name, offload)
        self.offload = offload
        self._errors = 0

    def fileno(self) -> int:
        """The packet socket's fd."""
        return self.sock.fileno()

    def read_batch(self, max_frames: int) -> list[bytes]:
        """Read frames (VLAN tags re-inserted) until none is waiting or ``max_frames``."""
        frames = []
        recvmsg = self.sock.recvmsg
        vnet = VNET_HDR_LEN if self.offload else 0
        for _ in range(max_frames):
            try:
                data, ancdata, flags, _addr = recvmsg(MAX_FRAME + vnet, _ANC_SIZE)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno != errno.ENETDOWN:
                    raise
                # packet_notifier() reports the interface going down, or away, once.
                self._check_still_there()
                break
            if flags & socket.MSG_TRUNC:  # a GRO super-packet or a jumbo over 64 KiB
                self._errors += 1
                continue
            tag = vlan_tag(ancdata)
            if not tag:
                frames.append(data)
            elif not vnet:
                frames.append(data[:12] + tag + data[12:])
            else:
                header = data[:vnet]
                if header != ZERO_HEADER:
                    try:
                        header = shifted(header, len(tag))
                    except GsoError:  # offsets past 64 KiB: cannot come from a kernel
                        self._errors += 1
                        continue
                frames.append(header + data[vnet:vnet + 12] + tag + data[vnet + 12:])
        return frames

    def _check_still_there(self) -> None:
        try:
            same = socket.if_nametoindex(self.name) == self.ifindex
        except OSError:
            same = False
        if not same:
            raise MediumClosed(f"interface {self.name} was deleted")
        log.info("interface %s went down", self.name)

    def write(self, frame: bytes | memoryview) -> bool:
        """Send one frame out of the interface (behind a zero header with offload); False
        when the kernel refused it."""
        return self._sendmsg((ZERO_HEADER, frame) if self.offload else (frame,))

    def write_vnet(self, header: bytes | memoryview, frame: bytes | memoryview) -> bool:
        """Send one frame behind its virtio-net header (one system call, no copy here);
        False when the kernel refused it. A header it refuses (EINVAL) is done here."""
        return self._sendmsg((header, frame))

    def _sendmsg(self, parts: tuple[bytes | memoryview, ...]) -> bool:
        try:
            self.sock.sendmsg(parts)
        except OSError as e:
            if e.errno == errno.EINVAL and len(parts) == 2 and parts[0] != ZERO_HEADER:
                return write_segments(self.write, parts[0], parts[1])
            if e.errno in _WRITE_DROPS:
                return False
            raise
        return True

    def take_counts(self) -> tuple[int, int]:
        """``(oversized frames, frames the kernel dropped)`` since the last call."""
        # PACKET_STATISTICS returns and resets the socket's counters.
        _packets, drops = _STATS.unpack(
            self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS.size))
        errors, self._errors = self._errors, 0
        return errors, drops

    def close(self) -> None:
        """Close the socket (the kernel drops its promiscuous membership)."""
        self.sock.close()


def _open(args: argparse.Namespace) -> NetdevMedium:
    return NetdevMedium(args.target, offload=not args.no_offload)


def main(argv: list[str] | None = None) -> int:
    """Run a netdev port worker; the exit status (see link.worker_main)."""
    return worker_main(argv, "etherws-netdev-worker", "netdev", _open,
                       lambda p: config.add_child_arguments(p, "netdev"))


if __name__ == "__main__":
    sys.exit(main())

"""Super-frames and their virtio-net header: checksum completion and segmentation (pure).

A TAP opened with IFF_VNET_HDR (or an AF_PACKET socket with PACKET_VNET_HDR) hands over
frames of up to 64 KiB behind a ``virtio_net_hdr`` (include/uapi/linux/virtio_net.h) and
takes them back the same way: one TCP or UDP super-frame where the wire carries dozens
of frames. Toward a port that cannot take one (a plain WebSocket peer, a device without
offload) it is cut here into wire-sized frames, as the kernel's GSO or wireguard-go's
``gsoSplit`` (tun/offload_linux.go) do: every segment gets the headers, its share of
the payload, its own IP length (and IPv4 id and header checksum), its TCP sequence
number (FIN and PSH only on the last) or UDP length, and its own transport checksum. A
frame whose checksum the sender left to the hardware (``NEEDS_CSUM``, GSO_NONE) gets it
completed.

Offsets in the header count from the start of the Ethernet frame (a TAP's do), an
802.1Q tag included. Everything here checks what it is given: a header that does not fit
its frame raises GsoError (the caller drops and counts it), never an IndexError.

The ones'-complement sum uses Python's big integers: a byte string read as one number is
congruent, modulo 0xffff, to the sum of its 16-bit words (2**16 = 1 mod 0xffff), so one
``int.from_bytes`` and one ``%`` sum a 64 KiB payload at C speed, some 40 times faster
than a loop over words (measured here: 0.15 ms against 6.3 ms for 64 KiB).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from etherws.errors import EtherwsError

VNET_HDR = struct.Struct("<BBHHHH")
VNET_HDR_LEN = VNET_HDR.size
"""10 bytes: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset."""

NEEDS_CSUM = 1
DATA_VALID = 2
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3
"""UDP fragmentation offload (UFO): IP fragments, not segments; never produced here."""
GSO_TCPV6 = 4
GSO_UDP_L4 = 5
GSO_ECN = 0x80

ETH_P_IP, ETH_P_IPV6, ETH_P_8021Q = 0x0800, 0x86DD, 0x8100
IPPROTO_TCP, IPPROTO_UDP = 6, 17
TCP_FIN, TCP_PSH = 0x01, 0x08
MAX_SEGMENTS = 256
"""More segments than a 64 KiB frame cut at the smallest sane size (256 bytes) gives."""


class GsoError(EtherwsError):
    """A virtio-net header that does not describe its frame; the frame is dropped."""


@dataclass(frozen=True, slots=True)
class VnetHeader:
    """A ``virtio_net_hdr``: what the sender left undone in its frame."""

    flags: int = 0
    gso_type: int = GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0

    def pack(self) -> bytes:
        """The 10 bytes of the header (little-endian, as the kernel's)."""
        return VNET_HDR.pack(self.flags, self.gso_type, self.hdr_len, self.gso_size,
                             self.csum_start, self.csum_offset)

    @staticmethod
    def unpack(data: bytes | bytearray | memoryview) -> VnetHeader:
        """A header from its first 10 bytes; GsoError when shorter."""
        if len(data) < VNET_HDR_LEN:
            raise GsoError(f"a virtio-net header of {len(data)} bytes")
        return VnetHeader(*VNET_HDR.unpack_from(data))

    @property
    def plain(self) -> bool:
        """Nothing left to do: a frame as any port may send it."""
        return self.gso_type == GSO_NONE and not self.flags & NEEDS_CSUM


PLAIN = VnetHeader()
ZERO_HEADER = bytes(VNET_HDR_LEN)
"""The header of a frame with nothing left undone (what a plain frame gets toward a port
that takes headers)."""


def parse(data: bytes | bytearray | memoryview) -> VnetHeader:
    """A header of exactly VNET_HDR_LEN bytes (what a ring record carries); GsoError else."""
    if len(data) != VNET_HDR_LEN:
        raise GsoError(f"a virtio-net header of {len(data)} bytes")
    return VnetHeader(*VNET_HDR.unpack_from(data))


def shifted(data: bytes | bytearray | memoryview, delta: int) -> bytes:
    """The header of a frame that grew by ``delta`` bytes in front of its network header
    (an 802.1Q tag added: +4, stripped: -4): its offsets move with the headers they
    point at. GsoError when it is not a header or an offset would fall before them."""
    h = parse(data)
    start = h.csum_start + delta if h.csum_start else 0
    hdr_len = h.hdr_len + delta if h.hdr_len else 0
    if start < 0 or hdr_len < 0 or start > 0xFFFF or hdr_len > 0xFFFF:
        raise GsoError(f"offsets {h.csum_start}/{h.hdr_len} cannot move by {delta}")
    return VNET_HDR.pack(h.flags, h.gso_type, hdr_len, h.gso_size, start, h.csum_offset)


def wire_frames(frame: bytes | memoryview, header: bytes | bytearray | memoryview
                ) -> list[bytes | memoryview]:
    """What a port that takes no header sends for ``frame`` and its virtio-net header:
    the frame itself when nothing was left undone, else its segments (or the frame with
    its checksum completed). GsoError when the header does not fit the frame."""
    h = parse(header)
    if h.plain:
        return [frame]
    return list(segment(frame, h))


def ones_sum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The 16-bit ones'-complement sum of ``data`` (padded to even) plus ``initial``."""
    n = len(data)
    value = int.from_bytes(data, "big") << (8 if n & 1 else 0)
    total = value % 0xFFFF + initial % 0xFFFF
    total = total % 0xFFFF
    # 0 and 0xffff are the same number in ones' complement; a sum of anything non-zero
    # is written 0xffff.
    return 0xFFFF if total == 0 and (value or initial) else total


def checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The Internet checksum of ``data`` (RFC 1071): the complement of ``ones_sum``."""
    return ~ones_sum(data, initial) & 0xFFFF


def l3_offset(frame: bytes | bytearray | memoryview) -> tuple[int, int]:
    """``(offset, ethertype)`` of the frame's network header (after one 802.1Q tag)."""
    if len(frame) < 14:
        raise GsoError("a frame shorter than an Ethernet header")
    etype = int.from_bytes(frame[12:14], "big")
    if etype == ETH_P_8021Q:
        if len(frame) < 18:
            raise GsoError("a tagged frame shorter than its tag")
        return 18, int.from_bytes(frame[16:18], "big")
    return 14, etype


def complete_checksum(frame: bytearray, h: VnetHeader) -> None:
    """Fill in the checksum a NEEDS_CSUM frame left undone: the sum from csum_start to
    the end, over the partial sum (the pseudo-header's) already in the field."""
    at = h.csum_start + h.csum_offset
    if not h.csum_start or at + 2 > len(frame) or h.csum_start >= len(frame):
        raise GsoError(f"checksum at {h.csum_start}+{h.csum_offset} in a frame of "
                       f"{len(frame)} bytes")
    initial = int.from_bytes(frame[at:at + 2], "big")
    frame[at:at + 2] = b"\0\0"  # the sum below is over the frame as it will be sent
    frame[at:at + 2] = checksum(memoryview(frame)[h.csum_start:], initial).to_bytes(2, "big")


def _pseudo(frame: bytes | bytearray, l3: int, v6: bool, proto: int, length: int) -> int:
    if v6:
        addrs = frame[l3 + 8:l3 + 40]
    else:
        addrs = frame[l3 + 12:l3 + 20]
    return ones_sum(addrs, proto + length)


def segment(frame: bytes | bytearray | memoryview, h: VnetHeader) -> list[bytes]:
    """The wire frames of a super-frame (TCP over IPv4/IPv6, or UDP with GSO_UDP_L4),
    each complete with its lengths and checksums. A GSO_NONE frame comes back as one
    frame, its checksum completed if NEEDS_CSUM. GsoError when ``h`` does not fit."""
    gso = h.gso_type & ~GSO_ECN
    if gso == GSO_NONE:
        one = bytearray(frame)
        if h.flags & NEEDS_CSUM:
            complete_checksum(one, h)
        return [bytes(one)]
    if gso not in (GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4):
        raise GsoError(f"GSO type {h.gso_type} is not segmented here")
    data = bytes(frame)
    l3, etype = l3_offset(data)
    v6 = etype == ETH_P_IPV6
    if etype not in (ETH_P_IP, ETH_P_IPV6):
        raise GsoError(f"a super-frame of ethertype {etype:#06x}")
    start, hdr_len, size = h.csum_start, h.hdr_len, h.gso_size
    tcp = gso != GSO_UDP_L4
    if (gso == GSO_TCPV4 and v6) or (gso == GSO_TCPV6 and not v6):
        raise GsoError("the GSO type does not match the IP version")
    l4_min = 20 if tcp else 8
    if not (l3 + (40 if v6 else 20) <= start and start + l4_min <= hdr_len < len(data)
            and h.csum_offset == (16 if tcp else 6) and size > 0):
        raise GsoError(f"headers {start}/{hdr_len}, segment {size} in {len(data)} bytes")
    if (len(data) - hdr_len + size - 1) // size > MAX_SEGMENTS:
        raise GsoError(f"{len(data) - hdr_len} bytes in segments of {size}")
    proto = data[l3 + 6] if v6 else data[l3 + 9]
    ip_end = l3 + 40 if v6 else l3 + (data[l3] & 15) * 4
    if proto != (IPPROTO_TCP if tcp else IPPROTO_UDP) or start != ip_end:
        raise GsoError("the transport header is not where the header says")
    head = bytearray(data[:hdr_len])
    csum_at = start + h.csum_offset
    head[csum_at:csum_at + 2] = b"\0\0"
    if not v6:
        head[l3 + 10:l3 + 12] = b"\0\0"
        ident = int.from_bytes(head[l3 + 4:l3 + 6], "big")
    seq = int.from_bytes(head[start + 4:start + 8], "big") if tcp else 0
    out = []
    pos = hdr_len
    i = 0
    while pos < len(data):
        end = min(pos + size, len(data))
        payload = data[pos:end]
        seg = bytearray(head)
        l4_len = hdr_len - start + len(payload)
        if v6:
            seg[l3 + 4:l3 + 6] = (hdr_len - l3 - 40 + len(payload)).to_bytes(2, "big")
        else:
            seg[l3 + 2:l3 + 4] = (hdr_len - l3 + len(payload)).to_bytes(2, "big")
            seg[l3 + 4:l3 + 6] = ((ident + i) & 0xFFFF).to_bytes(2, "big")
            seg[l3 + 10:l3 + 12] = checksum(seg[l3:start]).to_bytes(2, "big")
        if tcp:
            seg[start + 4:start + 8] = ((seq + i * size) & 0xFFFFFFFF).to_bytes(4, "big")
            if end != len(data):
                seg[start + 13] &= ~(TCP_FIN | TCP_PSH) & 0xFF
        else:
            seg[start + 4:start + 6] = l4_len.to_bytes(2, "big")
        seg += payload
        pseudo = _pseudo(seg, l3, v6, IPPROTO_TCP if tcp else IPPROTO_UDP, l4_len)
        value = checksum(memoryview(seg)[start:], pseudo)
        if not tcp and value == 0:
            value = 0xFFFF  # UDP: 0 means "no checksum" (RFC 768)
        seg[csum_at:csum_at + 2] = value.to_bytes(2, "big")
        out.append(bytes(seg))
        pos = end
        i += 1
    return out

"""Ethernet frame headers and MAC addresses (pure).

A frame is the bytes of one Ethernet frame as a TAP device or an AF_PACKET socket
delivers it: destination MAC first, no preamble, no FCS, an 802.1Q tag kept as is.
MAC addresses are 6 ``bytes`` inside etherws and text only at the edges (ctl).
"""

from __future__ import annotations

from typing import NewType

from etherws.errors import EtherwsError

Mac = NewType("Mac", bytes)

ETH_HLEN = 14
"""Shortest frame anyone may send: two MACs and an EtherType (the kernel refuses less)."""
MAX_FRAME = 65535
"""Longest frame the data plane carries (a TAP with MTU 65521 plus header and tag)."""
TPID_8021Q = b"\x81\x00"

ZERO_MAC = Mac(bytes(6))
_HEX = frozenset("0123456789abcdefABCDEF")
BROADCAST_MAC = Mac(b"\xff" * 6)


Frame = bytes | memoryview
"""A frame or part of one: bytes, or a view into the ring it is in."""

class FrameError(EtherwsError):
    """A frame too short or too long to switch."""


def header(frame: Frame) -> tuple[int, Frame, Frame]:
    """Return ``(vid, dst, src)`` of a frame; vid is 0 for an untagged frame.

    Raises FrameError for a frame shorter than an Ethernet header or longer than MAX_FRAME.
    """
    n = len(frame)
    if n < ETH_HLEN:
        raise FrameError(f"frame of {n} bytes is shorter than an Ethernet header")
    if n > MAX_FRAME:
        raise FrameError(f"frame of {n} bytes is longer than {MAX_FRAME}")
    vid = 0
    # bytes by index: comparing a memoryview slice with bytes costs ten times as much
    if frame[12] == 0x81 and frame[13] == 0x00 and n >= ETH_HLEN + 4:
        vid = ((frame[14] << 8) | frame[15]) & 0x0FFF
    return vid, frame[0:6], frame[6:12]


def is_group(mac: Frame) -> bool:
    """True for a multicast or broadcast address (I/G bit set)."""
    return bool(mac[0] & 1)


def is_learnable(mac: Frame) -> bool:
    """True when ``mac`` may be learned as a source: not a group address, not all-zero.

    Linux's bridge refuses the same sources (``is_valid_ether_addr``).
    """
    return not (mac[0] & 1) and any(mac)


def mac_to_text(mac: bytes) -> str:
    """``b"\\x02\\0\\0\\0\\0\\x01"`` -> ``"02:00:00:00:00:01"``."""
    if len(mac) != 6:
        raise FrameError(f"a MAC address has 6 bytes, not {len(mac)}")
    return mac.hex(":")


def mac_from_text(text: str) -> Mac:
    """Parse ``"02:00:00:00:00:01"`` (also ``-`` separated); raises ValueError."""
    parts = text.strip().replace("-", ":").split(":")
    if len(parts) != 6 or not all(1 <= len(p) <= 2 and all(c in _HEX for c in p)
                                  for p in parts):
        raise FrameError(f"not a MAC address: {text!r}")
    try:
        return Mac(bytes(int(p, 16) for p in parts))
    except ValueError:
        raise FrameError(f"not a MAC address: {text!r}") from None

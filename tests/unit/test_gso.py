"""etherws.gso against an independent implementation: scapy builds the super-frames the
kernel would hand over (checksum field holding the pseudo-header sum, NEEDS_CSUM) and
checks every segment's lengths and checksums; Hypothesis varies sizes, segment sizes,
TCP options, VLAN tags, IPv4 and IPv6, TCP and UDP."""

from __future__ import annotations

import dataclasses
import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet, Raw
from scapy.utils import checksum as scapy_checksum

from etherws import gso
from etherws.gso import GsoError, VnetHeader

SRC4, DST4 = "192.0.2.1", "198.51.100.2"
SRC6, DST6 = "2001:db8::1", "2001:db8:1::2"
TCP_OPTIONS = [[], [("MSS", 1460)], [("NOP", None), ("NOP", None), ("Timestamp", (7, 9))],
               [("SAckOK", b""), ("WScale", 7), ("NOP", None)]]


def pseudo_sum(v6: bool, src: str, dst: str, proto: int, length: int) -> int:
    """The folded pseudo-header sum, as the kernel leaves it in a CHECKSUM_PARTIAL field
    (computed with scapy's checksum, not etherws')."""
    import socket
    if v6:
        raw = (socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
               + struct.pack("!I3xB", length, proto))
    else:
        raw = (socket.inet_pton(socket.AF_INET, src) + socket.inet_pton(socket.AF_INET, dst)
               + struct.pack("!xBH", proto, length))
    return ~scapy_checksum(raw) & 0xFFFF


def super_frame(v6: bool, tcp: bool, vlan: int | None, payload: bytes, mss: int,
                options: list = (), flags: str = "PA") -> tuple[bytes, VnetHeader, Packet]:
    """A super-frame as a TAP hands it over, its header, and the scapy packet."""
    l2: Packet = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    if vlan is not None:
        l2 = l2 / Dot1Q(vlan=vlan)
    l3 = IPv6(src=SRC6, dst=DST6) if v6 else IP(src=SRC4, dst=DST4, id=65530, flags="DF")
    l4 = TCP(sport=40000, dport=5201, seq=0xFFFFF000, flags=flags, options=list(options)) \
        if tcp else UDP(sport=40000, dport=5201)
    pkt = l2 / l3 / l4 / Raw(payload)
    frame = bytearray(bytes(pkt))
    l2_len = 18 if vlan is not None else 14
    start = l2_len + (40 if v6 else 20)
    l4_hdr = len(l4)  # the layer alone: its header with options
    csum_at = start + (16 if tcp else 6)
    partial = pseudo_sum(v6, SRC6 if v6 else SRC4, DST6 if v6 else DST4,
                         6 if tcp else 17, len(frame) - start)
    frame[csum_at:csum_at + 2] = partial.to_bytes(2, "big")
    gso_type = (gso.GSO_TCPV6 if v6 else gso.GSO_TCPV4) if tcp else gso.GSO_UDP_L4
    h = VnetHeader(gso.NEEDS_CSUM, gso_type, start + l4_hdr, mss, start,
                   16 if tcp else 6)
    return bytes(frame), h, pkt


def checked(seg: bytes) -> Packet:
    """The segment parsed by scapy, after checking that scapy computes the same lengths
    and checksums for it."""
    p = Ether(seg)
    q = p.copy()
    for layer in (IP, TCP, UDP):
        if layer in q:
            if hasattr(q[layer], "chksum"):
                del q[layer].chksum
            if layer in (IP, UDP):
                del q[layer].len
    if IPv6 in q:
        del q[IPv6].plen
    again = Ether(bytes(q))
    assert bytes(again) == seg, (p.show(dump=True), again.show(dump=True))
    return p


@settings(max_examples=150, deadline=None)
@given(v6=st.booleans(), tcp=st.booleans(), vlan=st.none() | st.integers(1, 4094),
       size=st.integers(1, 20000), mss=st.integers(256, 9000),
       options=st.sampled_from(TCP_OPTIONS), fin=st.booleans())
def test_segments_are_whole_frames_that_add_up_to_the_super_frame(
        v6: bool, tcp: bool, vlan: int | None, size: int, mss: int, options: list,
        fin: bool) -> None:
    payload = os.urandom(size)
    frame, h, _ = super_frame(v6, tcp, vlan, payload, mss, options,
                              "FPA" if fin else "PA")
    segs = gso.segment(frame, h)
    assert len(segs) == -(-size // mss)
    parsed = [checked(s) for s in segs]
    l4 = TCP if tcp else UDP
    got = b"".join(bytes(p[l4].payload) for p in parsed)
    assert got == payload
    for i, p in enumerate(parsed):
        assert len(bytes(p[l4].payload)) == (mss if i < len(segs) - 1 else size - mss * i)
        if vlan is not None:
            assert p[Dot1Q].vlan == vlan
        if not v6:
            assert p[IP].id == (65530 + i) & 0xFFFF and p[IP].flags == "DF"
        if tcp:
            assert p[TCP].seq == (0xFFFFF000 + i * mss) & 0xFFFFFFFF  # wraps
            last = i == len(segs) - 1
            assert bool(p[TCP].flags & 0x08) == last  # PSH only on the last
            assert bool(p[TCP].flags & 0x01) == (fin and last)
            assert p[TCP].options == parsed[0][TCP].options


def test_a_frame_without_gso_gets_its_checksum_completed() -> None:
    payload = b"x" * 333
    frame, h, pkt = super_frame(False, True, None, payload, 1448)
    done = gso.segment(frame, VnetHeader(gso.NEEDS_CSUM, gso.GSO_NONE, 0, 0,
                                         h.csum_start, h.csum_offset))
    assert done == [bytes(pkt)]  # what scapy computed for the whole frame


def test_a_plain_frame_passes_unchanged() -> None:
    frame = bytes(Ether() / IP() / UDP() / Raw(b"abc"))
    assert gso.segment(frame, gso.PLAIN) == [frame] and gso.PLAIN.plain


def test_the_header_round_trips() -> None:
    h = VnetHeader(1, 4, 74, 1428, 54, 16)
    assert VnetHeader.unpack(h.pack() + b"rest") == h and len(h.pack()) == gso.VNET_HDR_LEN
    with pytest.raises(GsoError):
        VnetHeader.unpack(b"short")


@pytest.mark.parametrize("change, why", [
    ({"gso_size": 0}, "segment 0"),
    ({"csum_start": 20}, "headers"),
    ({"hdr_len": 40}, "headers"),
    ({"csum_offset": 6}, "headers"),
    ({"gso_type": gso.GSO_TCPV6}, "IP version"),
    ({"gso_type": gso.GSO_UDP}, "not segmented"),
    ({"gso_type": gso.GSO_UDP_L4}, "headers"),
    ({"gso_size": 1}, "segments of 1"),
])
def test_a_header_that_does_not_fit_its_frame_is_refused(change: dict, why: str) -> None:
    frame, h, _ = super_frame(False, True, None, b"y" * 4000, 1000)
    with pytest.raises(GsoError, match=why):
        gso.segment(frame, dataclasses.replace(h, **change))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.tuples(st.integers(0, 3), st.integers(0, 255),
                                          *[st.integers(0, 400)] * 4))
def test_anything_a_worker_sends_is_segmented_or_refused(data: bytes,
                                                         fields: tuple[int, ...]) -> None:
    try:
        out = gso.segment(data, VnetHeader(*fields))
    except GsoError:
        return
    assert all(isinstance(s, bytes) for s in out)


@given(st.binary(max_size=2000), st.integers(0, 0x1FFFF))
def test_ones_sum_matches_the_word_loop(data: bytes, initial: int) -> None:
    words = data + b"\0" * (len(data) & 1)
    total = initial
    for i in range(0, len(words), 2):
        total += int.from_bytes(words[i:i + 2], "big")
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    got = gso.ones_sum(data, initial)
    assert got == total or {got, total} == {0, 0xFFFF}
    assert gso.checksum(data) == scapy_checksum(data)


def test_wire_frames_passes_a_plain_frame_as_it_is_and_cuts_a_super_frame() -> None:
    frame = bytes(Ether() / IP() / UDP() / Raw(b"abc"))
    view = memoryview(frame)
    assert gso.wire_frames(view, gso.ZERO_HEADER)[0] is view  # no copy
    assert gso.wire_frames(view, VnetHeader(gso.DATA_VALID).pack())[0] is view
    big, h, _ = super_frame(False, True, None, os.urandom(5000), 1448)
    assert gso.wire_frames(big, h.pack()) == gso.segment(big, h)
    with pytest.raises(GsoError, match="12 bytes"):
        gso.wire_frames(big, h.pack() + b"xx")


@given(v6=st.booleans(), tcp=st.booleans(), size=st.integers(1, 6000),
       mss=st.integers(256, 1500))
@settings(max_examples=40, deadline=None)
def test_a_shifted_header_fits_the_frame_with_its_tag_added_or_removed(
        v6: bool, tcp: bool, size: int, mss: int) -> None:
    payload = os.urandom(size)
    untagged, h, _ = super_frame(v6, tcp, None, payload, mss)
    tagged, h_tagged, _ = super_frame(v6, tcp, 10, payload, mss)
    assert gso.shifted(h.pack(), 4) == h_tagged.pack()
    assert gso.shifted(h_tagged.pack(), -4) == h.pack()
    assert [s[:12] + s[16:] for s in gso.segment(tagged, gso.parse(gso.shifted(
        h.pack(), 4)))] == gso.segment(untagged, h)


def test_a_header_that_cannot_shift_is_refused() -> None:
    assert gso.shifted(gso.ZERO_HEADER, -4) == gso.ZERO_HEADER  # no offsets to move
    with pytest.raises(GsoError, match="cannot move"):
        gso.shifted(VnetHeader(gso.NEEDS_CSUM, 0, 0, 0, 2, 16).pack(), -4)
    with pytest.raises(GsoError, match="9 bytes"):
        gso.shifted(b"123456789", 4)

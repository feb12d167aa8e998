"""etherws.frame: Ethernet/802.1Q headers and MAC addresses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etherws import frame
from etherws.errors import EtherwsError
from etherws.frame import BROADCAST_MAC, ETH_HLEN, MAX_FRAME, ZERO_MAC, FrameError

DST = bytes.fromhex("ffffffffffff")
SRC = bytes.fromhex("020000000001")
macs = st.binary(min_size=6, max_size=6)


def eth(ethertype: bytes, payload: bytes = b"", dst: bytes = DST, src: bytes = SRC) -> bytes:
    """A frame from its parts."""
    return dst + src + ethertype + payload


# --- header --------------------------------------------------------------------------
@pytest.mark.parametrize("data, vid", [
    (eth(b"\x08\x00"), 0),                                   # untagged IPv4, header only
    (eth(b"\x08\x00", bytes(46)), 0),                        # untagged, minimum payload
    (eth(b"\x81\x00", b"\x00\x64\x08\x00"), 100),            # 802.1Q vid 100
    (eth(b"\x81\x00", b"\xe0\x64\x08\x00"), 100),            # priority bits are not the vid
    (eth(b"\x81\x00", b"\x1f\xff\x08\x00"), 0xFFF),          # DEI bit masked off too
    (eth(b"\x81\x00", b"\x00\x00\x08\x00"), 0),              # priority-tagged: vid 0
    (eth(b"\x81\x00", b"\x00\x64\x08"), 0),                  # tag cut short: untagged
    (eth(b"\x81\x00"), 0),                                   # TPID and nothing else
    (eth(b"\x88\xa8", b"\x00\x64\x81\x00\x00\xc8"), 0),      # QinQ outer tag: not parsed
    (eth(b"\x08\x00", bytes(MAX_FRAME - ETH_HLEN)), 0),      # the longest frame
])
def test_header(data: bytes, vid: int) -> None:
    assert frame.header(data) == (vid, DST, SRC)


@pytest.mark.parametrize("n", [0, 1, 6, 12, ETH_HLEN - 1, MAX_FRAME + 1, 2 * MAX_FRAME])
def test_header_refuses_short_and_long_frames(n: int) -> None:
    with pytest.raises(FrameError):
        frame.header(bytes(n))


def test_frame_error_is_ours_not_a_value_error() -> None:
    assert issubclass(FrameError, EtherwsError) and not issubclass(FrameError, ValueError)


@given(st.binary(min_size=ETH_HLEN, max_size=200))
def test_header_property(data: bytes) -> None:
    vid, dst, src = frame.header(data)
    assert (dst, src) == (data[:6], data[6:12])
    assert 0 <= vid <= 0xFFF
    if vid:
        assert data[12:14] == b"\x81\x00" and len(data) >= ETH_HLEN + 4


@given(st.integers(0, 0xFFF), st.integers(0, 7), st.binary(max_size=64))
def test_tagged_vid_property(vid: int, pcp: int, payload: bytes) -> None:
    tci = (pcp << 13) | vid
    assert frame.header(eth(b"\x81\x00", tci.to_bytes(2, "big") + b"\x08\x00" + payload))[0] == vid


# --- group and learnable addresses ---------------------------------------------------
@pytest.mark.parametrize("mac, group, learnable", [
    (BROADCAST_MAC, True, False),
    (bytes.fromhex("01005e000001"), True, False),     # IPv4 multicast
    (bytes.fromhex("333300000001"), True, False),     # IPv6 multicast
    (bytes.fromhex("0180c2000000"), True, False),     # STP
    (ZERO_MAC, False, False),                         # never a source
    (bytes.fromhex("020000000001"), False, True),     # locally administered unicast
    (bytes.fromhex("001122334455"), False, True),     # universal unicast
    (bytes.fromhex("fe0000000000"), False, True),
])
def test_group_and_learnable(mac: bytes, group: bool, learnable: bool) -> None:
    assert frame.is_group(mac) is group
    assert frame.is_learnable(mac) is learnable


@given(macs)
def test_group_and_learnable_property(mac: bytes) -> None:
    assert frame.is_group(mac) == bool(mac[0] & 1)
    assert frame.is_learnable(mac) == (not mac[0] & 1 and mac != bytes(6))


# --- MAC text --------------------------------------------------------------------------
@pytest.mark.parametrize("text, mac", [
    ("02:00:00:00:00:01", "020000000001"),
    ("ff:ff:ff:ff:ff:ff", "ffffffffffff"),
    ("FF:FF:FF:FF:FF:FE", "fffffffffffe"),
    ("02-00-00-00-00-01", "020000000001"),
    ("2:0:0:0:0:1", "020000000001"),
    ("  0a:0b:0c:0d:0e:0f\n", "0a0b0c0d0e0f"),
])
def test_mac_from_text(text: str, mac: str) -> None:
    assert frame.mac_from_text(text) == bytes.fromhex(mac)


@pytest.mark.parametrize("text", [
    "", ":", "02:00:00:00:00", "02:00:00:00:00:01:02", "02:00:00:00:00:01:",
    "02::00:00:00:01", "002:00:00:00:00:01", "02:00:00:00:00:0g", "020000000001",
    "0200.0000.0001", "zz:zz:zz:zz:zz:zz", "0x:00:00:00:00:01", "02:00:00:00:00:-1",
])
def test_mac_from_text_rejects(text: str) -> None:
    with pytest.raises(frame.FrameError):
        frame.mac_from_text(text)


@pytest.mark.parametrize("text", ["+2:00:00:00:00:01", "02: 0:00:00:00:01", "02:0 :00:00:00:01"])
def test_mac_from_text_rejects_signs_and_blanks(text: str) -> None:
    with pytest.raises(frame.FrameError):
        frame.mac_from_text(text)


@pytest.mark.parametrize("mac", [b"", bytes(5), bytes(7)])
def test_mac_to_text_rejects_wrong_length(mac: bytes) -> None:
    with pytest.raises(frame.FrameError):
        frame.mac_to_text(mac)


def test_mac_to_text() -> None:
    assert frame.mac_to_text(bytes.fromhex("0200000000ab")) == "02:00:00:00:00:ab"


@given(macs)
def test_mac_text_round_trip(mac: bytes) -> None:
    text = frame.mac_to_text(mac)
    assert len(text) == 17 and text == text.lower()
    assert frame.mac_from_text(text) == mac
    assert frame.mac_from_text(text.upper().replace(":", "-")) == mac

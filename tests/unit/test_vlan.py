"""etherws.vlan: the 802.1Q rules of a port, as a table of cases and as properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etherws import vlan
from etherws.frame import header
from etherws.vlan import ALL_VIDS, TRANSPARENT, Mode, Out, PortVlan, VlanError

DST = bytes.fromhex("ffffffffffff")
SRC = bytes.fromhex("020000000001")
PAYLOAD = b"\x08\x00" + bytes(range(46))


def untagged() -> bytes:
    return DST + SRC + PAYLOAD


def tagged(vid: int, pcp: int = 0) -> bytes:
    return DST + SRC + b"\x81\x00" + ((pcp << 13) | vid).to_bytes(2, "big") + PAYLOAD


ACCESS10 = vlan.access(10)
TRUNK = vlan.trunk({10, 20})
TRUNK_NATIVE = vlan.trunk({10, 20}, native=1)
TRUNK_ALL = vlan.trunk(ALL_VIDS)


# --- ingress --------------------------------------------------------------------------------
@pytest.mark.parametrize("port, frame, vid", [
    (TRANSPARENT, untagged(), 0),
    (TRANSPARENT, tagged(0), 0),
    (TRANSPARENT, tagged(10), 10),
    (TRANSPARENT, tagged(4095), 4095),
    (ACCESS10, untagged(), 10),
    (ACCESS10, tagged(0, pcp=5), 10),      # a priority tag counts as untagged
    (ACCESS10, tagged(10), None),          # tagged frames are dropped, even of its VLAN
    (ACCESS10, tagged(20), None),
    (TRUNK, untagged(), None),             # no native VLAN
    (TRUNK, tagged(0), None),
    (TRUNK, tagged(10), 10),
    (TRUNK, tagged(20), 20),
    (TRUNK, tagged(30), None),
    (TRUNK, tagged(4095), None),
    (TRUNK_NATIVE, untagged(), 1),
    (TRUNK_NATIVE, tagged(0), 1),
    (TRUNK_NATIVE, tagged(1), 1),          # the native VLAN tagged is still that VLAN
    (TRUNK_NATIVE, tagged(10), 10),
    (TRUNK_NATIVE, tagged(30), None),
    (TRUNK_ALL, tagged(4094), 4094),
    (TRUNK_ALL, untagged(), None),
    (ACCESS10, DST + SRC + b"\x81\x00", 10),  # too short for a tag: untagged
])
def test_classify(port: PortVlan, frame: bytes, vid: int | None) -> None:
    assert port.classify(frame) == vid


# --- egress ---------------------------------------------------------------------------------
@pytest.mark.parametrize("port, vid, out", [
    (TRANSPARENT, 0, Out.AS_IS),
    (TRANSPARENT, 10, Out.TAGGED),
    (ACCESS10, 10, Out.UNTAGGED),
    (ACCESS10, 0, None),
    (ACCESS10, 20, None),
    (TRUNK, 10, Out.TAGGED),
    (TRUNK, 0, None),
    (TRUNK, 30, None),
    (TRUNK_NATIVE, 1, Out.UNTAGGED),
    (TRUNK_NATIVE, 20, Out.TAGGED),
    (TRUNK_ALL, 4094, Out.TAGGED),
    (TRUNK_ALL, 0, None),
])
def test_egress(port: PortVlan, vid: int, out: Out | None) -> None:
    assert port.egress(vid) == out


@pytest.mark.parametrize("frame, out, vid, want", [
    (untagged(), Out.AS_IS, 0, untagged()),
    (tagged(10), Out.AS_IS, 10, tagged(10)),
    (untagged(), Out.UNTAGGED, 10, untagged()),
    (tagged(10), Out.UNTAGGED, 10, untagged()),
    (tagged(0, pcp=3), Out.UNTAGGED, 10, untagged()),
    (untagged(), Out.TAGGED, 10, tagged(10)),
    (tagged(10, pcp=6), Out.TAGGED, 10, tagged(10, pcp=6)),   # kept as it is
    (tagged(0, pcp=6), Out.TAGGED, 10, tagged(10, pcp=6)),    # priority kept
])
def test_rewrite(frame: bytes, out: Out, vid: int, want: bytes) -> None:
    assert bytes(vlan.rewrite(frame, out, vid)) == want
    assert bytes(vlan.rewrite(memoryview(frame), out, vid)) == want


def test_rewrite_returns_the_frame_itself_when_nothing_changes() -> None:
    f = memoryview(tagged(10))
    assert vlan.rewrite(f, Out.TAGGED, 10) is f
    assert vlan.rewrite(f, Out.AS_IS, 10) is f


# --- settings -------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda: vlan.access(0), lambda: vlan.access(4095), lambda: vlan.trunk(set()),
    lambda: vlan.trunk({0}), lambda: vlan.trunk({10}, native=4095),
    lambda: PortVlan(Mode.ACCESS, 10, frozenset({20})), lambda: PortVlan(Mode.TRANSPARENT, 5),
])
def test_bad_settings(make: object) -> None:
    with pytest.raises(VlanError):
        make()  # type: ignore[operator]


def test_a_trunk_of_its_native_vlan_only_is_fine() -> None:
    t = vlan.trunk((), native=7)
    assert t.classify(untagged()) == 7 and t.egress(7) is Out.UNTAGGED and t.egress(8) is None


@pytest.mark.parametrize("text, vids", [
    ("10", {10}), ("10,20", {10, 20}), (" 30-32 ,1", {1, 30, 31, 32}), ("all", ALL_VIDS),
    ("ALL", ALL_VIDS), ("1-4094", ALL_VIDS),
])
def test_parse_vids(text: str, vids: set[int]) -> None:
    assert vlan.parse_vids(text) == vids


@pytest.mark.parametrize("text", ["", "0", "4095", "x", "10,", "20-10", "1-2-3", "-1", "1.5"])
def test_parse_vids_refuses(text: str) -> None:
    with pytest.raises(VlanError):
        vlan.parse_vids(text)


@pytest.mark.parametrize("vids, text", [({10}, "10"), ({1, 2, 3, 7}, "1-3,7"),
                                        (ALL_VIDS, "all"), ({4094, 1}, "1,4094")])
def test_format_vids(vids: set[int], text: str) -> None:
    assert vlan.format_vids(vids) == text


@pytest.mark.parametrize("port, text", [
    (TRANSPARENT, "-"), (ACCESS10, "access 10"), (TRUNK, "trunk 10,20"),
    (TRUNK_NATIVE, "trunk 10,20 native 1"), (vlan.trunk((), 3), "trunk - native 3"),
])
def test_describe(port: PortVlan, text: str) -> None:
    assert port.describe() == text


# --- properties -----------------------------------------------------------------------------
vids = st.integers(vlan.MIN_VID, vlan.MAX_VID)
ports = st.one_of(
    st.just(TRANSPARENT),
    vids.map(vlan.access),
    st.builds(vlan.trunk, st.frozensets(vids, min_size=1, max_size=8),
              st.one_of(st.just(0), vids)),
)
frames = st.one_of(
    st.binary(min_size=14, max_size=80),
    st.builds(lambda v, p, body: tagged(v, p)[:14] + body, st.integers(0, 4095),
              st.integers(0, 7), st.binary(min_size=2, max_size=40)),
)


@given(ports)
def test_words_round_trip(port: PortVlan) -> None:
    assert PortVlan.from_words(port.word(), port.bitmap()) == port


@given(st.integers(0, 2**64 - 1), st.lists(st.integers(0, 2**64 - 1), min_size=64,
                                           max_size=64))
def test_any_words_read_as_some_valid_setting(word: int, bitmap: list[int]) -> None:
    port = PortVlan.from_words(word, bitmap)
    assert PortVlan(port.mode, port.vid, port.vids) == port


@given(st.frozensets(st.integers(0, 4095)))
def test_bitmap_round_trip(v: frozenset[int]) -> None:
    assert vlan.bitmap_to_vids(vlan.vids_to_bitmap(v)) == v


@given(st.frozensets(vids, min_size=1))
def test_vids_text_round_trip(v: frozenset[int]) -> None:
    assert vlan.parse_vids(vlan.format_vids(v)) == v


@given(ports, ports, frames)
def test_a_frame_leaves_in_the_vlan_it_came_in(a: PortVlan, b: PortVlan, frame: bytes) -> None:
    vid = a.classify(frame)
    if vid is None:
        return
    out = b.egress(vid)
    if out is None:
        return
    sent = bytes(vlan.rewrite(frame, out, vid))
    tag = vlan.tag_of(sent)
    if out is Out.UNTAGGED:
        assert tag is None
        assert b.classify(sent) == vid  # and it comes back into the same VLAN
    elif out is Out.TAGGED:
        assert tag == vid
        assert b.classify(sent) == vid
    else:
        assert sent == frame and vid == 0
    assert header(sent)[1:] == header(frame)[1:]  # the addresses are kept
    # the payload after the tag is kept
    body = frame[16:] if vlan.tag_of(frame) is not None else frame[12:]
    assert sent.endswith(bytes(body))


@given(ports, frames)
def test_only_member_vlans_come_in(port: PortVlan, frame: bytes) -> None:
    vid = port.classify(frame)
    if vid is not None and not port.transparent:
        assert port.egress(vid) is not None

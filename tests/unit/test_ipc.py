"""etherws.ipc: the worker <-> broker batch format."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etherws import ipc
from etherws.errors import EtherwsError
from etherws.ipc import MAX_BATCH_FRAMES, VERSION, IpcError

frames_ = st.lists(st.binary(min_size=1, max_size=1600), max_size=MAX_BATCH_FRAMES)


def msg(*parts: bytes) -> bytes:
    """A message from raw parts after the version byte."""
    return bytes([VERSION]) + b"".join(parts)


def lp(data: bytes) -> bytes:
    """A length-prefixed frame."""
    return struct.pack("!H", len(data)) + data


# --- pack / unpack ---------------------------------------------------------------------
@given(frames_)
def test_round_trip(frames: list[bytes]) -> None:
    assert ipc.unpack(ipc.pack(frames)) == frames


def test_layout() -> None:
    assert ipc.pack([b"ab", b"c"]) == b"\x01\x00\x02ab\x00\x01c"
    assert ipc.pack([]) == b"\x01"
    assert ipc.unpack(b"\x01") == []


def test_largest_frames_and_batch() -> None:
    big = b"\xaa" * 65535
    assert ipc.unpack(ipc.pack([big])) == [big]
    full = ipc.pack([big] * MAX_BATCH_FRAMES)
    assert len(full) == ipc.MAX_MESSAGE
    assert len(ipc.unpack(full)) == MAX_BATCH_FRAMES


@pytest.mark.parametrize("message", [
    b"",                                    # empty
    b"\x00",                                # version 0
    bytes([VERSION + 1]) + lp(b"x"),        # a newer version
    msg(b"\x00"),                           # half a length prefix
    msg(lp(b"x"), b"\x00"),                 # half a length prefix after a frame
    msg(b"\x00\x00"),                       # zero-length frame
    msg(lp(b"x"), b"\x00\x00"),             # zero-length frame after a good one
    msg(b"\x00\x05abc"),                    # frame runs past the end
    msg(b"\xff\xff" + bytes(100)),          # long frame, short message
    msg(lp(b"x") * (MAX_BATCH_FRAMES + 1)),  # too many frames
])
def test_unpack_rejects(message: bytes) -> None:
    with pytest.raises(IpcError):
        ipc.unpack(message)


def test_ipc_error_is_ours_not_a_value_error() -> None:
    assert issubclass(IpcError, EtherwsError) and not issubclass(IpcError, ValueError)


@given(st.binary(max_size=300))
def test_unpack_any_bytes(message: bytes) -> None:
    # Whatever arrives: frames that pack back to the very same message, or IpcError.
    try:
        frames = ipc.unpack(message)
    except IpcError:
        return
    assert ipc.pack(frames) == message


@given(st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=8), st.data())
def test_truncated_message_is_rejected(frames: list[bytes], data: st.DataObject) -> None:
    whole = ipc.pack(frames)
    boundaries = {1}
    off = 1
    for f in frames:
        off += 2 + len(f)
        boundaries.add(off)
    cut = data.draw(st.integers(0, len(whole) - 1).filter(lambda n: n not in boundaries))
    with pytest.raises(IpcError):
        ipc.unpack(whole[:cut])


@pytest.mark.parametrize("frames", [
    [b""], [b"\0" * 65536], [b"x"] * (MAX_BATCH_FRAMES + 1),
], ids=["empty-frame", "oversize-frame", "too-many-frames"])
def test_pack_refuses_what_unpack_rejects(frames: list[bytes]) -> None:
    with pytest.raises(IpcError):
        ipc.pack(frames)


# --- routing ids -----------------------------------------------------------------------
def test_routing_id() -> None:
    assert ipc.routing_id(1) == b"p\x00\x00\x00\x01"
    assert ipc.routing_id(0x01020304) == b"p\x01\x02\x03\x04"


@given(st.integers(0, 2**32 - 1))
def test_routing_id_round_trip(port: int) -> None:
    assert ipc.port_of(ipc.routing_id(port)) == port


@pytest.mark.parametrize("rid", [
    b"", b"p", b"p\x00\x00\x01", b"p\x00\x00\x00\x00\x01", b"q\x00\x00\x00\x01",
    b"\x00\x00\x00\x00\x01", b"P\x00\x00\x00\x01",
])
def test_port_of_rejects(rid: bytes) -> None:
    with pytest.raises(IpcError):
        ipc.port_of(rid)


@given(st.lists(st.integers(min_value=1, max_value=65535), max_size=200))
def test_batches_keep_order_and_respect_both_limits(sizes: list[int]) -> None:
    frames = [bytes([i % 256]) * n for i, n in enumerate(sizes)]
    out = list(ipc.batches(frames))
    assert [f for b in out for f in b] == frames
    for b in out:
        assert 1 <= len(b) <= ipc.MAX_BATCH_FRAMES
        assert sum(map(len, b)) <= ipc.MAX_BATCH_BYTES or len(b) == 1
        ipc.unpack(ipc.pack(b))  # every batch is a valid message
    if frames and len(frames) <= ipc.MAX_BATCH_FRAMES \
            and sum(sizes) <= ipc.MAX_BATCH_BYTES:
        assert out[0] is frames  # the common case is not copied


def test_batches_cut_jumbo_frames_by_bytes() -> None:
    jumbo = [b"j" * 9014] * 64
    out = list(ipc.batches(jumbo))
    per = ipc.MAX_BATCH_BYTES // 9014
    assert [len(b) for b in out] == [per] * (64 // per) + ([64 % per] if 64 % per else [])
    x, y = b"x" * 65535, b"y" * 10
    assert ipc.MAX_BATCH_BYTES < 3 * len(x)
    assert list(ipc.batches([x, x, x, y])) == [[x, x], [x, y]]

"""etherws.wsframe: the RFC 6455 frame codec of the tunnel data path.

Frames that must be refused are built by hand (``raw``), not with ``frame()``, so
the decoder is never checked only against its own encoder. "server" decoders read
masked frames (sent by a client), "client" decoders unmasked ones (RFC 6455 §5.1).
"""

from __future__ import annotations

import ast
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etherws import wsframe
from etherws.wsframe import (
    Close,
    CloseCode,
    Decoder,
    Opcode,
    Ping,
    Pong,
    ProtocolError,
    Text,
    binary_batch,
    close_payload,
    frame,
    parse_close,
)

KEY = b"\x37\xfa\x21\x3d"  # the key of the RFC 6455 §5.7 examples
ROLES = ["server", "client"]
BIG = 1 << 20
Masker = Callable[[bytes | bytearray | memoryview, bytes | bytearray], bytes]
MASKERS: list[Masker] = [wsframe._mask_python]
if wsframe.HAVE_C_MASK:
    MASKERS.append(wsframe._mask_c)


def ref_mask(data: bytes, key: bytes) -> bytes:
    """RFC 6455 §5.3, byte by byte: octet i XOR key[i mod 4]."""
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


def key_for(role: str) -> bytes | None:
    """The key a peer uses when it sends to a decoder of ``role`` (§5.1)."""
    return KEY if role == "server" else None


def raw(b0: int, payload: bytes, key: bytes | None, length: int | None = None) -> bytes:
    """A frame built by hand, any header allowed; ``length`` overrides the real one."""
    n = len(payload) if length is None else length
    m = 0x80 if key is not None else 0
    if n < 126:
        head = bytes([b0, m | n])
    elif n < 65536:
        head = bytes([b0, m | 126]) + struct.pack("!H", n)
    else:
        head = bytes([b0, m | 127]) + struct.pack("!Q", n)
    return head + (key + ref_mask(payload, key) if key is not None else payload)


def enc(role: str, op: int, payload: bytes, fin: bool = True) -> bytes:
    """A valid frame sent to a decoder of ``role``."""
    return frame(op, payload, key_for(role), fin)


def feed_all(dec: Decoder, chunks: list[bytes]) -> list[bytes]:
    """Feed every chunk, collecting the binary messages."""
    out: list[bytes] = []
    for c in chunks:
        out += dec.feed(c)
    return out


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def error_code(role: str, chunks: list[bytes], max_message: int = BIG) -> int:
    """The close code of the ProtocolError the chunks raise (fails if none)."""
    dec = Decoder(role, max_message)
    with pytest.raises(ProtocolError) as info:
        feed_all(dec, chunks)
    with pytest.raises(ProtocolError):  # a failed decoder stays failed
        dec.feed(enc(role, Opcode.BINARY, b"x"))
    return info.value.code


# --- purity ------------------------------------------------------------------------------
def test_imports_nothing_that_does_io() -> None:
    # Deciding code does no I/O; tests/unit/test_purity.py checks every pure module the same way.
    tree = ast.parse(Path(wsframe.__file__).read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert names <= {"__future__", "codecs", "struct", "collections.abc", "dataclasses",
                     "enum", "websockets.speedups", "etherws.errors"}


# --- encoding ----------------------------------------------------------------------------
@pytest.mark.parametrize(("op", "payload", "key", "fin", "wire"), [
    # RFC 6455 §5.7, examples 1-5
    (Opcode.TEXT, b"Hello", None, True, b"\x81\x05Hello"),
    (Opcode.TEXT, b"Hello", KEY, True, bytes.fromhex("818537fa213d7f9f4d5158")),
    (Opcode.TEXT, b"Hel", None, False, b"\x01\x03Hel"),
    (Opcode.CONTINUATION, b"lo", None, True, b"\x80\x02lo"),
    (Opcode.PING, b"Hello", None, True, b"\x89\x05Hello"),
    (Opcode.PONG, b"Hello", KEY, True, bytes.fromhex("8a8537fa213d7f9f4d5158")),
    (Opcode.BINARY, bytes(256), None, True, b"\x82\x7e\x01\x00" + bytes(256)),
    (Opcode.BINARY, bytes(65536), None, True,
     b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00" + bytes(65536)),
    (Opcode.CLOSE, b"", None, True, b"\x88\x00"),
])
def test_rfc_examples(op: int, payload: bytes, key: bytes | None, fin: bool,
                      wire: bytes) -> None:
    assert frame(op, payload, key, fin) == wire


@pytest.mark.parametrize(("op", "payload", "key", "fin"), [
    (3, b"", None, True),                       # reserved opcode
    (Opcode.PING, bytes(126), None, True),       # control frames carry <= 125 bytes (§5.5)
    (Opcode.CLOSE, b"\x03\xe8", None, False),    # and are never fragmented
    (Opcode.BINARY, b"x", b"abc", True),         # a key is 4 bytes
])
def test_frame_refuses(op: int, payload: bytes, key: bytes | None, fin: bool) -> None:
    with pytest.raises(ValueError):
        frame(op, payload, key, fin)


@pytest.mark.parametrize("masked", [False, True])
def test_binary_batch_is_concatenated_frames(masked: bool) -> None:
    payloads = [b"", b"a", bytes(range(256)) * 6, bytes(70000)]
    keys = [bytes([i, 1, 2, 3]) for i in range(4)] if masked else None
    expected = b"".join(frame(Opcode.BINARY, p, keys[i] if keys else None)
                        for i, p in enumerate(payloads))
    assert binary_batch(payloads, keys) == expected
    assert Decoder("server" if masked else "client", BIG).feed(expected) == payloads
    assert binary_batch([], None) == b""


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=300), cut=st.integers(0, 300), masked=st.booleans(),
       key=st.binary(min_size=4, max_size=4))
def test_a_payload_in_two_parts_is_the_message_of_the_joined_parts(
        data: bytes, cut: int, masked: bool, key: bytes) -> None:
    from etherws.wsframe import append_binary_batch
    keys = [key, KEY] if masked else None
    out = bytearray(b"before")
    head, rest = data[:cut], memoryview(data)[cut:]
    append_binary_batch(out, [(head, rest), b"next"], keys)
    assert bytes(out) == b"before" + binary_batch([data, b"next"], keys)


def test_binary_batch_refuses_bad_keys() -> None:
    with pytest.raises(ValueError):
        binary_batch([b"a", b"b"], [KEY])
    with pytest.raises(ValueError):
        binary_batch([b"a"], [b"abc"])


# --- masking -----------------------------------------------------------------------------
@pytest.mark.parametrize("masker", MASKERS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 7, 8, 125, 1514, 65536])
def test_mask_matches_reference(masker: Masker, n: int) -> None:
    data = bytes((i * 7 + 3) & 0xFF for i in range(n))
    assert masker(data, KEY) == ref_mask(data, KEY)
    assert masker(memoryview(b"xy" + data)[2:], bytearray(KEY)) == ref_mask(data, KEY)


@given(st.binary(max_size=2000), st.binary(min_size=4, max_size=4))
def test_mask_property(data: bytes, key: bytes) -> None:
    for masker in MASKERS:
        assert masker(data, key) == ref_mask(data, key)
    assert wsframe.mask(wsframe.mask(data, key), key) == data


# --- round trips -------------------------------------------------------------------------
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("n", [0, 1, 124, 125, 126, 127, 65534, 65535, 65536, 65537])
def test_round_trip_at_length_boundaries(role: str, n: int) -> None:
    payload = bytes(range(256)) * (n // 256) + bytes(range(n % 256))
    wire = enc(role, Opcode.BINARY, payload)
    header = 2 if n < 126 else 4 if n < 65536 else 10
    assert len(wire) == header + (4 if role == "server" else 0) + n
    assert Decoder(role, 65537).feed(wire) == [payload]
    dec = Decoder(role, 65537)
    assert feed_all(dec, [wire[i : i + 1000] for i in range(0, len(wire), 1000)]) == [payload]
    assert dec.binary_messages == 1 and dec.held == 0


@pytest.mark.parametrize("role", ROLES)
def test_many_frames_in_one_buffer(role: str) -> None:
    payloads = [bytes([i]) * (60 + i * 23) for i in range(64)]
    dec = Decoder(role, 65535)
    assert dec.feed(binary_batch(payloads, [KEY] * 64 if role == "server" else None)) == payloads
    assert dec.binary_messages == 64


def test_decoder_accepts_any_buffer_type() -> None:
    wire = enc("server", Opcode.BINARY, b"abc") * 2
    for data in (wire, bytearray(wire), memoryview(wire)):
        assert Decoder("server", 10).feed(data) == [b"abc", b"abc"]


def mixed_stream(role: str) -> tuple[bytes, list[bytes], list[wsframe.Event]]:
    """Every kind of frame, with a fragmented message and control frames between."""
    k = key_for(role)
    big = bytes(range(256)) * 2
    text = "κόσμε €𝄞".encode()
    parts = [
        frame(Opcode.BINARY, b"first", k),
        frame(Opcode.BINARY, b"", k),
        frame(Opcode.BINARY, big[:100], k, fin=False),
        frame(Opcode.PING, b"ping-1", k),
        frame(Opcode.CONTINUATION, b"", k, fin=False),
        frame(Opcode.CONTINUATION, big[100:], k),
        frame(Opcode.TEXT, text[:3], k, fin=False),   # splits a 2-byte character
        frame(Opcode.PONG, b"", k),
        frame(Opcode.CONTINUATION, text[3:], k),
        frame(Opcode.BINARY, big, k),
        frame(Opcode.CLOSE, close_payload(1000, "bye"), k),
        frame(Opcode.BINARY, b"after close: never parsed", k),
    ]
    events: list[wsframe.Event] = [Ping(b"ping-1"), Pong(b""), Text(len(text)), Close(1000, "bye")]
    return b"".join(parts), [b"first", b"", big, big], events


@pytest.mark.parametrize("role", ROLES)
def test_every_split_gives_the_same_result(role: str) -> None:
    wire, messages, events = mixed_stream(role)
    for i in range(len(wire) + 1):
        dec = Decoder(role, 1000)
        assert feed_all(dec, [wire[:i], wire[i:]]) == messages, i
        assert dec.events == events, i
        assert dec.closed and dec.held == 0
    dec = Decoder(role, 1000)
    assert feed_all(dec, bytewise(wire)) == messages
    assert dec.events == events
    assert (dec.binary_messages, dec.text_messages) == (4, 1)


@st.composite
def streams(draw: st.DrawFn) -> tuple[str, list[bytes], list[bytes], list[wsframe.Event]]:
    """A role, the frames sent to it, and the messages and events it must produce."""
    role = draw(st.sampled_from(ROLES))
    frames: list[bytes] = []
    messages: list[bytes] = []
    events: list[wsframe.Event] = []

    def key() -> bytes | None:
        return draw(st.binary(min_size=4, max_size=4)) if role == "server" else None

    def control() -> None:
        if draw(st.booleans()):
            ping = draw(st.booleans())
            payload = draw(st.binary(max_size=125))
            frames.append(frame(Opcode.PING if ping else Opcode.PONG, payload, key()))
            events.append(Ping(payload) if ping else Pong(payload))

    for _ in range(draw(st.integers(0, 6))):
        control()
        is_text = draw(st.booleans())
        data = draw(st.text(max_size=80)).encode() if is_text else draw(st.binary(max_size=300))
        cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=4)))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
        for i, piece in enumerate(pieces):
            op = (Opcode.TEXT if is_text else Opcode.BINARY) if i == 0 else Opcode.CONTINUATION
            frames.append(frame(op, piece, key(), fin=i == len(pieces) - 1))
            if i < len(pieces) - 1:
                control()  # control frames may come between fragments (§5.4)
        if is_text:
            events.append(Text(len(data)))
        else:
            messages.append(data)
    control()
    return role, frames, messages, events


@settings(max_examples=300, deadline=None)
@given(streams(), st.lists(st.integers(0, 4000), max_size=12))
def test_random_streams_any_chunking(
    stream: tuple[str, list[bytes], list[bytes], list[wsframe.Event]], cuts: list[int]
) -> None:
    role, frames, messages, events = stream
    wire = b"".join(frames)
    cuts = sorted(min(c, len(wire)) for c in cuts)
    chunks = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)])]
    dec = Decoder(role, 400)
    assert feed_all(dec, chunks) == messages
    assert dec.events == events
    assert dec.binary_messages == len(messages)
    assert dec.text_messages == sum(isinstance(e, Text) for e in events)
    assert dec.held == 0


BAD_TAILS = [(lambda r: raw(0xC2, b"x", key_for(r)), 1002),
             (lambda r: raw(0x83, b"", key_for(r)), 1002),
             (lambda r: raw(0x80, b"x", key_for(r)), 1002),
             (lambda r: raw(0x81, b"ok\xed\xa0\x80", key_for(r)), 1007),
             (lambda r: raw(0x82, b"", key_for(r), length=401), 1009)]


@settings(max_examples=200, deadline=None)
@given(streams(), st.lists(st.integers(0, 4000), max_size=12), st.sampled_from(BAD_TAILS))
def test_random_streams_then_an_error_any_chunking(
    stream: tuple[str, list[bytes], list[bytes], list[wsframe.Event]], cuts: list[int],
    tail: tuple[Callable[[str], bytes], int],
) -> None:
    # Whatever the chunking, every valid message before the bad frame is delivered
    # (returned, or carried by the error) and the close code is the same.
    role, frames, messages, events = stream
    wire = b"".join(frames) + tail[0](role)
    cuts = sorted(min(c, len(wire)) for c in cuts)
    dec = Decoder(role, 400)
    got: list[bytes] = []
    with pytest.raises(ProtocolError) as info:
        for a, z in zip([0, *cuts], [*cuts, len(wire)]):
            got += dec.feed(wire[a:z])
    assert got + info.value.messages == messages and info.value.code == tail[1]
    assert dec.events == events


# --- protocol errors ---------------------------------------------------------------------
def b(role: str, n: int = 1) -> bytes:
    """A valid binary frame of n bytes for ``role``."""
    return enc(role, Opcode.BINARY, b"x" * n)


ERRORS = [
    # (case, frames for the role, close code); RFC section in the case name
    ("rsv1 5.2", lambda r: raw(0xC2, b"x", key_for(r)), 1002),
    ("rsv2 5.2", lambda r: raw(0xA2, b"x", key_for(r)), 1002),
    ("rsv3 5.2", lambda r: raw(0x92, b"x", key_for(r)), 1002),
    ("rsv on ping 5.2", lambda r: raw(0xC9, b"", key_for(r)), 1002),
    *[(f"reserved opcode {op} 5.2", lambda r, op=op: raw(0x80 | op, b"", key_for(r)), 1002)
      for op in (3, 4, 5, 6, 7, 11, 12, 13, 14, 15)],
    ("ping of 126 bytes 5.5", lambda r: raw(0x89, bytes(126), key_for(r)), 1002),
    ("close of 126 bytes 5.5", lambda r: raw(0x88, b"\x03\xe8" + bytes(124), key_for(r)), 1002),
    ("fragmented ping 5.5", lambda r: raw(0x09, b"", key_for(r)), 1002),
    ("fragmented close 5.5", lambda r: raw(0x08, b"", key_for(r)), 1002),
    ("continuation first 5.4", lambda r: raw(0x80, b"x", key_for(r)), 1002),
    ("open continuation first 5.4", lambda r: raw(0x00, b"x", key_for(r)), 1002),
    ("text inside binary 5.4",
     lambda r: raw(0x02, b"x", key_for(r)) + raw(0x81, b"y", key_for(r)), 1002),
    ("binary inside text 5.4",
     lambda r: raw(0x01, b"x", key_for(r)) + raw(0x82, b"y", key_for(r)), 1002),
    ("binary inside binary 5.4",
     lambda r: raw(0x02, b"x", key_for(r)) + raw(0x82, b"y", key_for(r)), 1002),
    ("continuation after a whole message 5.4",
     lambda r: b(r) + raw(0x80, b"x", key_for(r)), 1002),
    ("64-bit length, top bit set 5.2",
     lambda r: bytes([0x82, 127 | (0x80 if r == "server" else 0)]) + b"\x80" + bytes(7)
     + (KEY if r == "server" else b""), 1002),
    ("wrong masking 5.1", lambda r: raw(0x82, b"x", None if r == "server" else KEY), 1002),
    ("wrong masking on ping 5.1",
     lambda r: raw(0x89, b"", None if r == "server" else KEY), 1002),
    ("close of 1 byte 5.5.1", lambda r: raw(0x88, b"\x03", key_for(r)), 1002),
    ("close code 999 7.4", lambda r: raw(0x88, b"\x03\xe7", key_for(r)), 1002),
    ("close code 1005 7.4", lambda r: raw(0x88, b"\x03\xed", key_for(r)), 1002),
    ("close reason not UTF-8 5.5.1",
     lambda r: raw(0x88, b"\x03\xe8\xce\xba\xed\xa0\x80", key_for(r)), 1007),
    ("text not UTF-8 8.1", lambda r: raw(0x81, b"\xff", key_for(r)), 1007),
    ("text truncated at the end 8.1", lambda r: raw(0x81, b"ok\xce", key_for(r)), 1007),
    ("frame over max 10.4", lambda r: raw(0x82, bytes(101), key_for(r)), 1009),
    ("text over max 10.4", lambda r: raw(0x81, bytes(101), key_for(r)), 1009),
    ("fragments over max 10.4",
     lambda r: raw(0x02, bytes(60), key_for(r)) + raw(0x80, bytes(41), key_for(r)), 1009),
    ("huge header, no payload 10.4",
     lambda r: bytes([0x82, 127 | (0x80 if r == "server" else 0)])
     + struct.pack("!Q", 1 << 62) + (KEY if r == "server" else b""), 1009),
]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("case", "make", "code"), ERRORS, ids=[e[0] for e in ERRORS])
def test_protocol_errors(role: str, case: str, make: Callable[[str], bytes], code: int) -> None:
    wire = make(role)
    assert error_code(role, [wire], max_message=100) == code
    assert error_code(role, bytewise(wire), max_message=100) == code
    # valid frames first: they are delivered with the error, not lost
    dec = Decoder(role, 100)
    with pytest.raises(ProtocolError) as info:
        dec.feed(b(role, 3) + b(role, 4) + wire)
    assert info.value.messages[:2] == [b"xxx", b"xxxx"]
    assert dec.binary_messages == len(info.value.messages)
    assert info.value.code == code and info.value.reason


@pytest.mark.parametrize("role", ROLES)
def test_control_frame_of_125_bytes_and_fragment_at_max_are_fine(role: str) -> None:
    dec = Decoder(role, 100)
    k = key_for(role)
    wire = raw(0x89, bytes(125), k) + raw(0x02, bytes(60), k) + raw(0x89, b"p", k)
    assert dec.feed(wire + raw(0x80, bytes(40), k)) == [bytes(100)]
    assert dec.events == [Ping(bytes(125)), Ping(b"p")]


@pytest.mark.parametrize("role", ROLES)
def test_too_big_is_refused_from_the_header_alone(role: str) -> None:
    # §10.4: the 1009 comes before any payload byte is buffered.
    dec = Decoder(role, 1000)
    header = raw(0x82, b"", key_for(role), length=1001)
    with pytest.raises(ProtocolError) as info:
        dec.feed(header)
    assert info.value.code == CloseCode.TOO_BIG and dec.held == 0


@pytest.mark.parametrize("role", ROLES)
def test_tiny_fragment_flood_is_bounded(role: str) -> None:
    dec = Decoder(role, 1000)
    k = key_for(role)
    dec.feed(raw(0x02, b"a", k))
    for _ in range(999):
        assert dec.feed(raw(0x00, b"a", k)) == []
        assert dec.feed(raw(0x00, b"", k)) == []  # empty fragments cost no memory
        assert dec.held <= 1000
    with pytest.raises(ProtocolError) as info:
        dec.feed(raw(0x00, b"a", k)[:6])  # the header of fragment 1001 is enough
    assert info.value.code == CloseCode.TOO_BIG


@pytest.mark.parametrize("role", ROLES)
def test_memory_stays_under_max_plus_a_header(role: str) -> None:
    dec = Decoder(role, 3000)
    k = key_for(role)
    wire = raw(0x02, bytes(1000), k) + raw(0x89, b"p", k) + raw(0x80, bytes(2000), k)
    peak = 0
    for c in bytewise(wire):
        out = dec.feed(c)
        peak = max(peak, dec.held)
    assert out == [bytes(3000)] and peak <= 3000 + 14


# --- close -------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ROLES)
def test_nothing_is_parsed_after_close(role: str) -> None:
    dec = Decoder(role, 100)
    k = key_for(role)
    wire = raw(0x02, b"open", k) + raw(0x88, b"", k) + b(role) + raw(0xF2, b"bad", k)
    assert dec.feed(wire) == []
    assert dec.events == [Close(CloseCode.NO_STATUS, "")] and dec.closed
    assert dec.feed(b(role)) == [] and dec.held == 0


VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
               3000, 3999, 4000, 4999]
INVALID_CODES = [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


@pytest.mark.parametrize("code", VALID_CODES)
def test_valid_close_codes(code: int) -> None:
    assert parse_close(close_payload(code, "κόσμε")) == (code, "κόσμε")
    assert parse_close(close_payload(code)) == (code, "")


@pytest.mark.parametrize("code", INVALID_CODES)
def test_invalid_close_codes(code: int) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_close(struct.pack("!H", code) + b"why")
    assert info.value.code == CloseCode.PROTOCOL_ERROR
    with pytest.raises(ValueError):
        close_payload(code)


@pytest.mark.parametrize(("payload", "expected"), [
    (b"", (1005, "")),
    (b"\x03\xe8", (1000, "")),
    (b"\x03\xe8ok", (1000, "ok")),
    (b"\x03", 1002),
    (b"\x03\xe8" + b"x" * 124, 1002),        # 126 bytes: not a control frame payload
    (b"\x03\xe8\xff", 1007),
    (b"\x03\xe8\xed\xa0\x80", 1007),         # a surrogate
    (b"\x03\xe8\xce", 1007),                 # truncated
])
def test_parse_close(payload: bytes, expected: tuple[int, str] | int) -> None:
    if isinstance(expected, tuple):
        assert parse_close(payload) == expected
    else:
        with pytest.raises(ProtocolError) as info:
            parse_close(payload)
        assert info.value.code == expected


def test_close_reason_is_cut_at_a_character_boundary() -> None:
    payload = close_payload(1000, "é" * 100)  # 200 bytes of reason; 123 fit
    assert len(payload) == 2 + 122
    assert parse_close(payload) == (1000, "é" * 61)
    assert len(frame(Opcode.CLOSE, close_payload(1001, "x" * 500))) == 2 + 125


# --- text and UTF-8 ----------------------------------------------------------------------
VALID_UTF8 = [
    b"", b"Hello", "κόσμε".encode(), b"\xc2\x80", b"\xdf\xbf", b"\xe0\xa0\x80",
    b"\xed\x9f\xbf", b"\xee\x80\x80", b"\xef\xbf\xbf", b"\xf0\x90\x80\x80",
    b"\xf4\x8f\xbf\xbf",  # U+10FFFF, the last code point
    "a€𝄞ż".encode(),
]
INVALID_UTF8 = [
    b"\x80", b"\xbf", b"\xc0\x80", b"\xc1\xbf", b"\xe0\x80\x80", b"\xe0\x9f\xbf",  # overlong
    b"\xed\xa0\x80", b"\xed\xbf\xbf",                            # surrogates U+D800, U+DFFF
    b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xf8\x88\x80\x80\x80",  # past U+10FFFF
    b"\xfe", b"\xff", b"\xce", b"\xe2\x82", b"\xf0\x9d\x84",          # truncated at the end
    "κόσμε".encode() + b"\xed\xa0\x80edited",
]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("data", VALID_UTF8)
def test_valid_utf8_at_every_fragment_split(role: str, data: bytes) -> None:
    for i in range(len(data) + 1):
        dec = Decoder(role, 100, keep_text=True)
        wire = enc(role, Opcode.TEXT, data[:i], fin=False) + enc(role, 0, data[i:])
        assert feed_all(dec, bytewise(wire)) == []
        assert dec.events == [Text(len(data), data)] and dec.text_messages == 1


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("data", INVALID_UTF8)
def test_invalid_utf8_at_every_fragment_split(role: str, data: bytes) -> None:
    for i in range(len(data) + 1):
        wire = enc(role, Opcode.TEXT, data[:i], fin=False) + enc(role, 0, data[i:])
        assert error_code(role, [wire]) == CloseCode.INVALID_DATA


@pytest.mark.parametrize("role", ROLES)
def test_utf8_fails_fast_on_the_fragment_that_breaks_it(role: str) -> None:
    # Autobahn 6.4.1/6.4.2: the message is not finished, but it can never become valid.
    head = "κόσμε".encode() + b"\xf4"
    dec = Decoder(role, 100)
    dec.feed(enc(role, Opcode.TEXT, head, fin=False))
    with pytest.raises(ProtocolError) as info:
        dec.feed(enc(role, 0, b"\x90", fin=False))
    assert info.value.code == CloseCode.INVALID_DATA


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("cut", [1, 2, 3, 5, 11])
def test_utf8_fails_fast_inside_an_incomplete_frame(role: str, cut: int) -> None:
    # Autobahn 6.4.3/6.4.4: one frame arriving in chops; the mask continues mid-payload.
    data = "κόσμε".encode() + b"\xf4\x90\x80\x80edited"
    wire = enc(role, Opcode.TEXT, data)
    start = len(wire) - len(data)
    dec = Decoder(role, 100)
    dec.feed(wire[: start + cut])
    dec.feed(wire[start + cut : start + 11])  # "κόσμε": still valid
    with pytest.raises(ProtocolError) as info:
        dec.feed(wire[start + 11 : start + 13])  # \xf4\x90: can never be valid
    assert info.value.code == CloseCode.INVALID_DATA


@pytest.mark.parametrize("role", ROLES)
def test_text_is_counted_not_kept(role: str) -> None:
    dec = Decoder(role, 100)
    assert dec.feed(enc(role, Opcode.TEXT, b"hello") + b(role)) == [b"x"]
    assert dec.events == [Text(5)] and dec.events[0].data == b""  # type: ignore[union-attr]
    assert (dec.text_messages, dec.binary_messages) == (1, 1)


def test_decoder_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError):
        Decoder("peer", 100)
    with pytest.raises(ValueError):
        Decoder("server", -1)


# --- speed (printed, not asserted) -----------------------------------------------------
def rate(fn: Callable[[], object], n: int) -> float:
    """Best-of-3 calls per second of ``fn`` run ``n`` times."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


def test_speed_report(monkeypatch: pytest.MonkeyPatch) -> None:
    payloads = [bytes([i]) * 1514 for i in range(64)]
    keys = [bytes([i, 7, 9, 11]) for i in range(64)]
    lines = []
    for masker in MASKERS:
        monkeypatch.setattr(wsframe, "_mask", masker)
        for role, k in (("server", keys), ("client", None)):
            wire = binary_batch(payloads, k)
            dec = Decoder(role, 65535)
            assert dec.feed(wire) == payloads
            decode = rate(lambda: dec.feed(wire), 100) * 64  # noqa: B023
            encode = rate(lambda: binary_batch(payloads, k), 100) * 64  # noqa: B023
            lines.append(f"{masker.__name__:13} {'masked' if k else 'unmasked':8} "
                         f"decode {decode / 1e3:6.0f}k frames/s  encode {encode / 1e3:6.0f}k")
    print("\nwsframe, 64 x 1514-byte binary frames per buffer:\n" + "\n".join(lines))

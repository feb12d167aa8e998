"""RFC 6455 WebSocket frames for the tunnel data path, after the handshake (pure).

The opening handshake is done by websocket-client (client) or wsproto/h11 (server);
from then on the workers frame and parse whole buffers themselves, because a
per-message library costs 11-13 µs a message against well under 1 µs here (measured
with websocket-client 1.9 and simple-websocket 1.1 on the 2-core test machine). No
extension is ever negotiated.

A frame (RFC 6455 §5.2)::

    byte 0   FIN (0x80) | RSV1-3 (0x70, must be 0) | opcode (0x0F)
    byte 1   MASK (0x80) | length: 0-125 itself, 126 = 16-bit length follows,
             127 = 64-bit length follows (top bit 0)
    2 or 8   extended length, big-endian, when byte 1 says so
    4        masking key, present iff MASK: client -> server frames only (§5.1)
    length   payload; masked byte i is payload[i] ^ key[i % 4] (§5.3)

etherws carries one Ethernet frame per **binary** message. Text messages are
validated as UTF-8 (§8.1) and counted but not forwarded; pings are answered by the
caller with a pong of the same payload (§5.5.2); a message over ``max_message``
(counted across fragments) is refused with close 1009 (§7.4.1, §10.4).
"""

from __future__ import annotations

import codecs
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum

from etherws.errors import EtherwsError

_Buffer = bytes | bytearray | memoryview


def _mask_python(data: _Buffer, key: bytes | bytearray) -> bytes:
    """XOR ``data`` with the repeated 4-byte ``key`` (RFC 6455 §5.3), in pure Python.

    One big-integer XOR over the whole payload: about 2.2 µs for 1500 bytes and 10 µs
    for 9000, against 58 µs for a per-byte loop.
    """
    n = len(data)
    stream = key * (n >> 2) + key[: n & 3]
    x = int.from_bytes(data, "little") ^ int.from_bytes(stream, "little")
    return x.to_bytes(n, "little")


try:
    # websockets' C helper masks word-wide: 0.1 µs for 1500 bytes and 0.24 µs for 9000
    # (~37 GB/s), against 0.9 and 3.8 µs for wsaccel's byte loop, which took 17 % of a
    # tunnel worker's CPU at MTU 9000 (tools/bench, py-spy). The same code as
    # websockets' own framing, so nothing of ours to keep correct. The import runs
    # websockets' package init once per worker: ~25 ms and 2.7 MiB of RSS.
    from websockets.speedups import apply_mask as _apply_mask

    def _mask_c(data: _Buffer, key: bytes | bytearray) -> bytes:
        """XOR ``data`` with the repeated 4-byte ``key`` (RFC 6455 §5.3), in C."""
        return _apply_mask(data, key)

    HAVE_C_MASK = True
    _mask: Callable[[_Buffer, bytes | bytearray], bytes] = _mask_c
except ImportError:  # pragma: no cover - websockets without its C extension
    HAVE_C_MASK = False
    _mask = _mask_python


def mask(data: _Buffer, key: bytes | bytearray) -> bytes:
    """Mask or unmask ``data`` with a 4-byte key (the operation is its own inverse)."""
    return _mask(data, key)


class Opcode(IntEnum):
    """Frame opcodes (RFC 6455 §5.2, §11.8); 3-7 and 11-15 are reserved."""

    CONTINUATION = 0
    TEXT = 1
    BINARY = 2
    CLOSE = 8
    PING = 9
    PONG = 10


class CloseCode(IntEnum):
    """Close status codes (RFC 6455 §7.4.1 and the IANA registry, §11.7)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005  # never sent: stands for "the Close frame had no payload"
    ABNORMAL = 1006  # never sent: stands for "no Close frame at all"
    INVALID_DATA = 1007
    POLICY = 1008
    TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015  # never sent


class ProtocolError(EtherwsError):
    """The peer broke RFC 6455: fail the connection with close ``code`` (§7.1.7).

    ``messages`` holds the binary messages that were complete, in the same ``feed``
    call, before the offending frame: they are valid and may still be delivered.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason
        self.messages: list[bytes] = []


def _protocol(reason: str) -> ProtocolError:
    """A ProtocolError with close code 1002 (§7.4.1), the answer to most violations."""
    return ProtocolError(CloseCode.PROTOCOL_ERROR, reason)


@dataclass(frozen=True, slots=True)
class Ping:
    """A ping; answer with ``frame(Opcode.PONG, payload, ...)`` (§5.5.2)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    """A pong (answer to our ping, or unsolicited, which §5.5.3 allows)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """The peer's Close; code 1005 (NO_STATUS) when it carried no payload (§7.1.5)."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Text:
    """A whole, valid UTF-8 text message; ``data`` is filled only with ``keep_text``."""

    size: int
    data: bytes = b""


Event = Ping | Pong | Close | Text

_H2 = struct.Struct("!BB")
_H4 = struct.Struct("!BBH")
_H10 = struct.Struct("!BBQ")
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")
_UTF8 = codecs.getincrementaldecoder("utf-8")
_FIN = 0x80


def valid_close_code(code: int) -> bool:
    """True for a code a Close frame may carry (§7.4.1, §7.4.2, IANA registry).

    1004-1006 and 1015 are reserved or "MUST NOT be set"; 1016-2999 are unassigned
    protocol codes; 3000-4999 belong to libraries and applications.
    """
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def _header(b0: int, n: int, masked: int) -> bytes:
    """The first 2, 4 or 10 header bytes; ``masked`` is 0x80 or 0 (§5.2)."""
    if n < 126:
        return _H2.pack(b0, masked | n)
    if n < 65536:
        return _H4.pack(b0, masked | 126, n)
    return _H10.pack(b0, masked | 127, n)


def frame(opcode: int, payload: bytes, mask_key: bytes | None = None, fin: bool = True) -> bytes:
    """One encoded frame; a client passes a fresh random 4-byte ``mask_key`` (§5.3).

    Raises ValueError for what RFC 6455 forbids sending: an unknown opcode, a control
    frame over 125 bytes or without FIN (§5.5), a key that is not 4 bytes.
    """
    op = Opcode(opcode)
    if op >= Opcode.CLOSE and (len(payload) > 125 or not fin):
        raise ValueError("a control frame carries at most 125 bytes, unfragmented")
    head = _header(op | _FIN if fin else op, len(payload), 0 if mask_key is None else 0x80)
    if mask_key is None:
        return head + payload
    if len(mask_key) != 4:
        raise ValueError("a masking key is 4 bytes")
    return head + mask_key + _mask(payload, mask_key)


Payload = bytes | memoryview | tuple[_Buffer, _Buffer]
"""A message's payload: one buffer, or two sent as one (a virtio-net header and its frame,
so the frame is not copied only to be joined)."""


def binary_batch(payloads: Sequence[Payload], mask_keys: Sequence[bytes] | None = None
                 ) -> bytes:
    """Many unfragmented binary messages in one buffer, for one ``sendall``.

    A client passes one fresh 4-byte key per payload (§5.3: unpredictable, per frame),
    e.g. ``os.urandom(4 * n)`` cut in fours; a server passes None.
    """
    out = bytearray()
    append_binary_batch(out, payloads, mask_keys)
    return bytes(out)


def append_binary_batch(out: bytearray, payloads: Sequence[Payload],
                        mask_keys: Sequence[bytes] | None = None) -> None:
    """``binary_batch`` onto the end of ``out`` (an output queue): each payload is
    copied once, masked or not, where joining the parts first copied a 64 KiB
    super-frame four times on its way out of a client."""
    if mask_keys is not None and len(mask_keys) != len(payloads):
        raise ValueError("one masking key per payload")
    for i, p in enumerate(payloads):
        parts = p if isinstance(p, tuple) else (p,)
        size = sum(len(x) for x in parts)
        if mask_keys is None:
            out += _header(0x82, size, 0)
            for x in parts:
                out += x
            continue
        key = mask_keys[i]
        if len(key) != 4:
            raise ValueError("a masking key is 4 bytes")
        out += _header(0x82, size, 0x80)
        out += key
        offset = 0
        for x in parts:  # a part that starts at byte k of the payload uses the key from k
            r = offset & 3
            out += _mask(x, key[r:] + key[:r] if r else key)
            offset += len(x)


def close_payload(code: int, reason: str = "") -> bytes:
    """The payload of a Close frame: the code, big-endian, then the UTF-8 reason (§5.5.1).

    Raises ValueError for a code that may not be sent. A reason longer than the 123
    bytes a control frame leaves is cut at a character boundary.
    """
    if not valid_close_code(code):
        raise ValueError(f"close code {code} may not be sent")
    raw = reason.encode("utf-8")[:123].decode("utf-8", "ignore").encode("utf-8")
    return _U16.pack(code) + raw


def parse_close(payload: _Buffer) -> tuple[int, str]:
    """``(code, reason)`` of a received Close payload; ``(1005, "")`` when it is empty.

    Raises ProtocolError 1002 for a payload of 1 byte or over 125, or a code that may
    not be sent (§7.4); 1007 for a reason that is not UTF-8 (§5.5.1, §8.1).
    """
    n = len(payload)
    if n == 0:
        return CloseCode.NO_STATUS, ""
    if n == 1 or n > 125:
        raise _protocol(f"close payload of {n} bytes")
    code = (payload[0] << 8) | payload[1]
    if not valid_close_code(code):
        raise _protocol(f"invalid close code {code}")
    try:
        reason = bytes(payload[2:]).decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(CloseCode.INVALID_DATA, "close reason is not UTF-8") from None
    return code, reason


class Decoder:
    """Parse one direction of a connection, from any split of the byte stream.

    ``role`` is the side this decoder runs on: "server" requires every incoming
    frame to be masked, "client" forbids it (§5.1). ``feed`` returns the payloads
    of complete binary messages and queues everything else in ``events``; a
    violation raises ProtocolError carrying the close code to send, and the
    decoder stays failed. After a Close frame nothing more is parsed (§5.5.1).
    ``keep_text`` keeps text payloads in ``Text.data`` (an echo mode for Autobahn);
    etherws itself only counts text.

    Memory stays under ``max_message`` + one 14-byte header: a message is refused
    (1009) as soon as a header shows it would grow past the limit (§10.4), and only
    the incomplete frame at the head of the stream is kept between calls.
    """

    def __init__(self, role: str, max_message: int, keep_text: bool = False) -> None:
        if role not in ("server", "client"):
            raise ValueError(f"role must be 'server' or 'client', not {role!r}")
        if max_message < 0:
            raise ValueError("max_message must be >= 0")
        self.role = role
        self.max_message = max_message
        self.keep_text = keep_text
        self.events: list[Event] = []
        self.text_messages = 0
        self.binary_messages = 0
        self.closed = False
        self._mask_bit = 0x80 if role == "server" else 0
        self._buf = bytearray()  # the incomplete frame at the head of the stream
        self._need = 2  # bytes _buf must hold before parsing can make progress
        self._op = 0  # opcode of the open fragmented message, 0 when there is none
        self._size = 0  # its payload bytes so far
        self._parts = bytearray()  # its payload, kept for binary (and keep_text)
        self._utf8 = _UTF8()  # validates the open text message (§8.1)
        self._checked = 0  # payload bytes of the incomplete text frame validated already
        self._failed: ProtocolError | None = None

    @property
    def held(self) -> int:
        """Bytes of peer data kept between calls (at most max_message + 14)."""
        return len(self._buf) + len(self._parts)

    def feed(self, data: _Buffer) -> list[bytes]:
        """Consume ``data`` and return the payloads of the binary messages it completes.

        Raises ProtocolError at the first violation; its ``messages`` holds the binary
        messages completed before it in this call.
        """
        if self._failed is not None:
            raise ProtocolError(self._failed.code, self._failed.reason)
        if self.closed or not data:
            return []
        if self._buf:
            self._buf += data
            if len(self._buf) < self._need:
                return []
            buf: bytes | bytearray = self._buf
        else:
            buf = data if isinstance(data, (bytes, bytearray)) else bytes(data)
        out: list[bytes] = []
        try:
            used = self._parse(buf, out)
        except ProtocolError as exc:
            self.binary_messages += len(out)
            exc.messages = out
            self._failed = exc
            self._buf, self._parts = bytearray(), bytearray()
            raise
        self.binary_messages += len(out)
        if self.closed:
            self._buf, self._parts = bytearray(), bytearray()
        elif buf is self._buf:
            del buf[:used]
        elif used < len(buf):
            self._buf = bytearray(buf[used:])
        return out

    def _parse(self, buf: bytes | bytearray, out: list[bytes]) -> int:
        """Parse the complete frames at the start of ``buf``; return the bytes used.

        The loop is the data path: an unfragmented binary frame costs one header
        decode and one copy (the unmask, or the slice). Everything else goes to
        _check and _frame.
        """
        n, pos = len(buf), 0
        want, limit, unmask, opened = self._mask_bit, self.max_message, _mask, self._op
        with memoryview(buf) as mv:
            while True:
                left = n - pos
                if left < 2:
                    self._need = 2
                    break
                b0, b1 = buf[pos], buf[pos + 1]
                length = b1 & 0x7F
                hl = 2 if length < 126 else 4 if length == 126 else 10
                if b1 & 0x80:
                    hl += 4
                if left < hl:
                    self._need = hl
                    break
                if length == 126:
                    length = _U16.unpack_from(buf, pos + 2)[0]
                elif length == 127:
                    length = _U64.unpack_from(buf, pos + 2)[0]
                    if length >> 63:
                        raise _protocol("64-bit length, top bit set (§5.2)")
                if b1 & 0x80 != want:
                    raise _protocol(_MASK_ERRORS[want])
                fast = b0 == 0x82 and not opened
                if not fast:
                    self._check(b0, length)
                elif length > limit:
                    raise ProtocolError(CloseCode.TOO_BIG, f"message over {limit} bytes")
                start = pos + hl
                end = start + length
                if end > n:
                    self._need = hl + length if fast else self._wait(buf, pos, hl, length, b0)
                    break
                payload = unmask(mv[start:end], buf[start - 4 : start]) if want else buf[start:end]
                pos = end
                if fast:
                    out.append(payload if type(payload) is bytes else bytes(payload))
                    continue
                self._frame(b0, payload, out)
                opened = self._op
                if self.closed:
                    break
        return pos

    def _check(self, b0: int, length: int) -> None:
        """Raise ProtocolError for a header that is wrong here; change nothing."""
        if b0 & 0x70:
            raise _protocol("RSV bit set, no extension (§5.2)")
        op = b0 & 0x0F
        if op >= Opcode.CLOSE:
            if op > Opcode.PONG:
                raise _protocol(f"reserved opcode {op} (§5.2)")
            if not b0 & _FIN:
                raise _protocol("fragmented control frame (§5.5)")
            if length > 125:
                raise _protocol("control frame over 125 bytes (§5.5)")
            return
        if op == Opcode.CONTINUATION:
            if not self._op:
                raise _protocol("continuation, no message open (§5.4)")
            length += self._size
        elif op > Opcode.BINARY:
            raise _protocol(f"reserved opcode {op} (§5.2)")
        elif self._op:
            raise _protocol("new message inside another (§5.4)")
        if length > self.max_message:
            # §10.4: refuse from the header, before buffering; counts all fragments so
            # far, so a stream of tiny fragments cannot grow past the limit either.
            raise ProtocolError(CloseCode.TOO_BIG, f"message over {self.max_message} bytes")

    def _frame(self, b0: int, payload: bytes | bytearray, out: list[bytes]) -> None:
        """Apply one complete frame that is not a plain unfragmented binary message."""
        op = b0 & 0x0F
        if op >= Opcode.CLOSE:
            self._control(op, bytes(payload))
            return
        if op:
            self._op, self._size = op, 0
        self._size += len(payload)
        fin = bool(b0 & _FIN)
        if self._op == Opcode.TEXT:
            self._utf8_check(op, payload[self._checked :] if self._checked else payload, fin)
            self._checked = 0
            if self.keep_text:
                self._parts += payload
            if fin:
                self.events.append(Text(self._size, bytes(self._parts)))
                self.text_messages += 1
                self._end_message()
            return
        self._parts += payload
        if fin:
            out.append(bytes(self._parts))
            self._end_message()

    def _control(self, op: int, payload: bytes) -> None:
        """Queue a ping, pong or close event (they may come between fragments, §5.4)."""
        if op == Opcode.PING:
            self.events.append(Ping(payload))
        elif op == Opcode.PONG:
            self.events.append(Pong(payload))
        else:
            code, reason = parse_close(payload)
            self.events.append(Close(code, reason))
            self.closed = True
            self._end_message()

    def _end_message(self) -> None:
        """Forget the finished (or abandoned) message and free its buffer."""
        self._op = self._size = 0
        self._parts = bytearray()

    def _is_text(self, b0: int) -> bool:
        """True when the frame starting with ``b0`` carries text."""
        op = b0 & 0x0F
        return op == Opcode.TEXT or (op == Opcode.CONTINUATION and self._op == Opcode.TEXT)

    def _wait(self, buf: bytes | bytearray, pos: int, hl: int, length: int, b0: int) -> int:
        """Bytes from ``pos``, the incomplete frame's start, to wait for before parsing again.

        A text frame is validated as far as it has arrived: §8.1 and Autobahn 6.4.3-4
        want invalid UTF-8 refused when it arrives, not when the frame is complete.
        """
        if not self._is_text(b0):
            return hl + length
        start, n = pos + hl, len(buf)
        if n - start > self._checked:
            new = buf[start + self._checked : n]
            if self._mask_bit:
                r = self._checked & 3  # the mask goes on at payload offset _checked (§5.3)
                key = bytes(buf[start - 4 : start])
                new = _mask(new, key[r:] + key[:r])
            self._utf8_check(b0 & 0x0F, new, False)
            self._checked = n - start
        return hl + self._checked + 1  # and come back on every new byte

    def _utf8_check(self, op: int, data: _Buffer, final: bool) -> None:
        """Feed text bytes to the incremental UTF-8 validator (§5.6, §8.1: close 1007).

        Python's strict decoder rejects overlong forms, surrogates and code points past
        U+10FFFF, and raises on the first byte that makes a sequence impossible.
        """
        if op == Opcode.TEXT and not self._checked:
            self._utf8.reset()
        try:
            self._utf8.decode(data, final)
        except UnicodeDecodeError:
            raise ProtocolError(CloseCode.INVALID_DATA, "text is not valid UTF-8") from None


_MASK_ERRORS = {
    0x80: "unmasked frame from a client (§5.1)",
    0: "masked frame from a server (§5.1)",
}

"""The L2 path probe: how far, and how large, a tunnel carries (pure; ``now`` passed in).

``etherws-ctl probe PORT [--size N]`` asks a tunnel port's worker to probe the far
etherws switch. Probes travel as WebSocket **text** messages between the two tunnel
workers, so the binary data path (one Ethernet frame per message) stays untouched;
a switch that does not know them (etherws 1.3, a browser VM) ignores text and never
answers. The messages, ASCII, fields separated by one space::

    probe  "etherws-probe/1 <id> <size>"   padded with spaces to exactly <size> bytes
    reply  "etherws-probe-reply/1 <id> <bytes received> <max message>"

``id`` and the sizes are decimal (no sign, at most 10 digits). The far worker answers each
probe at once; ``max message`` is the largest frame it accepts (its ``--max-message``):
anything larger would make it close the tunnel with 1009, so a prober learns it first.
Any other text (a malformed probe too) stays ignored and counted as before.

The plan (``Prober``): first RTT_PROBES small probes of SMALL bytes, one after the other
(the round trip, and the far side's max message from the first reply); no answer to the
first within the timeout means "no answer" (not an etherws switch that answers probes).
Then the ladder (``ladder``): sizes up to the asked one, never above the far side's max
message, sent together and waited for once more up to the timeout. The result: the
round trip (median and minimum), the largest size answered, the sizes lost.

In its port's slot of the port table (``etherws.tables``) the worker publishes a result as three
words (``to_words``/``from_words``): the round trips, the largest size, and a word of
flags: ``code | lost rungs << 8 | far max message << 24`` (the lost sizes as a bitmap
over ``ladder(asked, far max)``, which the reader computes again).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from etherws.errors import EtherwsError
from etherws.frame import MAX_FRAME

PROBE_TAG = b"etherws-probe/1"
REPLY_TAG = b"etherws-probe-reply/1"
MIN_SIZE = 64
"""Smallest probe; also the size of the round-trip probes (a minimal Ethernet frame
plus FCS room). A far side whose max message is below it cannot be probed."""
SMALL = MIN_SIZE
DEFAULT_SIZE = 1514
"""A full Ethernet frame of MTU 1500 without FCS: what every tunnel must carry."""
MAX_SIZE = MAX_FRAME
TIMEOUT_S = 2.0
"""How long a probe waits for its reply before it counts as lost."""
RTT_PROBES = 3
RUNGS = (1514, 4096, 9014, 16384, 32768, MAX_FRAME)
"""The sizes tried below the asked one: MTU 1500 and jumbo 9000 frames, and powers
of two towards the largest frame the data plane carries."""
MAX_DURATION_S = TIMEOUT_S * (RTT_PROBES + 1)
"""The longest a probe can take: every small probe and the ladder timed out."""
_MAX_DIGITS = 10
_MAX_ID = 10 ** _MAX_DIGITS - 1


class Code(IntEnum):
    """How a probe ended (the low byte of the flags word; 0: no result yet)."""

    ANSWERED = 1
    NO_ANSWER = 2
    """Nothing came back to the first small probe."""
    UNSUPPORTED = 3
    """The port's medium cannot probe (not a tunnel)."""


class ProbeError(EtherwsError):
    """A probe that cannot be built (size out of range)."""


@dataclass(frozen=True)
class Probe:
    """A probe as the far side received it."""

    id: int
    size: int
    """The size its sender says it has."""
    received: int
    """The bytes that arrived."""


@dataclass(frozen=True)
class Reply:
    """The far side's answer to probe ``id``."""

    id: int
    received: int
    max_message: int


def check_size(size: int) -> int:
    """``size`` when it may be probed (MIN_SIZE..MAX_SIZE), else ProbeError."""
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ProbeError(f"a probe size is {MIN_SIZE}..{MAX_SIZE} bytes, not {size}")
    return size


def encode_probe(probe_id: int, size: int) -> bytes:
    """The probe text message ``probe_id`` of exactly ``size`` bytes."""
    check_size(size)
    if not 0 <= probe_id <= _MAX_ID:
        raise ProbeError(f"a probe id is 0..{_MAX_ID}")
    return encode_probe_head(probe_id, size).ljust(size, b" ")


def encode_reply(reply: Reply) -> bytes:
    """The reply text message."""
    return b"%s %d %d %d" % (REPLY_TAG, reply.id, reply.received, reply.max_message)


def _number(token: bytes) -> int | None:
    """A decimal field: ASCII digits only, at most _MAX_DIGITS."""
    if not 0 < len(token) <= _MAX_DIGITS or not token.isdigit():
        return None
    return int(token)


def encode_probe_head(probe_id: int, size: int) -> bytes:
    """A probe's head, without the padding."""
    return b"%s %d %d" % (PROBE_TAG, probe_id, size)


def parse_probe(data: bytes) -> Probe | None:
    """The probe ``data`` is, or None when it is any other text (then it is ignored).

    A probe's head is spelled one way (``encode_probe_head``) and only spaces follow it;
    ``received`` may differ from the size it claims (the reply says what arrived)."""
    if not data.startswith(PROBE_TAG + b" "):
        return None
    fields = data[:MIN_SIZE].split(b" ")  # a head is at most 37 bytes
    if len(fields) < 3:
        return None
    probe_id, size = _number(fields[1]), _number(fields[2])
    if probe_id is None or size is None:
        return None
    head = encode_probe_head(probe_id, size)
    if not data.startswith(head) or data[len(head):].strip(b" "):
        return None
    return Probe(probe_id, size, len(data))


def parse_reply(data: bytes) -> Reply | None:
    """The reply ``data`` is, or None when it is any other text."""
    if not data.startswith(REPLY_TAG + b" ") or len(data) > 80:
        return None
    fields = data.split(b" ")
    if len(fields) != 4:
        return None
    numbers = [_number(t) for t in fields[1:]]
    if None in numbers:
        return None
    probe_id, received, max_message = numbers
    assert probe_id is not None and received is not None and max_message is not None
    return Reply(probe_id, received, max_message)


def answer(data: bytes, max_message: int) -> bytes | None:
    """The far side's whole part: the reply to the probe ``data`` is, with this side's
    ``max_message``; None for any other text."""
    probe = parse_probe(data)
    if probe is None:
        return None
    return encode_reply(Reply(probe.id, probe.received, max_message))


def ladder(asked: int, far_max: int) -> tuple[int, ...]:
    """The sizes to try, ascending: the rungs below the asked size, and the asked size
    itself, never above ``far_max`` (then ``far_max`` is the last rung)."""
    top = min(asked, far_max, MAX_SIZE)
    if top < MIN_SIZE:
        return ()
    return tuple(sorted({r for r in RUNGS if r < top} | {top}))


@dataclass(frozen=True)
class Result:
    """What a probe found. ``rtt_s``: the median round trip of the small probes,
    ``rtt_min_s`` the smallest (None when none was answered); ``largest``: the largest
    size answered (0: none); ``lost``: sizes sent and not answered; ``far_max``: the far
    side's max message (None: unknown)."""

    code: Code
    asked: int
    rtt_s: float | None = None
    rtt_min_s: float | None = None
    largest: int = 0
    lost: tuple[int, ...] = ()
    far_max: int | None = None

    @property
    def answered(self) -> bool:
        """The far side answered probes."""
        return self.code is Code.ANSWERED

    @property
    def limited(self) -> bool:
        """The asked size is above what the far side accepts: it was not sent."""
        return self.far_max is not None and self.asked > self.far_max

    def entry(self) -> dict[str, object]:
        """The control protocol's fields (``probePort``)."""
        return {
            "answered": self.answered, "asked": self.asked,
            "rtt_ms": None if self.rtt_s is None else round(self.rtt_s * 1e3, 3),
            "rtt_min_ms": None if self.rtt_min_s is None else round(self.rtt_min_s * 1e3, 3),
            "largest": self.largest or None, "lost": list(self.lost),
            "far_max_message": self.far_max,
            "sizes": list(ladder(self.asked, self.far_max)) if self.far_max else [],
        }


_U32 = (1 << 32) - 1


def to_words(result: Result) -> tuple[int, int, int]:
    """``(round trips, largest, flags)``: the three result words of a port slot. Round
    trips are ns, the median in the low half, the minimum in the high half (a round trip
    is below TIMEOUT_S, far below 2**32 ns)."""
    def ns(s: float | None) -> int:
        return 0 if s is None else min(max(round(s * 1e9), 1), _U32)
    rungs = ladder(result.asked, result.far_max) if result.far_max else ()
    lost = sum(1 << i for i, size in enumerate(rungs) if size in result.lost)
    flags = int(result.code) | lost << 8 | (result.far_max or 0) << 24
    return ns(result.rtt_s) | ns(result.rtt_min_s) << 32, result.largest, flags


def from_words(asked: int, rtt: int, largest: int, flags: int) -> Result | None:
    """The result in a slot's words for a probe of ``asked`` bytes; None when the code
    is not one (no result, or words from a newer writer)."""
    try:
        code = Code(flags & 0xFF)
    except ValueError:
        return None
    far_max = (flags >> 24) & 0x1FFFF or None
    rungs = ladder(asked, far_max) if far_max else ()
    lost = tuple(size for i, size in enumerate(rungs) if flags >> (8 + i) & 1)
    median, low = rtt & _U32, rtt >> 32
    return Result(code, asked, median / 1e9 if median else None, low / 1e9 if low else None,
                  largest, lost, far_max)


class Prober:
    """One probe of ``asked`` bytes started at ``now_s``, as a state machine.

    The shell sends what ``take`` returns as text messages, hands every reply to
    ``received`` and calls ``tick`` now and then; ``done`` tells when ``result`` is final.
    """

    def __init__(self, asked: int, now_s: float, timeout_s: float = TIMEOUT_S,
                 rtt_probes: int = RTT_PROBES) -> None:
        self.asked = check_size(asked)
        self.timeout_s = timeout_s
        self.rtt_probes = max(rtt_probes, 1)
        self.done = False
        self._out: list[bytes] = []
        self._next_id = 1
        self._pending: dict[int, tuple[int, float]] = {}  # id -> (size, sent at)
        self._rtts: list[float] = []
        self._small_sent = 0
        self._far_max: int | None = None
        self._in_ladder = False
        self._answered: set[int] = set()
        self._lost: list[int] = []
        self._deadline = 0.0
        self._small(now_s)

    def _send(self, size: int, now_s: float) -> None:
        probe_id = self._next_id
        self._next_id += 1
        self._pending[probe_id] = (size, now_s)
        self._out.append(encode_probe(probe_id, size))

    def _small(self, now_s: float) -> None:
        self._small_sent += 1
        self._send(SMALL, now_s)
        self._deadline = now_s + self.timeout_s

    def _start_ladder(self, now_s: float) -> None:
        self._pending.clear()  # a small probe still out is not waited for
        self._in_ladder = True
        assert self._far_max is not None
        for size in ladder(self.asked, self._far_max):
            self._send(size, now_s)
        self._deadline = now_s + self.timeout_s
        if not self._pending:
            self.done = True

    def take(self) -> list[bytes]:
        """The probe messages to send now."""
        out, self._out = self._out, []
        return out

    def received(self, reply: Reply, now_s: float) -> None:
        """A reply arrived at ``now_s``; replies to no probe of this run are ignored."""
        sent = self._pending.pop(reply.id, None)
        if sent is None or self.done:
            return
        size, at = sent
        if not self._in_ladder:
            self._rtts.append(max(now_s - at, 0.0))
            if self._far_max is None:  # nothing larger is ever sent: keep it in range
                self._far_max = min(reply.max_message, MAX_SIZE)
            if self._small_sent < self.rtt_probes:
                self._small(now_s)
            else:
                self._start_ladder(now_s)
            return
        if reply.received == size:
            self._answered.add(size)
        else:
            self._lost.append(size)
        if not self._pending:
            self.done = True

    def tick(self, now_s: float) -> None:
        """Time out what waited too long."""
        if self.done or now_s < self._deadline:
            return
        if not self._in_ladder:
            if self._far_max is None:
                self.done = True  # the first small probe: nobody answers
            else:
                self._start_ladder(now_s)
            return
        self._lost += [size for size, _ in self._pending.values()]
        self._pending.clear()
        self.done = True

    def result(self) -> Result:
        """What was found (final once ``done``)."""
        if self._far_max is None:
            return Result(Code.NO_ANSWER, self.asked)
        rtts = sorted(self._rtts)
        return Result(Code.ANSWERED, self.asked, rtts[(len(rtts) - 1) // 2], rtts[0],
                      max(self._answered, default=0), tuple(sorted(set(self._lost))),
                      self._far_max)


def unsupported(asked: int) -> Result:
    """The result of a port that cannot probe."""
    return Result(Code.UNSUPPORTED, asked)

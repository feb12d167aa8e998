"""VLANs of a port (IEEE 802.1Q): which VLAN a frame is in when it comes in, and the bytes
it leaves with (pure).

A port is in one of three modes:

- **transparent** (the default, as etherws 1.3): every frame is switched as it came, in the
  VLAN its tag names (0 when untagged; the tag is kept as is). The port is a member of every
  VLAN, so a frame that came untagged from an access port leaves it tagged with its VLAN.
- **access** VID: untagged frames coming in are in VLAN VID; tagged ones are dropped (a
  priority tag, VID 0, counts as untagged: 802.1Q 6.9.1). Only VLAN VID leaves, untagged.
- **trunk** VIDS [native VID]: frames tagged with a VID of VIDS come in and leave tagged;
  other tagged frames are dropped. Untagged (and priority-tagged) frames are in the native
  VLAN, and leave untagged; without a native VLAN they are dropped.

Rules as a table (``classify`` coming in, ``egress`` going out; V is the frame's VLAN)::

    mode         in: untagged/prio   in: tagged T          out: member?   out: form
    transparent  0 (bytes as is)     T                     always         V=0: as is, else tagged V
    access A     A                   drop                  V == A         untagged
    trunk S, N   N, or drop if no N  T if T in S|{N}, drop V in S|{N}     V == N: untagged,
                                                                          else tagged V

A tag is written as TPID 0x8100 with the frame's own priority bits when it had a tag, else
priority 0. VIDs 0 and 4095 are reserved (802.1Q table 9-2): no port is configured with them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import TypeVar

from etherws.errors import EtherwsError
from etherws.frame import ETH_HLEN, TPID_8021Q, Frame

MIN_VID, MAX_VID = 1, 4094
ALL_VIDS = frozenset(range(MIN_VID, MAX_VID + 1))
TAG_LEN = 4
T = TypeVar("T", bytes, memoryview)
BITMAP_WORDS = 64
"""Words of a VID bitmap: 4096 bits, one per VID (VID v is bit v % 64 of word v // 64)."""


class VlanError(EtherwsError):
    """A VLAN setting that cannot be used; the message is one line for the user."""


class Mode(IntEnum):
    """A port's VLAN mode; the value is what the port table stores."""

    TRANSPARENT = 0
    ACCESS = 1
    TRUNK = 2


class Out(Enum):
    """How a frame leaves a port."""

    AS_IS = "as-is"
    UNTAGGED = "untagged"
    TAGGED = "tagged"


@dataclass(frozen=True)
class PortVlan:
    """One port's VLAN setting: see the module docstring.

    ``vid`` is an access port's VLAN, or a trunk's native VLAN (0: none); ``vids`` are a
    trunk's tagged VLANs.
    """

    mode: Mode = Mode.TRANSPARENT
    vid: int = 0
    vids: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        bad = [v for v in self.vids if not MIN_VID <= v <= MAX_VID]
        if bad:
            raise VlanError(f"VLAN id {bad[0]} is not between {MIN_VID} and {MAX_VID}")
        if self.mode is Mode.ACCESS and not MIN_VID <= self.vid <= MAX_VID:
            raise VlanError(f"VLAN id {self.vid} is not between {MIN_VID} and {MAX_VID}")
        if self.mode is Mode.TRUNK and self.vid and not MIN_VID <= self.vid <= MAX_VID:
            raise VlanError(f"native VLAN id {self.vid} is not between {MIN_VID} and "
                            f"{MAX_VID}")
        if self.mode is Mode.TRUNK and not (self.vids or self.vid):
            raise VlanError("a trunk carries at least one VLAN")
        if self.mode is not Mode.TRUNK and self.vids:
            raise VlanError("only a trunk carries a list of VLANs")
        if self.mode is Mode.TRANSPARENT and self.vid:
            raise VlanError("a transparent port has no VLAN id")

    @property
    def transparent(self) -> bool:
        """True for the default mode."""
        return self.mode is Mode.TRANSPARENT

    def classify(self, frame: Frame) -> int | None:
        """The VLAN of a frame coming in on this port, or None: dropped."""
        tag = tag_of(frame)
        mode = self.mode
        if mode is Mode.TRANSPARENT:
            return 0 if tag is None else tag
        if tag is None or tag == 0:  # untagged or priority-tagged
            return self.vid or None  # an access VID, a native VID, or none
        if mode is Mode.TRUNK and (tag in self.vids or tag == self.vid):
            return tag
        return None

    def egress(self, vid: int) -> Out | None:
        """How a frame of VLAN ``vid`` leaves this port, or None: the port is not in it."""
        mode = self.mode
        if mode is Mode.TRANSPARENT:
            return Out.AS_IS if vid == 0 else Out.TAGGED
        if vid == self.vid and vid:  # the access VLAN, or the native one
            return Out.UNTAGGED
        if mode is Mode.TRUNK and vid in self.vids:
            return Out.TAGGED
        return None

    def describe(self) -> str:
        """The setting as ``listport`` shows it: ``-``, ``access 10``, ``trunk 10,20 native 1``."""
        if self.mode is Mode.ACCESS:
            return f"access {self.vid}"
        if self.mode is Mode.TRUNK:
            vids = format_vids(self.vids) if self.vids else "-"
            return f"trunk {vids}" + (f" native {self.vid}" if self.vid else "")
        return "-"

    # --- the port table's words (``tables.PortTable.set_rules``) --------------------------
    def word(self) -> int:
        """The mode and VID in one word: ``vid << 2 | mode``."""
        return self.vid << 2 | int(self.mode)

    def bitmap(self) -> tuple[int, ...]:
        """A trunk's VIDs as ``BITMAP_WORDS`` words."""
        return vids_to_bitmap(self.vids)

    @staticmethod
    def from_words(word: int, bitmap: Sequence[int]) -> PortVlan:
        """Inverse of ``word`` and ``bitmap``; anything unreadable is transparent (the
        supervisor, the table's only writer, writes nothing else)."""
        try:
            mode = Mode(word & 3)
            return PortVlan(mode, (word >> 2) & 0xFFF,
                            bitmap_to_vids(bitmap) if mode is Mode.TRUNK else frozenset())
        except (ValueError, VlanError):
            return TRANSPARENT


TRANSPARENT = PortVlan()


def access(vid: int) -> PortVlan:
    """An access port of VLAN ``vid``; VlanError."""
    return PortVlan(Mode.ACCESS, vid)


def trunk(vids: Iterable[int], native: int = 0) -> PortVlan:
    """A trunk of ``vids`` (tagged) with an optional native VLAN; VlanError."""
    return PortVlan(Mode.TRUNK, native, frozenset(vids))


def tag_of(frame: Frame) -> int | None:
    """The VID of a frame's 802.1Q tag, or None when it has no tag (the same test as
    ``frame.header``: a TPID 0x8100 with a whole tag after it)."""
    # bytes by index: comparing a memoryview slice with bytes costs ten times as much
    if len(frame) >= ETH_HLEN + TAG_LEN and frame[12] == 0x81 and frame[13] == 0x00:
        return ((frame[14] << 8) | frame[15]) & 0x0FFF
    return None


def rewrite(frame: T, out: Out, vid: int) -> T | bytes:
    """The bytes of ``frame`` leaving as ``out`` in VLAN ``vid`` (``frame`` itself when
    nothing changes)."""
    tag = tag_of(frame)
    if out is Out.AS_IS or (out is Out.UNTAGGED and tag is None):
        return frame
    if out is Out.UNTAGGED:
        return bytes(frame[:12]) + bytes(frame[16:])
    if tag is None:
        return bytes(frame[:12]) + TPID_8021Q + vid.to_bytes(2, "big") + bytes(frame[12:])
    if tag == vid:
        return frame
    pcp_dei = frame[14] & 0xF0  # a priority tag becomes a VLAN tag of the same priority
    return (bytes(frame[:14]) + bytes(((pcp_dei << 8) | vid).to_bytes(2, "big"))
            + bytes(frame[16:]))


# --- VID lists -----------------------------------------------------------------------------
def parse_vid(text: str | int, what: str = "VLAN id") -> int:
    """One VID, 1-4094; VlanError."""
    try:
        vid = text if isinstance(text, int) else int(str(text).strip(), 10)
    except ValueError:
        raise VlanError(f"not a {what}: {text!r}") from None
    if isinstance(vid, bool) or not MIN_VID <= vid <= MAX_VID:
        raise VlanError(f"{what} {text!r} is not between {MIN_VID} and {MAX_VID}")
    return vid


def parse_vids(text: str) -> frozenset[int]:
    """``"10,20,30-39"`` or ``"all"`` as a set of VIDs; VlanError."""
    text = text.strip()
    if text.lower() == "all":
        return ALL_VIDS
    vids: set[int] = set()
    for part in text.split(","):
        low, sep, high = part.partition("-")
        if sep:
            a, b = parse_vid(low), parse_vid(high)
            if a > b:
                raise VlanError(f"not a VLAN range: {part.strip()!r}")
            vids.update(range(a, b + 1))
        else:
            vids.add(parse_vid(part))
    return frozenset(vids)


def format_vids(vids: Iterable[int]) -> str:
    """Inverse of ``parse_vids``: ``"all"`` or ranges, ``"10,20,30-39"``."""
    ordered = sorted(set(vids))
    if frozenset(ordered) == ALL_VIDS:
        return "all"
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def vids_to_bitmap(vids: Iterable[int]) -> tuple[int, ...]:
    """A set of VIDs (0-4095) as ``BITMAP_WORDS`` 64-bit words."""
    words = [0] * BITMAP_WORDS
    for v in vids:
        words[v >> 6] |= 1 << (v & 63)
    return tuple(words)


def bitmap_to_vids(words: Sequence[int]) -> frozenset[int]:
    """Inverse of ``vids_to_bitmap``."""
    return frozenset(i * 64 + b for i, w in enumerate(words[:BITMAP_WORDS])
                     for b in range(64) if w >> b & 1)

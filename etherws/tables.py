"""Shared-memory layouts: the port table and the FDB (pure; the buffer is given).

Both live in files on tmpfs in the run directory, mapped by every process that needs
them (``etherws.runtime.shm`` does the mapping). A table is an array of unsigned 64-bit words
(``memoryview.cast("Q")``): an aligned 8-byte store is a single instruction on the
machines we run on, so a reader never sees half a word, and every word has exactly one
writing process, named below. Times are ``time.monotonic_ns()`` values, which are
comparable across processes (CLOCK_MONOTONIC is system-wide).

Port table (file ``ports.tbl``)::

    header, HEADER_WORDS words:
      0 MAGIC  1 VERSION  2 nslots                                (supervisor, at creation)
      3 generation: bumped after every change to a slot's supervisor words (supervisor)
      4 broker heartbeat ns                                        (broker)
      5 flush request counter, 6 flush port (0 = all)              (supervisor)
      7 flush done counter                                         (broker)
      8 malformed session messages                                 (broker)
      9 listener heartbeat ns                                      (listener)
      10 broker pid: the workers attach again when it changes      (broker)
      11 switch id: the loop guard's name for this switch (``etherws.loopguard``), drawn
         by the first broker, kept by the next                      (broker)
    slot i at HEADER_WORDS + i * SLOT_WORDS:
      0 port (0 = free slot)  1 flags (FLAG_SHUT)  2 kind (PortKind)          (supervisor)
      3 heartbeat ns  4 rx frames  5 rx bytes  6 tx frames  7 tx bytes
      8 errors  9 drops                                                       (port worker)
      10 drops  11 errors: frames the broker could not deliver to / parse from this port
      12 hold ns: read nothing from the medium before this time; the port's frames
         all went to a port whose queue was full (backpressure)              (broker)
      13 ring generation: names the port's ring file (``RunDir.ring``)   (supervisor)
      14 VLAN drops: frames in a VLAN the port may not send (``etherws.vlan``)
      15 storm drops: broadcast, multicast and unknown unicast over the port's limit
      16 rate drops: frames over the port's rate limit                         (broker)
      17 VLAN mode: ``vid << 2 | mode`` (``vlan.PortVlan.word``)
      18 storm limit, frames a second (0: the default, STORM_OFF: none)
      19 rate limit, bits a second of what the port sends into the switch (0: none)
      20 token VLAN: the VLAN a peer's token binds it to (0: none)
      21 token MAC quota: most source MACs a peer's token allows (0: none)
         written by the peer worker before it attaches; the broker reads them when the
         worker attaches (``etherws.token``)                                (port worker)
      22 probe request sequence  23 probe size, bytes                         (supervisor)
      24 probe done sequence: written last, after 25-27
      25 probe round trips, ns: median | minimum << 32  26 largest size answered
      27 probe flags: code | lost sizes << 8 | far max message << 24
         (``etherws.probe.to_words``)                                        (port worker)
      28 loop guard: blocked since ns (0: forwarding)  29 times blocked
      30 frames dropped while blocked                                        (broker)
      31 free
      32-95 a trunk's VIDs, one bit each (``vlan.vids_to_bitmap``)            (supervisor)

The supervisor writes words 17-19 and 32-95 together (``set_rules``), then bumps the
generation: a broker that read them half-written sees the generation move and reads them
again, as it does for the shut flag.

A path probe (``etherws-ctl probe``): the supervisor writes the size, then bumps the
request sequence; the tunnel worker sees it on its periodic tick, probes, writes the
result words and then the done sequence, which the supervisor polls.

"rx" counts frames the port received from its medium (into the switch), "tx" frames it
sent out. A restarted worker continues its slot's counters.

FDB (file ``fdb.tbl``)::

    header, HEADER_WORDS words:
      0 MAGIC  1 VERSION  2 capacity                               (supervisor, at creation)
      3 entries in use  4 learns refused, table full  5 learns refused, port full
      6 moves held: a station seen on another port within the hold-down        (broker)
    entry i at HEADER_WORDS + i * ENTRY_WORDS:
      0 sequence: odd while the broker rewrites the entry (a seqlock)
      1 key: vid << 48 | MAC as a 48-bit integer   2 port (0 = empty)   3 last seen ns

Only the broker writes FDB entries; readers retry while the sequence is odd or moved.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum

from etherws.errors import EtherwsError
from etherws.frame import is_learnable

HEADER_WORDS = 16
SLOT_WORDS = 96
ENTRY_WORDS = 4
WORD = 8
VERSION = 1
PORT_VERSION = 3
"""The port table's layout version (2: VLANs, storm control and rate limits; 3: the
path probe's words, the loop guard's, the claims of a peer's token)."""

PORT_MAGIC = int.from_bytes(b"ETWPORTS", "little")
FDB_MAGIC = int.from_bytes(b"ETWFDB01", "little")

# port table header words
H_GENERATION = 3
H_BROKER_HEARTBEAT = 4
H_FLUSH_REQUEST = 5
H_FLUSH_PORT = 6
H_FLUSH_DONE = 7
H_BROKER_MALFORMED = 8
H_LISTENER_HEARTBEAT = 9
H_BROKER_PID = 10
H_SWITCH_ID = 11

# port slot words
S_PORT = 0
S_FLAGS = 1
S_KIND = 2
S_HEARTBEAT = 3
S_RX = 4
S_RX_BYTES = 5
S_TX = 6
S_TX_BYTES = 7
S_ERRORS = 8
S_DROPS = 9
S_BROKER_DROPS = 10
S_BROKER_ERRORS = 11
S_HOLD_UNTIL = 12
S_RING = 13
S_VLAN_DROPS = 14
S_STORM_DROPS = 15
S_RATE_DROPS = 16
S_VLAN = 17
S_STORM = 18
S_RATE = 19
S_TOKEN_VLAN = 20
S_TOKEN_MACS = 21
S_PROBE_REQUEST = 22
S_PROBE_SIZE = 23
S_PROBE_DONE = 24
S_PROBE_RTT = 25
S_PROBE_LARGEST = 26
S_PROBE_FLAGS = 27
S_LOOP_SINCE = 28
S_LOOP_BLOCKS = 29
S_LOOP_DROPS = 30
S_TRUNK = 32
TRUNK_WORDS = 64
TRUNK_SLOT = frozenset(range(S_TRUNK, S_TRUNK + TRUNK_WORDS))
"""The trunk bitmap's words (only its first has a name)."""
STORM_DEFAULT = 0
STORM_OFF = (1 << 64) - 1

FLAG_SHUT = 1
_ALL_BITS = (1 << 64) - 1

# FDB header and entry words
F_IN_USE = 3
F_REFUSED_FULL = 4
F_REFUSED_PORT = 5
F_HELD_MOVES = 6
E_SEQ = 0
E_KEY = 1
E_PORT = 2
E_SEEN = 3

DEFAULT_PORT_SLOTS = 1024


class PortKind(IntEnum):
    """What a port is; the names are the ``type`` strings of listport."""

    TAP = 1
    NETDEV = 2
    CLIENT = 3
    SERVER = 4

    @property
    def label(self) -> str:
        """The text used by the control protocol ("tap", "netdev", "client", "server")."""
        return self.name.lower()


class TableError(EtherwsError):
    """A buffer that does not hold a table of this layout and version."""


MAX_VID = 4095


def fdb_key(vid: int, mac: bytes | memoryview) -> int:
    """The FDB key word of (VLAN id, MAC)."""
    return (vid << 48) | int.from_bytes(mac, "big")


def split_key(key: int) -> tuple[int, bytes]:
    """Inverse of fdb_key: ``(vid, mac)``."""
    return key >> 48, (key & 0xFFFF_FFFF_FFFF).to_bytes(6, "big")


def learnable(vid: int, mac: bytes | memoryview) -> bool:
    """True when (``vid``, ``mac``) may be learned: a unicast, non-zero MAC of six bytes
    in a VLAN id of 12 bits. The one rule for learning and for entries read back."""
    return len(mac) == 6 and is_learnable(mac) and 0 <= vid <= MAX_VID


def aged(now_s: float, seen_s: float, ageout_s: float) -> bool:
    """True when an entry last seen at ``seen_s`` is gone at ``now_s``: at the boundary
    too, as Linux's bridge expires. The one ageing rule (lookup, expiry, listfdb)."""
    return now_s - seen_s >= ageout_s


def _words(buf: memoryview | bytearray) -> memoryview:
    mv = memoryview(buf)
    if mv.format == "Q":
        return mv
    if mv.nbytes % WORD:
        raise TableError(f"a table is a whole number of {WORD}-byte words; "
                         f"this one has {mv.nbytes} bytes")
    return mv.cast("B").cast("Q")


def _check(words: memoryview, magic: int, what: str, version: int = VERSION) -> None:
    if len(words) < HEADER_WORDS or words[0] != magic or words[1] != version:
        raise TableError(f"not an etherws {what} table of version {version}")


@dataclass(frozen=True)
class PortSlot:
    """A snapshot of one port slot."""

    slot: int
    port: int
    shut: bool
    kind: int
    heartbeat_ns: int
    rx: int
    rx_bytes: int
    tx: int
    tx_bytes: int
    errors: int
    drops: int
    broker_errors: int = 0
    broker_drops: int = 0
    hold_until_ns: int = 0
    vlan_drops: int = 0
    storm_drops: int = 0
    rate_drops: int = 0
    loop_since_ns: int = 0
    """When the loop guard blocked the port (0: it forwards)."""
    loop_blocks: int = 0
    loop_drops: int = 0


@dataclass(frozen=True)
class PortRules:
    """What the supervisor told the broker about a port besides shut (words 17-19, 32-95)."""

    vlan: int
    trunk: tuple[int, ...]
    storm: int
    rate_bps: int


@dataclass(frozen=True)
class ProbeWords:
    """A slot's path probe words: the latest request and the latest result
    (``etherws.probe.from_words`` reads the last three)."""

    request: int
    size: int
    done: int
    rtt: int
    largest: int
    flags: int


@dataclass(frozen=True)
class PortHeader:
    """A snapshot of the port table's header."""

    generation: int
    broker_heartbeat_ns: int
    flush_request: int
    flush_port: int
    flush_done: int
    broker_malformed: int


# Who writes which words: the single-writer rule, checked by tests/unit/test_tables.py.
SUPERVISOR_HEADER = frozenset({H_GENERATION, H_FLUSH_REQUEST, H_FLUSH_PORT})
SUPERVISOR_SLOT = frozenset({S_PORT, S_FLAGS, S_KIND, S_RING, S_VLAN, S_STORM, S_RATE,
                             S_PROBE_REQUEST, S_PROBE_SIZE}) | TRUNK_SLOT
"""(``claim`` also zeroes a free slot's other words before anyone else uses it.)"""
BROKER_HEADER = frozenset({H_BROKER_HEARTBEAT, H_FLUSH_DONE, H_BROKER_MALFORMED,
                           H_BROKER_PID, H_SWITCH_ID})
BROKER_SLOT = frozenset({S_BROKER_DROPS, S_BROKER_ERRORS, S_HOLD_UNTIL, S_VLAN_DROPS,
                         S_STORM_DROPS, S_RATE_DROPS, S_LOOP_SINCE, S_LOOP_BLOCKS,
                         S_LOOP_DROPS})
LISTENER_HEADER = frozenset({H_LISTENER_HEARTBEAT})
WORKER_SLOT = frozenset({S_HEARTBEAT, S_RX, S_RX_BYTES, S_TX, S_TX_BYTES, S_ERRORS, S_DROPS,
                         S_PROBE_DONE, S_PROBE_RTT, S_PROBE_LARGEST, S_PROBE_FLAGS,
                         S_TOKEN_VLAN, S_TOKEN_MACS})
BROKER_FDB_HEADER = frozenset({F_IN_USE, F_REFUSED_FULL, F_REFUSED_PORT, F_HELD_MOVES})
BROKER_FDB_ENTRY = frozenset({E_SEQ, E_KEY, E_PORT, E_SEEN})


class PortTable:
    """The port table over a buffer (an mmap in production, a bytearray in tests)."""

    def __init__(self, buf: memoryview | bytearray) -> None:
        self.words = _words(buf)
        _check(self.words, PORT_MAGIC, "port", PORT_VERSION)
        self.nslots = self.words[2]
        if len(self.words) < HEADER_WORDS + self.nslots * SLOT_WORDS:
            raise TableError("port table is shorter than its slot count")

    @staticmethod
    def size(nslots: int) -> int:
        """Bytes a table with ``nslots`` slots takes."""
        return (HEADER_WORDS + nslots * SLOT_WORDS) * WORD

    @staticmethod
    def format(buf: memoryview | bytearray, nslots: int) -> PortTable:
        """Write an empty table into a zeroed buffer and return it."""
        words = _words(buf)
        words[0], words[1], words[2] = PORT_MAGIC, PORT_VERSION, nslots
        return PortTable(buf)

    def base(self, slot: int) -> int:
        """Index of the first word of ``slot``."""
        if not 0 <= slot < self.nslots:
            raise IndexError(f"slot {slot} out of range")
        return HEADER_WORDS + slot * SLOT_WORDS

    @property
    def generation(self) -> int:
        """Bumped by the supervisor after every change to ports or their shut flag."""
        return self.words[H_GENERATION]

    # --- supervisor side -------------------------------------------------
    def claim(self, slot: int, port: int, kind: PortKind, shut: bool = False,
              ring: int = 0) -> None:
        """Give a free slot to a new port, zeroing its counters (supervisor); ``ring`` is
        the generation of the port's ring file."""
        b = self.base(slot)
        if self.words[b + S_PORT]:
            raise TableError(f"slot {slot} is in use")
        for i in range(SLOT_WORDS):
            self.words[b + i] = 0
        self.words[b + S_KIND] = int(kind)
        self.words[b + S_FLAGS] = FLAG_SHUT if shut else 0
        self.words[b + S_RING] = ring
        self.words[b + S_PORT] = port
        self.words[H_GENERATION] += 1

    def release(self, slot: int) -> None:
        """Free a slot (supervisor)."""
        self.words[self.base(slot) + S_PORT] = 0
        self.words[H_GENERATION] += 1

    def set_shut(self, slot: int, shut: bool) -> None:
        """Set or clear a port's shut flag (supervisor)."""
        b = self.base(slot)
        flags = self.words[b + S_FLAGS]
        self.words[b + S_FLAGS] = (flags | FLAG_SHUT) if shut else (flags & ~FLAG_SHUT & _ALL_BITS)
        self.words[H_GENERATION] += 1

    def set_rules(self, slot: int, rules: PortRules) -> None:
        """Set a port's VLAN mode, trunk VIDs, storm and rate limits (supervisor)."""
        b = self.base(slot)
        w = self.words
        if len(rules.trunk) != TRUNK_WORDS:
            raise ValueError(f"a trunk bitmap has {TRUNK_WORDS} words")
        w[b + S_VLAN], w[b + S_STORM], w[b + S_RATE] = rules.vlan, rules.storm, rules.rate_bps
        for i, word in enumerate(rules.trunk):
            w[b + S_TRUNK + i] = word
        w[H_GENERATION] += 1

    def request_probe(self, slot: int, size: int) -> int:
        """Ask ``slot``'s worker for a path probe of ``size`` bytes (supervisor); returns
        the request's sequence, which ``probe`` shows as done once answered."""
        b = self.base(slot)
        self.words[b + S_PROBE_SIZE] = size  # before the sequence: the worker reads it after
        self.words[b + S_PROBE_REQUEST] += 1
        return self.words[b + S_PROBE_REQUEST]

    def free_slot(self, start: int = 0) -> int | None:
        """The first free slot at or after ``start`` (wrapping), or None when full.

        Allocating round-robin keeps a just-freed slot out of use for as long as possible,
        so a late counter update for a deleted port does not land on a new one.
        """
        for k in range(self.nslots):
            slot = (start + k) % self.nslots
            if not self.words[HEADER_WORDS + slot * SLOT_WORDS + S_PORT]:
                return slot
        return None

    def request_flush(self, port: int) -> int:
        """Ask the broker to forget the addresses of ``port`` (0: all); returns the ticket."""
        self.words[H_FLUSH_PORT] = port
        self.words[H_FLUSH_REQUEST] += 1
        return self.words[H_FLUSH_REQUEST]

    def flush_done(self, ticket: int) -> bool:
        """True once the broker has carried out flush request ``ticket``."""
        return self.words[H_FLUSH_DONE] >= ticket

    # --- readers ------------------------------------------------------------
    def read(self, slot: int) -> PortSlot:
        """A snapshot of ``slot``."""
        b = self.base(slot)
        w = self.words
        return PortSlot(
            slot=slot,
            port=w[b + S_PORT],
            shut=bool(w[b + S_FLAGS] & FLAG_SHUT),
            kind=w[b + S_KIND],
            heartbeat_ns=w[b + S_HEARTBEAT],
            rx=w[b + S_RX],
            rx_bytes=w[b + S_RX_BYTES],
            tx=w[b + S_TX],
            tx_bytes=w[b + S_TX_BYTES],
            errors=w[b + S_ERRORS] + w[b + S_BROKER_ERRORS],
            drops=(w[b + S_DROPS] + w[b + S_BROKER_DROPS] + w[b + S_VLAN_DROPS]
                   + w[b + S_STORM_DROPS] + w[b + S_RATE_DROPS] + w[b + S_LOOP_DROPS]),
            broker_errors=w[b + S_BROKER_ERRORS],
            broker_drops=w[b + S_BROKER_DROPS],
            hold_until_ns=w[b + S_HOLD_UNTIL],
            vlan_drops=w[b + S_VLAN_DROPS],
            storm_drops=w[b + S_STORM_DROPS],
            rate_drops=w[b + S_RATE_DROPS],
            loop_since_ns=w[b + S_LOOP_SINCE],
            loop_blocks=w[b + S_LOOP_BLOCKS],
            loop_drops=w[b + S_LOOP_DROPS],
        )

    def rules(self, slot: int) -> PortRules:
        """``slot``'s VLAN mode, trunk VIDs, storm and rate limits."""
        b = self.base(slot)
        w = self.words
        return PortRules(w[b + S_VLAN], tuple(w[b + S_TRUNK:b + S_TRUNK + TRUNK_WORDS]),
                         w[b + S_STORM], w[b + S_RATE])

    def probe(self, slot: int) -> ProbeWords:
        """``slot``'s probe words; the done sequence is read first, so result words read
        after it belong to that probe (or a newer one)."""
        b = self.base(slot)
        w = self.words
        done = w[b + S_PROBE_DONE]
        return ProbeWords(w[b + S_PROBE_REQUEST], w[b + S_PROBE_SIZE], done,
                          w[b + S_PROBE_RTT], w[b + S_PROBE_LARGEST], w[b + S_PROBE_FLAGS])

    def token(self, slot: int) -> tuple[int, int]:
        """``(vlan, max_macs)`` the token of ``slot``'s peer claims (0: none), as its
        worker wrote them: untrusted until checked."""
        b = self.base(slot)
        return self.words[b + S_TOKEN_VLAN], self.words[b + S_TOKEN_MACS]

    def header(self) -> PortHeader:
        """A snapshot of the header."""
        w = self.words
        return PortHeader(w[H_GENERATION], w[H_BROKER_HEARTBEAT], w[H_FLUSH_REQUEST],
                          w[H_FLUSH_PORT], w[H_FLUSH_DONE], w[H_BROKER_MALFORMED])

    def ring(self, slot: int) -> int:
        """The generation of ``slot``'s ring file (0: none)."""
        return self.words[self.base(slot) + S_RING]

    def heartbeat_ns(self, slot: int) -> int:
        """The latest heartbeat of ``slot``'s worker."""
        return self.words[self.base(slot) + S_HEARTBEAT]

    def broker_heartbeat_ns(self) -> int:
        """The broker's latest heartbeat."""
        return self.words[H_BROKER_HEARTBEAT]

    def broker_pid(self) -> int:
        """The pid of the broker that runs now (0 before the first one started)."""
        return self.words[H_BROKER_PID]

    def switch_id(self) -> int:
        """The loop guard's id of this switch (0 before the first broker drew it)."""
        return self.words[H_SWITCH_ID]

    def listener_heartbeat_ns(self) -> int:
        """The WebSocket listener's latest heartbeat."""
        return self.words[H_LISTENER_HEARTBEAT]

    def ports(self) -> Iterator[tuple[int, int, bool]]:
        """``(slot, port, shut)`` for every slot in use."""
        w = self.words
        for slot in range(self.nslots):
            b = HEADER_WORDS + slot * SLOT_WORDS
            port = w[b + S_PORT]
            if port:
                yield slot, port, bool(w[b + S_FLAGS] & FLAG_SHUT)


class BrokerView:
    """The broker's words of the port table: its heartbeat, flush answers, and the
    per-slot drops, errors and pauses it decides."""

    def __init__(self, table: PortTable) -> None:
        self.table = table
        self.words = table.words

    def heartbeat(self, now_ns: int) -> None:
        """Tell the supervisor the broker is alive."""
        self.words[H_BROKER_HEARTBEAT] = now_ns

    def started(self, pid: int) -> None:
        """A new broker runs: its workers attach to it again."""
        self.words[H_BROKER_PID] = pid

    def count_malformed(self) -> None:
        """A session message that did not parse (no port to charge it to)."""
        self.words[H_BROKER_MALFORMED] += 1

    def pending_flush(self) -> tuple[int, int] | None:
        """``(request, port)`` of a flush the supervisor asked for and nobody served
        (port 0: all), or None."""
        request = self.words[H_FLUSH_REQUEST]  # before the port: the supervisor writes it after
        if request == self.words[H_FLUSH_DONE]:
            return None
        return request, self.words[H_FLUSH_PORT]

    def flush_served(self, request: int) -> None:
        """Flush ``request`` is done."""
        self.words[H_FLUSH_DONE] = request

    def add_errors(self, slot: int, n: int) -> None:
        """Frames from ``slot``'s port that could not be parsed."""
        self.words[self.table.base(slot) + S_BROKER_ERRORS] += n

    def add_drops(self, slot: int, n: int) -> None:
        """Frames for ``slot``'s port that its full queue could not take."""
        self.words[self.table.base(slot) + S_BROKER_DROPS] += n

    def add_policed(self, slot: int, vlan: int, storm: int, rate: int) -> None:
        """Frames from ``slot``'s port dropped by its VLAN, storm and rate rules."""
        b = self.table.base(slot)
        w = self.words
        if vlan:
            w[b + S_VLAN_DROPS] += vlan
        if storm:
            w[b + S_STORM_DROPS] += storm
        if rate:
            w[b + S_RATE_DROPS] += rate

    def hold(self, slot: int, until_ns: int) -> None:
        """Ask ``slot``'s worker to read nothing from its medium before ``until_ns``."""
        self.words[self.table.base(slot) + S_HOLD_UNTIL] = until_ns

    def switch_id(self, drawn: int) -> int:
        """The switch's loop-guard id: the one a broker before us kept, else ``drawn``
        (kept from now on)."""
        if not self.words[H_SWITCH_ID]:
            self.words[H_SWITCH_ID] = drawn
        return self.words[H_SWITCH_ID]

    def loop_since_ns(self, slot: int) -> int:
        """When the loop guard blocked ``slot``'s port (0: not blocked)."""
        return self.words[self.table.base(slot) + S_LOOP_SINCE]

    def set_loop(self, slot: int, since_ns: int) -> None:
        """The loop guard blocked ``slot``'s port at ``since_ns`` (counted), or opened it (0)."""
        b = self.table.base(slot)
        if since_ns and not self.words[b + S_LOOP_SINCE]:
            self.words[b + S_LOOP_BLOCKS] += 1
        self.words[b + S_LOOP_SINCE] = since_ns

    def add_loop_drops(self, slot: int, n: int) -> None:
        """Frames from ``slot``'s port dropped because the loop guard blocks it."""
        self.words[self.table.base(slot) + S_LOOP_DROPS] += n


class ListenerView:
    """The listener's one word: its heartbeat."""

    def __init__(self, table: PortTable) -> None:
        self.words = table.words

    def heartbeat(self, now_ns: int) -> None:
        """Tell the supervisor the listener is alive (its accept loop runs)."""
        self.words[H_LISTENER_HEARTBEAT] = now_ns


class SlotView:
    """A port worker's words of its slot: counters only add (a restarted worker
    continues its predecessor's), the heartbeat, and the pause the broker asked for."""

    def __init__(self, table: PortTable, slot: int) -> None:
        self.table = table
        self.slot = slot
        self.words = table.words
        self.base = table.base(slot)

    @property
    def port(self) -> int:
        """The port the supervisor gave this slot to."""
        return self.words[self.base + S_PORT]

    @property
    def ring(self) -> int:
        """The generation of the port's ring file."""
        return self.words[self.base + S_RING]

    def received(self, frames: int, nbytes: int) -> None:
        """Frames read from the medium and handed to the broker (rx)."""
        b = self.base
        self.words[b + S_RX] += frames
        self.words[b + S_RX_BYTES] += nbytes

    def sent(self, frames: int, nbytes: int) -> None:
        """Frames written out to the medium (tx)."""
        b = self.base
        self.words[b + S_TX] += frames
        self.words[b + S_TX_BYTES] += nbytes

    def add_errors(self, n: int) -> None:
        """Malformed frames or messages, dropped."""
        if n:
            self.words[self.base + S_ERRORS] += n

    def add_drops(self, n: int) -> None:
        """Good frames lost for lack of room."""
        if n:
            self.words[self.base + S_DROPS] += n

    def heartbeat(self, now_ns: int) -> None:
        """Tell the supervisor this worker is alive."""
        self.words[self.base + S_HEARTBEAT] = now_ns

    def probe_request(self) -> tuple[int, int] | None:
        """``(sequence, size)`` of the supervisor's latest probe request when it is not
        done yet, else None."""
        b, w = self.base, self.words
        request = w[b + S_PROBE_REQUEST]  # before the size: the supervisor writes it after
        if request == w[b + S_PROBE_DONE]:
            return None
        return request, w[b + S_PROBE_SIZE]

    def probe_done(self, request: int, rtt: int, largest: int, flags: int) -> None:
        """Publish probe ``request``'s result words (``etherws.probe.to_words``), the done
        sequence last."""
        b, w = self.base, self.words
        w[b + S_PROBE_RTT], w[b + S_PROBE_LARGEST], w[b + S_PROBE_FLAGS] = rtt, largest, flags
        w[b + S_PROBE_DONE] = request

    def set_token(self, vlan: int, max_macs: int) -> None:
        """The claims of the token this peer presented (0: none); written before the
        worker attaches, when the broker reads them."""
        self.words[self.base + S_TOKEN_VLAN] = vlan
        self.words[self.base + S_TOKEN_MACS] = max_macs

    def hold_ns(self, now_ns: int) -> int:
        """Nanoseconds left of a pause the broker asked for (its port's queue was full
        with everything this port sent); 0 when none."""
        return max(self.words[self.base + S_HOLD_UNTIL] - now_ns, 0)


class FdbTable:
    """The FDB entry array over a buffer; the broker's ``Fdb`` is its only writer."""

    def __init__(self, buf: memoryview | bytearray) -> None:
        self.words = _words(buf)
        _check(self.words, FDB_MAGIC, "FDB")
        self.capacity = self.words[2]
        if len(self.words) < HEADER_WORDS + self.capacity * ENTRY_WORDS:
            raise TableError("FDB table is shorter than its capacity")

    @staticmethod
    def size(capacity: int) -> int:
        """Bytes a table of ``capacity`` entries takes."""
        return (HEADER_WORDS + capacity * ENTRY_WORDS) * WORD

    @staticmethod
    def format(buf: memoryview | bytearray, capacity: int) -> FdbTable:
        """Write an empty table into a zeroed buffer and return it."""
        words = _words(buf)
        words[0], words[1], words[2] = FDB_MAGIC, VERSION, capacity
        return FdbTable(buf)

    # --- the header: counters the broker writes, everyone reads -----------------------
    @property
    def in_use(self) -> int:
        """Entries in use."""
        return self.words[F_IN_USE]

    @property
    def refused_full(self) -> int:
        """Learns refused because the table was full."""
        return self.words[F_REFUSED_FULL]

    @property
    def refused_port(self) -> int:
        """Learns refused because the port held its most addresses."""
        return self.words[F_REFUSED_PORT]

    @property
    def held_moves(self) -> int:
        """Frames whose source was held on the port it was learned on (MAC move
        protection)."""
        return self.words[F_HELD_MOVES]

    def set_in_use(self, n: int) -> None:
        """Publish how many entries are in use (broker)."""
        self.words[F_IN_USE] = n

    def count_refused_full(self) -> None:
        """A learn refused: the table is full (broker)."""
        self.words[F_REFUSED_FULL] += 1

    def count_refused_port(self) -> None:
        """A learn refused: the port holds its most addresses (broker)."""
        self.words[F_REFUSED_PORT] += 1

    def count_held_move(self) -> None:
        """A move refused: the station was on its port within the hold-down (broker)."""
        self.words[F_HELD_MOVES] += 1

    # --- entries ---------------------------------------------------------------------
    def write(self, i: int, key: int, port: int, seen_ns: int) -> None:
        """Rewrite entry ``i`` under the seqlock (broker)."""
        w = self.words
        b = HEADER_WORDS + i * ENTRY_WORDS
        seq = w[b + E_SEQ] | 1  # odd while writing; also repairs an entry left torn
        w[b + E_SEQ] = seq
        w[b + E_KEY] = key
        w[b + E_PORT] = port
        w[b + E_SEEN] = seen_ns
        w[b + E_SEQ] = seq + 1

    def touch(self, i: int, seen_ns: int) -> None:
        """Update only the last-seen time of entry ``i`` (broker); one word, no seqlock."""
        self.words[HEADER_WORDS + i * ENTRY_WORDS + E_SEEN] = seen_ns

    def clear(self, i: int) -> None:
        """Empty entry ``i`` (broker)."""
        self.write(i, 0, 0, 0)

    def read(self, i: int, retries: int = 100) -> tuple[int, int, int] | None:
        """``(key, port, seen_ns)`` of entry ``i``, or None when empty.

        Retries while the writer is inside the entry; after ``retries`` attempts the
        entry is reported empty rather than torn (the writer is at most one entry busy).
        """
        w = self.words
        b = HEADER_WORDS + i * ENTRY_WORDS
        for _ in range(retries):
            seq = w[b + E_SEQ]
            if seq & 1:
                continue
            key, port, seen = w[b + E_KEY], w[b + E_PORT], w[b + E_SEEN]
            if w[b + E_SEQ] == seq:
                return (key, port, seen) if port else None
        return None

    def is_torn(self, i: int) -> bool:
        """True when entry ``i`` was left half-written (its writer died inside it)."""
        return bool(self.words[HEADER_WORDS + i * ENTRY_WORDS + E_SEQ] & 1)

    def entries(self) -> Iterator[tuple[int, int, int, int]]:
        """``(index, key, port, seen_ns)`` of every entry in use."""
        for i in range(self.capacity):
            e = self.read(i)
            if e is not None:
                yield (i, *e)

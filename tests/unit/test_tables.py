"""etherws.tables: the shared port table and FDB layouts, over plain bytearrays."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etherws import tables
from etherws.errors import EtherwsError
from etherws.tables import (
    FDB_MAGIC,
    FLAG_SHUT,
    HEADER_WORDS,
    PORT_MAGIC,
    SLOT_WORDS,
    BrokerView,
    FdbTable,
    ListenerView,
    PortKind,
    PortTable,
    SlotView,
    TableError,
)

NSLOTS = 4
CAPACITY = 8


def port_table(nslots: int = NSLOTS) -> PortTable:
    """An empty port table in a bytearray."""
    return PortTable.format(bytearray(PortTable.size(nslots)), nslots)


def fdb_table(capacity: int = CAPACITY) -> FdbTable:
    """An empty FDB in a bytearray."""
    return FdbTable.format(bytearray(FdbTable.size(capacity)), capacity)


# --- PortTable -------------------------------------------------------------------------
def test_empty_port_table() -> None:
    t = port_table()
    assert t.nslots == NSLOTS
    assert t.generation == 0
    assert list(t.ports()) == []
    assert PortTable.size(NSLOTS) == (HEADER_WORDS + NSLOTS * SLOT_WORDS) * 8


def test_reopen_sees_the_same_table() -> None:
    buf = bytearray(PortTable.size(NSLOTS))
    PortTable.format(buf, NSLOTS).claim(1, 7, PortKind.TAP)
    again = PortTable(buf)
    assert list(again.ports()) == [(1, 7, False)]
    # A buffer already cast to words works as well (an mmap cast by the caller).
    assert PortTable(memoryview(buf).cast("Q")).nslots == NSLOTS


def test_claim_zeroes_the_slot_and_bumps_generation() -> None:
    t = port_table()
    b = t.base(2)
    for i in range(SLOT_WORDS):
        t.words[b + i] = 99  # a previous port's leftovers
    t.words[b + tables.S_PORT] = 0
    t.claim(2, 5, PortKind.NETDEV, shut=True)
    s = t.read(2)
    assert (s.slot, s.port, s.shut, s.kind) == (2, 5, True, PortKind.NETDEV)
    assert (s.heartbeat_ns, s.rx, s.rx_bytes, s.tx, s.tx_bytes, s.errors, s.drops) == (0,) * 7
    assert t.generation == 1


def test_claim_refuses_a_slot_in_use_and_out_of_range() -> None:
    t = port_table()
    t.claim(0, 1, PortKind.TAP)
    with pytest.raises(TableError):
        t.claim(0, 2, PortKind.TAP)
    for slot in (-1, NSLOTS):
        with pytest.raises(IndexError):
            t.claim(slot, 3, PortKind.TAP)
    assert t.generation == 1


def test_release() -> None:
    t = port_table()
    t.claim(1, 4, PortKind.CLIENT)
    t.release(1)
    assert list(t.ports()) == []
    assert t.read(1).port == 0
    assert t.generation == 2
    t.claim(1, 6, PortKind.SERVER)  # the slot is free again
    assert list(t.ports()) == [(1, 6, False)]


def test_set_shut_keeps_other_flags() -> None:
    t = port_table()
    t.claim(0, 1, PortKind.TAP)
    other = 1 << 7
    t.words[t.base(0) + tables.S_FLAGS] |= other
    t.set_shut(0, True)
    assert t.read(0).shut and t.words[t.base(0) + tables.S_FLAGS] == other | FLAG_SHUT
    assert list(t.ports()) == [(0, 1, True)]
    t.set_shut(0, False)
    assert not t.read(0).shut and t.words[t.base(0) + tables.S_FLAGS] == other
    assert t.generation == 3


@pytest.mark.parametrize("used, start, expected", [
    ([], 0, 0),
    ([], 3, 3),
    ([0], 0, 1),
    ([2, 3], 2, 0),          # wraps around
    ([1], 1, 2),
    ([0, 1, 2], 3, 3),
    ([0, 1, 2, 3], 0, None),  # full
    ([0, 1, 2, 3], 2, None),
])
def test_free_slot_round_robin(used: list[int], start: int, expected: int | None) -> None:
    t = port_table()
    for slot in used:
        t.claim(slot, slot + 1, PortKind.TAP)
    assert t.free_slot(start) == expected


def test_flush_tickets() -> None:
    t = port_table()
    first = t.request_flush(5)
    assert t.words[tables.H_FLUSH_PORT] == 5 and not t.flush_done(first)
    second = t.request_flush(0)
    assert second == first + 1 and t.words[tables.H_FLUSH_PORT] == 0
    t.words[tables.H_FLUSH_DONE] = first  # the broker carried out the first
    assert t.flush_done(first) and not t.flush_done(second)
    t.words[tables.H_FLUSH_DONE] = second
    assert t.flush_done(first) and t.flush_done(second)


def test_read_sums_worker_and_broker_counters() -> None:
    t = port_table()
    t.claim(3, 9, PortKind.TAP)
    b = t.base(3)
    values = {tables.S_HEARTBEAT: 123, tables.S_RX: 1, tables.S_RX_BYTES: 60, tables.S_TX: 2,
              tables.S_TX_BYTES: 120, tables.S_ERRORS: 3, tables.S_DROPS: 4,
              tables.S_BROKER_DROPS: 10, tables.S_BROKER_ERRORS: 20}
    for word, value in values.items():
        t.words[b + word] = value
    s = t.read(3)
    assert (s.heartbeat_ns, s.rx, s.rx_bytes, s.tx, s.tx_bytes) == (123, 1, 60, 2, 120)
    assert (s.errors, s.drops) == (23, 14)


def test_port_kind_labels() -> None:
    assert [k.label for k in PortKind] == ["tap", "netdev", "client", "server"]


ops = st.lists(st.tuples(st.sampled_from(["claim", "release", "shut", "open"]),
                         st.integers(0, NSLOTS - 1)), max_size=40)


@given(ops)
def test_port_table_follows_a_model(steps: list[tuple[str, int]]) -> None:
    t = port_table()
    model: dict[int, tuple[int, bool]] = {}
    next_port = 1
    for op, slot in steps:
        before = t.generation
        if op == "claim" and slot not in model:
            t.claim(slot, next_port, PortKind.TAP)
            model[slot] = (next_port, False)
            next_port += 1
        elif op == "release" and slot in model:
            t.release(slot)
            del model[slot]
        elif op in ("shut", "open") and slot in model:
            t.set_shut(slot, op == "shut")
            model[slot] = (model[slot][0], op == "shut")
        else:
            continue
        assert t.generation == before + 1
        assert list(t.ports()) == [(s, p, shut) for s, (p, shut) in sorted(model.items())]
        assert t.free_slot() == next((s for s in range(NSLOTS) if s not in model), None)


# --- table errors --------------------------------------------------------------------
def _header(magic: int, version: int, count: int, words: int) -> bytearray:
    buf = bytearray(words * 8)
    mv = memoryview(buf).cast("Q")
    mv[0], mv[1], mv[2] = magic, version, count
    return buf


@pytest.mark.parametrize("cls, buf", [
    (PortTable, bytearray()),
    (PortTable, bytearray(8 * (HEADER_WORDS - 1))),
    (PortTable, bytearray(PortTable.size(2))),                          # zeroed: no magic
    (PortTable, _header(FDB_MAGIC, 1, 2, 100)),                         # an FDB
    (PortTable, _header(PORT_MAGIC, 4, 2, 400)),                        # a newer version
    (PortTable, _header(PORT_MAGIC, 2, 2, 400)),                        # an older layout
    (PortTable, _header(PORT_MAGIC, 3, 2, HEADER_WORDS + SLOT_WORDS)),  # short of slot 1
    (FdbTable, bytearray()),
    (FdbTable, _header(PORT_MAGIC, 1, 2, 100)),
    (FdbTable, _header(FDB_MAGIC, 0, 2, 100)),
    (FdbTable, _header(FDB_MAGIC, 1, 2, HEADER_WORDS + 7)),             # short of entry 1
], ids=lambda v: v.__name__ if isinstance(v, type) else None)
def test_table_error(cls: type, buf: bytearray) -> None:
    with pytest.raises(TableError):
        cls(buf)


@pytest.mark.parametrize("cls", [PortTable, FdbTable])
def test_table_error_on_ragged_buffer(cls: type) -> None:
    with pytest.raises(TableError):
        cls(bytearray(HEADER_WORDS * 8 + 3))


def test_table_error_is_ours_not_a_value_error() -> None:
    assert issubclass(TableError, EtherwsError) and not issubclass(TableError, ValueError)


# --- FdbTable --------------------------------------------------------------------------
KEY = tables.fdb_key(10, bytes.fromhex("020000000001"))


def test_empty_fdb() -> None:
    t = fdb_table()
    assert t.capacity == CAPACITY
    assert list(t.entries()) == []
    assert all(t.read(i) is None for i in range(CAPACITY))
    assert FdbTable.size(CAPACITY) == (HEADER_WORDS + CAPACITY * tables.ENTRY_WORDS) * 8


def test_fdb_write_read_touch_clear() -> None:
    t = fdb_table()
    t.write(3, KEY, 2, 1000)
    assert t.read(3) == (KEY, 2, 1000)
    assert list(t.entries()) == [(3, KEY, 2, 1000)]
    seq = t.words[HEADER_WORDS + 3 * tables.ENTRY_WORDS + tables.E_SEQ]
    assert seq == 2 and not t.is_torn(3)
    t.touch(3, 2000)
    assert t.read(3) == (KEY, 2, 2000)
    t.clear(3)
    assert t.read(3) is None and list(t.entries()) == []
    assert not t.is_torn(3)


def test_fdb_entry_with_port_zero_is_empty() -> None:
    t = fdb_table()
    t.write(0, KEY, 0, 5)
    assert t.read(0) is None


def test_fdb_torn_entry() -> None:
    t = fdb_table()
    t.write(1, KEY, 4, 7)
    # The broker died between the two sequence bumps of a rewrite.
    t.words[HEADER_WORDS + 1 * tables.ENTRY_WORDS + tables.E_SEQ] += 1
    assert t.is_torn(1)
    assert t.read(1, retries=3) is None  # reported empty, never half-written
    assert list(t.entries()) == []


@pytest.mark.parametrize("repair", ["write", "clear"])
def test_fdb_rewrite_repairs_a_torn_entry(repair: str) -> None:
    # A restarted broker rewrites or clears what its predecessor left half-written.
    t = fdb_table()
    t.write(1, KEY, 4, 7)
    t.words[HEADER_WORDS + 1 * tables.ENTRY_WORDS + tables.E_SEQ] += 1  # died mid-write
    if repair == "write":
        t.write(1, KEY, 4, 8)
    else:
        t.clear(1)
    assert not t.is_torn(1)
    assert t.words[HEADER_WORDS + 1 * tables.ENTRY_WORDS + tables.E_SEQ] % 2 == 0
    assert t.read(1, retries=3) == ((KEY, 4, 8) if repair == "write" else None)
    t.write(1, KEY, 5, 9)  # and the entry keeps working afterwards
    assert t.read(1) == (KEY, 5, 9)


def test_fdb_entries_lists_every_entry_in_use() -> None:
    t = fdb_table()
    written = {i: (tables.fdb_key(i, bytes([2, 0, 0, 0, 0, i])), i + 1, i * 10)
               for i in (0, 2, CAPACITY - 1)}
    for i, (key, port, seen) in written.items():
        t.write(i, key, port, seen)
    assert list(t.entries()) == [(i, *v) for i, v in sorted(written.items())]


# --- keys --------------------------------------------------------------------------------
def test_fdb_key_layout() -> None:
    assert tables.fdb_key(0, bytes.fromhex("020000000001")) == 0x020000000001
    assert tables.fdb_key(1, bytes(6)) == 1 << 48


@given(st.integers(0, 0xFFF), st.binary(min_size=6, max_size=6))
def test_fdb_key_round_trip(vid: int, mac: bytes) -> None:
    key = tables.fdb_key(vid, mac)
    assert 0 <= key < 2**64
    assert tables.split_key(key) == (vid, mac)


# --- one writer per word ---------------------------------------------------------------------
def _changed(table: PortTable, act: Callable[[], object]) -> tuple[set[int], set[int]]:
    """(header words, slot-relative words of slot 1) that ``act`` changed."""
    before = list(table.words)
    act()
    after = list(table.words)
    changed = {i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b}
    header = {i for i in changed if i < tables.HEADER_WORDS}
    base = table.base(1)
    slot = {i - base for i in changed if base <= i < base + tables.SLOT_WORDS}
    assert changed == header | {base + i for i in slot}, "a write outside slot 1"
    return header, slot


def _fdb_changed(table: FdbTable, act: Callable[[], object]) -> tuple[set[int], set[int]]:
    """(header words, entry-relative words of entry 1) that ``act`` changed."""
    before = list(table.words)
    act()
    after = list(table.words)
    changed = {i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b}
    header = {i for i in changed if i < tables.HEADER_WORDS}
    base = HEADER_WORDS + 1 * tables.ENTRY_WORDS
    entry = {i - base for i in changed if base <= i < base + tables.ENTRY_WORDS}
    assert changed == header | {base + i for i in entry}, "a write outside entry 1"
    return header, entry


def _fresh() -> PortTable:
    table = PortTable.format(bytearray(PortTable.size(4)), 4)
    table.claim(1, 7, PortKind.TAP)
    return table


def _fresh_fdb() -> FdbTable:
    return FdbTable.format(bytearray(FdbTable.size(4)), 4)


# Every public member of each view, by name: the writes, the reads, and the two static
# constructors. A method added to a view without a line here fails the census below.
BROKER_WRITES: dict[str, Callable[[BrokerView], object]] = {
    "heartbeat": lambda v: v.heartbeat(123), "count_malformed": lambda v: v.count_malformed(),
    "flush_served": lambda v: v.flush_served(5), "add_errors": lambda v: v.add_errors(1, 2),
    "add_drops": lambda v: v.add_drops(1, 3), "hold": lambda v: v.hold(1, 99),
    "started": lambda v: v.started(4242),
    "add_policed": lambda v: v.add_policed(1, 1, 2, 3),
    "switch_id": lambda v: v.switch_id(12345), "set_loop": lambda v: v.set_loop(1, 77),
    "add_loop_drops": lambda v: v.add_loop_drops(1, 5),
}
BROKER_READS: dict[str, Callable[[BrokerView], object]] = {
    "pending_flush": lambda v: v.pending_flush(),
    "loop_since_ns": lambda v: v.loop_since_ns(1),
}
WORKER_WRITES: dict[str, Callable[[SlotView], object]] = {
    "received": lambda v: v.received(1, 60), "sent": lambda v: v.sent(2, 120),
    "add_errors": lambda v: v.add_errors(1), "add_drops": lambda v: v.add_drops(4),
    "heartbeat": lambda v: v.heartbeat(77),
    "probe_done": lambda v: v.probe_done(1, 2, 3, 4),
    "set_token": lambda v: v.set_token(10, 2),
}
LISTENER_WRITES: dict[str, Callable[[ListenerView], object]] = {
    "heartbeat": lambda v: v.heartbeat(5),
}
WORKER_READS: dict[str, Callable[[SlotView], object]] = {
    "port": lambda v: v.port, "hold_ns": lambda v: v.hold_ns(5), "ring": lambda v: v.ring,
    "probe_request": lambda v: v.probe_request(),
}
SUPERVISOR_WRITES: dict[str, Callable[[PortTable], object]] = {
    "set_shut": lambda t: t.set_shut(1, True), "request_flush": lambda t: t.request_flush(7),
    "release": lambda t: t.release(1),
    "request_probe": lambda t: t.request_probe(1, 9014),
    "set_rules": lambda t: t.set_rules(1, tables.PortRules(
        6 << 2 | 2, tuple(range(1, 65)), 100, 10**6)),
    "claim": lambda t: t.claim(2, 8, PortKind.CLIENT, ring=77),  # on a free slot below
}
PORT_READS: dict[str, Callable[[PortTable], object]] = {
    "base": lambda t: t.base(1), "generation": lambda t: t.generation,
    "free_slot": lambda t: t.free_slot(), "flush_done": lambda t: t.flush_done(1),
    "read": lambda t: t.read(1), "header": lambda t: t.header(),
    "heartbeat_ns": lambda t: t.heartbeat_ns(1), "ring": lambda t: t.ring(1),
    "broker_heartbeat_ns": lambda t: t.broker_heartbeat_ns(),
    "listener_heartbeat_ns": lambda t: t.listener_heartbeat_ns(),
    "broker_pid": lambda t: t.broker_pid(), "switch_id": lambda t: t.switch_id(),
    "ports": lambda t: list(t.ports()),
    "rules": lambda t: t.rules(1),
    "probe": lambda t: t.probe(1),
    "token": lambda t: t.token(1),
}
FDB_WRITES: dict[str, Callable[[FdbTable], object]] = {
    "write": lambda t: t.write(1, KEY, 3, 99), "touch": lambda t: t.touch(1, 99),
    "clear": lambda t: t.clear(1), "set_in_use": lambda t: t.set_in_use(3),
    "count_refused_full": lambda t: t.count_refused_full(),
    "count_refused_port": lambda t: t.count_refused_port(),
    "count_held_move": lambda t: t.count_held_move(),
}
FDB_READS: dict[str, Callable[[FdbTable], object]] = {
    "in_use": lambda t: t.in_use, "refused_full": lambda t: t.refused_full,
    "refused_port": lambda t: t.refused_port, "held_moves": lambda t: t.held_moves,
    "read": lambda t: t.read(1),
    "is_torn": lambda t: t.is_torn(1), "entries": lambda t: list(t.entries()),
}
CONSTRUCTORS = {"size", "format"}


@pytest.mark.parametrize("cls, members", [
    (BrokerView, BROKER_WRITES.keys() | BROKER_READS.keys()),
    (SlotView, WORKER_WRITES.keys() | WORKER_READS.keys()),
    (ListenerView, LISTENER_WRITES.keys()),
    (PortTable, SUPERVISOR_WRITES.keys() | PORT_READS.keys() | CONSTRUCTORS),
    (FdbTable, FDB_WRITES.keys() | FDB_READS.keys() | CONSTRUCTORS),
], ids=lambda v: v.__name__ if isinstance(v, type) else "")
def test_every_view_member_is_checked(cls: type, members: set[str]) -> None:
    public = {name for name in vars(cls) if not name.startswith("_")}
    assert public == members


@pytest.mark.parametrize("write", BROKER_WRITES.values(), ids=BROKER_WRITES.keys())
def test_the_broker_writes_only_its_words(write: Callable[[BrokerView], object]) -> None:
    table = _fresh()
    header, slot = _changed(table, lambda: write(BrokerView(table)))
    assert header | slot and header <= tables.BROKER_HEADER and slot <= tables.BROKER_SLOT


@pytest.mark.parametrize("write", WORKER_WRITES.values(), ids=WORKER_WRITES.keys())
def test_a_worker_writes_only_its_words(write: Callable[[SlotView], object]) -> None:
    table = _fresh()
    header, slot = _changed(table, lambda: write(SlotView(table, 1)))
    assert slot and not header and slot <= tables.WORKER_SLOT


def test_the_listener_writes_only_its_word() -> None:
    table = _fresh()
    header, slot = _changed(table, lambda: LISTENER_WRITES["heartbeat"](ListenerView(table)))
    assert header == tables.LISTENER_HEADER and not slot
    assert table.listener_heartbeat_ns() == 5


@pytest.mark.parametrize("write", [w for name, w in SUPERVISOR_WRITES.items()
                                   if name != "claim"],
                         ids=[name for name in SUPERVISOR_WRITES if name != "claim"])
def test_the_supervisor_writes_only_its_words(write: Callable[[PortTable], object]) -> None:
    table = _fresh()
    header, slot = _changed(table, lambda: write(table))
    assert header <= tables.SUPERVISOR_HEADER and slot <= tables.SUPERVISOR_SLOT


def test_claim_writes_a_free_slot_and_the_generation_only() -> None:
    table = PortTable.format(bytearray(PortTable.size(4)), 4)
    header, slot = _changed(table, lambda: table.claim(1, 7, PortKind.TAP, shut=True))
    assert header == {tables.H_GENERATION} and slot <= tables.SUPERVISOR_SLOT


@pytest.mark.parametrize("write", FDB_WRITES.values(), ids=FDB_WRITES.keys())
def test_the_broker_writes_only_its_fdb_words(write: Callable[[FdbTable], object]) -> None:
    table = _fresh_fdb()
    header, entry = _fdb_changed(table, lambda: write(table))
    assert header | entry and header <= tables.BROKER_FDB_HEADER
    assert entry <= tables.BROKER_FDB_ENTRY


@pytest.mark.parametrize("view, read", [
    *[(lambda t: BrokerView(t), r) for r in BROKER_READS.values()],
    *[(lambda t: SlotView(t, 1), r) for r in WORKER_READS.values()],
    *[(lambda t: t, r) for r in PORT_READS.values()],
], ids=[*BROKER_READS, *WORKER_READS, *PORT_READS])
def test_port_table_reads_write_nothing(view: Callable[[PortTable], object],
                                        read: Callable[[object], object]) -> None:
    table = _fresh()
    assert _changed(table, lambda: read(view(table))) == (set(), set())


@pytest.mark.parametrize("read", FDB_READS.values(), ids=FDB_READS.keys())
def test_fdb_reads_write_nothing(read: Callable[[FdbTable], object]) -> None:
    table = _fresh_fdb()
    table.write(1, KEY, 3, 99)
    assert _fdb_changed(table, lambda: read(table)) == (set(), set())


def test_writers_own_disjoint_words_inside_the_header_and_the_slot() -> None:
    headers = [tables.SUPERVISOR_HEADER, tables.BROKER_HEADER, tables.LISTENER_HEADER]
    slots = [tables.SUPERVISOR_SLOT, tables.BROKER_SLOT, tables.WORKER_SLOT]
    assert all(0 < i < tables.HEADER_WORDS for h in headers for i in h)
    assert all(0 <= i < tables.SLOT_WORDS for s in slots for i in s)
    assert sum(map(len, headers)) == len(set().union(*headers))
    assert sum(map(len, slots)) == len(set().union(*slots))
    named = {v for k, v in vars(tables).items() if k.startswith("S_")}
    assert named | tables.TRUNK_SLOT == set().union(*slots)  # every slot word has its writer


def _named(prefix: str) -> set[int]:
    return {v for k, v in vars(tables).items() if k.startswith(prefix)}


def test_every_named_word_has_one_writer_and_lies_inside_its_region() -> None:
    # Words 0-2 of both headers (magic, version, size) are written once, at creation.
    port_header = tables.SUPERVISOR_HEADER | tables.BROKER_HEADER | tables.LISTENER_HEADER
    assert _named("H_") == port_header and all(2 < i < HEADER_WORDS for i in port_header)
    assert _named("F_") == tables.BROKER_FDB_HEADER
    assert all(2 < i < HEADER_WORDS for i in tables.BROKER_FDB_HEADER)
    assert _named("E_") == tables.BROKER_FDB_ENTRY
    assert all(0 <= i < tables.ENTRY_WORDS for i in tables.BROKER_FDB_ENTRY)


WORD_NAME = re.compile(r"\b(S|H|F|E)_[A-Z][A-Z_]+\b")
# The layout's own module and the tests of the two modules that work on raw words.
NAMES_ALLOWED = {"etherws/tables.py", "tests/unit/test_tables.py", "tests/unit/broker/test_fdb.py"}


def test_table_words_are_named_only_in_tables_and_fdb() -> None:
    repo = Path(__file__).resolve().parents[2]
    users = set()
    for top in ("etherws", "tests", "tools"):
        for p in (repo / top).rglob("*"):
            if not p.is_file() or "__pycache__" in p.parts:
                continue
            text = p.read_text(errors="replace").replace("stat.S_I", "")
            if WORD_NAME.search(text):
                users.add(str(p.relative_to(repo)))
    assert "etherws/tables.py" in users and users <= NAMES_ALLOWED, sorted(users)


@pytest.mark.parametrize("vid, mac, ok", [
    (0, bytes.fromhex("020000000001"), True), (4095, bytes.fromhex("020000000001"), True),
    (4096, bytes.fromhex("020000000001"), False), (-1, bytes.fromhex("020000000001"), False),
    (0, bytes.fromhex("010000000001"), False), (0, bytes(6), False),
    (0, bytes.fromhex("ffffffffffff"), False), (0, bytes.fromhex("0200000001"), False),
])
def test_one_learnable_rule(vid: int, mac: bytes, ok: bool) -> None:
    assert tables.learnable(vid, mac) is ok
    if len(mac) == 6 and 0 <= vid < 1 << 16:
        assert tables.learnable(*tables.split_key(tables.fdb_key(vid, mac))) is ok


@pytest.mark.parametrize("age, gone", [(0.0, False), (299.999, False), (300.0, True),
                                       (1e6, True)])
def test_one_ageing_rule(age: float, gone: bool) -> None:
    assert tables.aged(1000.0 + age, 1000.0, 300.0) is gone


def test_a_claimed_slot_names_its_ring_generation_for_its_worker() -> None:
    t = port_table()
    t.claim(1, 7, PortKind.TAP, ring=0xFEED)
    assert t.ring(1) == 0xFEED and SlotView(t, 1).ring == 0xFEED
    t.release(1)
    t.claim(1, 8, PortKind.TAP)  # a new port in the slot: never the old ring
    assert t.ring(1) == 0


# --- VLAN, storm and rate rules ---------------------------------------------------------------
def test_rules_round_trip_and_bump_the_generation() -> None:
    t = port_table()
    t.claim(1, 7, PortKind.TAP)
    assert t.rules(1) == tables.PortRules(0, (0,) * tables.TRUNK_WORDS, 0, 0)
    rules = tables.PortRules(10 << 2 | 2, tuple(range(tables.TRUNK_WORDS)), 500, 8_000_000)
    g = t.generation
    t.set_rules(1, rules)
    assert t.rules(1) == rules and t.generation == g + 1
    with pytest.raises(ValueError):
        t.set_rules(1, tables.PortRules(0, (0,), 0, 0))
    t.release(1)
    t.claim(1, 8, PortKind.TAP)  # a new port starts with no rules
    assert t.rules(1) == tables.PortRules(0, (0,) * tables.TRUNK_WORDS, 0, 0)


def test_policed_drops_are_counted_apart_and_in_the_drops() -> None:
    t = port_table()
    t.claim(1, 7, PortKind.TAP)
    v = BrokerView(t)
    v.add_drops(1, 1)
    v.add_policed(1, 2, 3, 4)
    v.add_policed(1, 0, 0, 0)
    s = t.read(1)
    assert (s.vlan_drops, s.storm_drops, s.rate_drops, s.drops) == (2, 3, 4, 10)


def test_a_probe_request_is_seen_until_its_result_is_published() -> None:
    table = _fresh()
    worker = SlotView(table, 1)
    assert worker.probe_request() is None
    first = table.request_probe(1, 1514)
    assert worker.probe_request() == (first, 1514)
    second = table.request_probe(1, 9014)  # a newer request replaces the first
    assert second == first + 1 and worker.probe_request() == (second, 9014)
    worker.probe_done(second, 11, 9014, 1)
    assert worker.probe_request() is None
    assert table.probe(1) == tables.ProbeWords(second, 9014, second, 11, 9014, 1)


def test_a_peer_token_s_claims_are_read_back_and_zeroed_with_a_new_port() -> None:
    table = _fresh()
    assert table.token(1) == (0, 0)
    SlotView(table, 1).set_token(10, 2)
    assert table.token(1) == (10, 2)
    table.release(1)
    table.claim(1, 9, PortKind.SERVER)
    assert table.token(1) == (0, 0)

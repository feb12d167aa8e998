"""The learning table: cases and properties over a bytearray table, with a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etherws.broker.fdb import TOUCH_INTERVAL_S, Fdb, LearnResult
from etherws.tables import (
    E_SEQ,
    ENTRY_WORDS,
    HEADER_WORDS,
    FdbTable,
    fdb_key,
)

A = bytes.fromhex("020000000001")
B = bytes.fromhex("020000000002")
C = bytes.fromhex("020000000003")
NS = 1_000_000_000


def table(capacity: int = 16) -> FdbTable:
    return FdbTable.format(bytearray(FdbTable.size(capacity)), capacity)


def fdb(capacity: int = 16, ageout_s: float = 300.0, per_port_max: int = 1024,
        move_hold_s: float = 0.0) -> Fdb:
    """An Fdb; without MAC move protection unless asked (the 802.1D rules alone)."""
    return Fdb(table(capacity), ageout_s, per_port_max, move_hold_s)


def table_entries(t: FdbTable) -> dict[int, tuple[int, int]]:
    """key -> (port, seen_ns), as a reader of the shared table sees it."""
    return {key: (port, seen) for _, key, port, seen in t.entries()}


# --- learning ---------------------------------------------------------------------------
def test_learn_then_lookup_and_table_shows_it() -> None:
    f = fdb()
    assert f.learn(0, A, 1, 10.0) is LearnResult.LEARNED
    assert f.lookup(0, A, 10.0) == 1
    assert table_entries(f.table) == {fdb_key(0, A): (1, 10 * NS)}
    assert f.table.in_use == 1 == len(f)


@pytest.mark.parametrize("mac", [
    bytes.fromhex("ffffffffffff"),  # broadcast
    bytes.fromhex("01005e000001"),  # IPv4 multicast
    bytes.fromhex("333300000001"),  # IPv6 multicast
    bytes.fromhex("030000000001"),  # any address with the I/G bit
    bytes(6),                       # all zero
    b"\x02\x00\x00",                # not a MAC
])
def test_invalid_sources_are_not_learned(mac: bytes) -> None:
    f = fdb()
    assert f.learn(0, mac, 1, 0.0) is LearnResult.INVALID
    assert len(f) == 0 and f.table.in_use == 0
    assert list(f.table.entries()) == []


@pytest.mark.parametrize("vid, port", [(-1, 1), (4096, 1), (0, 0), (0, -3)])
def test_invalid_vid_or_port_is_not_learned(vid: int, port: int) -> None:
    assert fdb().learn(vid, A, port, 0.0) is LearnResult.INVALID


def test_refresh_writes_the_table_at_most_once_a_second() -> None:
    f = fdb()
    f.learn(0, A, 1, 100.0)
    assert f.learn(0, A, 1, 100.5) is LearnResult.REFRESHED
    assert table_entries(f.table)[fdb_key(0, A)] == (1, 100 * NS)  # not written yet
    assert f.learn(0, A, 1, 100.0 + TOUCH_INTERVAL_S) is LearnResult.REFRESHED
    assert table_entries(f.table)[fdb_key(0, A)] == (1, int((100 + TOUCH_INTERVAL_S) * NS))


def test_refresh_does_not_take_the_seqlock() -> None:
    f = fdb()
    f.learn(0, A, 1, 0.0)
    seq = f.table.words[HEADER_WORDS + E_SEQ]
    f.learn(0, A, 1, 5.0)
    assert f.table.words[HEADER_WORDS + E_SEQ] == seq


def test_refresh_keeps_an_entry_alive_past_the_ageout() -> None:
    f = fdb(ageout_s=10.0)
    for t in range(0, 30, 2):
        f.learn(0, A, 1, float(t))
        assert f.expire(float(t)) == 0
    assert f.lookup(0, A, 35.0) == 1


def test_move_last_seen_wins() -> None:
    f = fdb()
    f.learn(0, A, 1, 0.0)
    assert f.learn(0, A, 2, 0.1) is LearnResult.MOVED
    assert f.lookup(0, A, 0.2) == 2
    assert table_entries(f.table) == {fdb_key(0, A): (2, int(0.1 * NS))}
    assert (f.port_count(1), f.port_count(2), len(f)) == (0, 1, 1)


def test_vlans_are_separate() -> None:
    f = fdb()
    assert f.learn(10, A, 1, 0.0) is LearnResult.LEARNED
    assert f.learn(20, A, 2, 0.0) is LearnResult.LEARNED
    assert (f.lookup(10, A, 1.0), f.lookup(20, A, 1.0), f.lookup(0, A, 1.0)) == (1, 2, None)
    assert f.flush_port(1) == 1
    assert (f.lookup(10, A, 1.0), f.lookup(20, A, 1.0)) == (None, 2)


# --- ageing -----------------------------------------------------------------------------
@pytest.mark.parametrize("age_s, present", [(0.0, True), (9.999, True), (10.0, False),
                                            (10.001, False)])
def test_ageing_boundary(age_s: float, present: bool) -> None:
    f = fdb(ageout_s=10.0)
    f.learn(0, A, 1, 50.0)
    assert (f.lookup(0, A, 50.0 + age_s) == 1) is present
    assert f.expire(50.0 + age_s) == (0 if present else 1)
    assert (len(f) == 1) is present


def test_expire_removes_oldest_first_and_frees_slots() -> None:
    f = fdb(capacity=3, ageout_s=10.0)
    f.learn(0, A, 1, 0.0)
    f.learn(0, B, 1, 5.0)
    f.learn(0, C, 2, 6.0)
    f.learn(0, A, 1, 7.0)  # refreshed: now the newest
    assert f.expire(15.5) == 1  # B
    assert [e[1] for e in f.entries()] == [C, A]
    assert f.learn(0, B, 3, 15.5) is LearnResult.LEARNED  # its slot is free again
    assert f.expire(17.0) == 2  # C, A
    assert f.table.in_use == 1
    assert table_entries(f.table) == {fdb_key(0, B): (3, int(15.5 * NS))}


def test_aged_entry_seen_again_is_learned_anew() -> None:
    f = fdb(ageout_s=10.0)
    f.learn(0, A, 1, 0.0)
    assert f.learn(0, A, 1, 20.0) is LearnResult.LEARNED
    assert f.expire(25.0) == 0
    assert f.lookup(0, A, 25.0) == 1


# --- limits -----------------------------------------------------------------------------
def test_full_table_refuses_and_counts_without_evicting() -> None:
    f = fdb(capacity=2)
    f.learn(0, A, 1, 0.0)
    f.learn(0, B, 1, 0.0)
    assert f.learn(0, C, 1, 0.0) is LearnResult.REFUSED_FULL
    assert f.learn(0, C, 2, 0.0) is LearnResult.REFUSED_FULL
    assert f.table.refused_full == 2
    assert (f.lookup(0, A, 1.0), f.lookup(0, B, 1.0), f.lookup(0, C, 1.0)) == (1, 1, None)
    assert f.learn(0, A, 2, 1.0) is LearnResult.MOVED  # a move needs no new slot


def test_per_port_cap_refuses_and_counts() -> None:
    f = fdb(per_port_max=2)
    f.learn(0, A, 1, 0.0)
    f.learn(0, B, 1, 0.0)
    assert f.learn(0, C, 1, 0.0) is LearnResult.REFUSED_PORT_FULL
    assert f.table.refused_port == 1
    assert f.learn(0, C, 2, 0.0) is LearnResult.LEARNED
    assert f.learn(0, A, 1, 5.0) is LearnResult.REFRESHED  # known entries stay fine


def test_a_port_limit_below_the_global_one_refuses_sooner() -> None:
    f = fdb(per_port_max=3)
    f.set_port_limit(1, 1)
    assert f.port_limit(1) == 1 and f.port_limit(2) == 3
    assert f.learn(0, A, 1, 0.0) is LearnResult.LEARNED
    assert f.learn(0, B, 1, 0.0) is LearnResult.REFUSED_PORT_FULL
    assert f.learn(0, A, 1, 5.0) is LearnResult.REFRESHED  # its one station stays fine
    for mac in (A, B, C):
        assert f.learn(1, mac, 2, 0.0) is LearnResult.LEARNED  # others: the global limit
    f.set_port_limit(1, None)
    assert f.learn(0, B, 1, 6.0) is LearnResult.LEARNED


def test_a_port_limit_never_exceeds_the_global_one() -> None:
    f = fdb(per_port_max=2)
    f.set_port_limit(1, 100)
    assert f.port_limit(1) == 2
    f.learn(0, A, 1, 0.0)
    f.learn(0, B, 1, 0.0)
    assert f.learn(0, C, 1, 0.0) is LearnResult.REFUSED_PORT_FULL
    with pytest.raises(ValueError):
        f.set_port_limit(1, 0)


def test_move_onto_a_full_port_forgets_the_old_place() -> None:
    f = fdb(per_port_max=1)
    f.learn(0, A, 1, 0.0)
    f.learn(0, B, 2, 0.0)
    assert f.learn(0, B, 1, 1.0) is LearnResult.REFUSED_PORT_FULL
    assert f.lookup(0, B, 1.0) is None  # flood rather than send to port 2
    assert f.port_count(2) == 0 and len(f) == 1


# --- flush and retain -------------------------------------------------------------------
def test_flush_port_all_and_retain() -> None:
    f = fdb()
    f.learn(0, A, 1, 0.0)
    f.learn(0, B, 2, 0.0)
    f.learn(0, C, 3, 0.0)
    f.learn(5, C, 3, 0.0)
    assert f.flush_port(9) == 0
    assert f.flush_port(1) == 1 and f.lookup(0, A, 0.0) is None
    assert f.retain_ports({2}) == 2
    assert [e[:3] for e in f.entries()] == [(0, B, 2)]
    assert f.flush_all() == 1
    assert len(f) == 0 and f.table.in_use == 0
    assert list(f.table.entries()) == []


# --- rebuild ----------------------------------------------------------------------------
def test_rebuild_from_the_table() -> None:
    t = table(capacity=8)
    old = Fdb(t, ageout_s=10.0)
    old.learn(0, A, 1, 1.0)
    old.learn(7, B, 2, 2.0)
    old.learn(0, C, 2, 3.0)
    old.flush_port(1)  # leaves a hole at index 0
    new = Fdb(t, ageout_s=10.0)
    assert (new.lookup(7, B, 4.0), new.lookup(0, C, 4.0), new.lookup(0, A, 4.0)) == (2, 2, None)
    assert new.port_count(2) == 2 and t.in_use == 2
    assert new.expire(12.5) == 1  # B, learned at 2.0, goes first: the order survived
    assert new.learn(0, A, 1, 13.0) is LearnResult.LEARNED
    for _ in range(5):
        new.learn(0, bytes([2, 0, 0, 0, 1, _]), 3, 13.0)
    assert len(new) == 7  # every free slot, the hole included, is usable


def test_rebuild_clears_a_torn_entry() -> None:
    t = table(capacity=4)
    old = Fdb(t)
    old.learn(0, A, 1, 1.0)
    old.learn(0, B, 2, 1.0)
    b = HEADER_WORDS + 1 * ENTRY_WORDS  # B: the broker died inside its rewrite
    t.words[b + E_SEQ] += 1
    assert t.is_torn(1)
    new = Fdb(t)
    assert not t.is_torn(1)
    assert t.read(1) is None
    assert new.lookup(0, B, 2.0) is None and new.lookup(0, A, 2.0) == 1
    assert t.in_use == 1
    assert new.learn(0, C, 3, 2.0) is LearnResult.LEARNED
    assert table_entries(t)[fdb_key(0, C)] == (3, 2 * NS)


def test_rebuild_drops_duplicates_and_invalid_keys() -> None:
    t = table(capacity=4)
    t.write(0, fdb_key(0, A), 1, 1 * NS)
    t.write(1, fdb_key(0, A), 2, 2 * NS)  # newer copy wins
    t.write(2, fdb_key(0, b"\x01\x00\x5e\x00\x00\x01"), 3, 1 * NS)
    f = Fdb(t)
    assert f.lookup(0, A, 3.0) == 2 and len(f) == 1
    assert table_entries(t) == {fdb_key(0, A): (2, 2 * NS)}


# --- properties -------------------------------------------------------------------------
# Few keys, so that the same station comes back often (refresh, move, limits).
MACS = st.sampled_from([bytes([2, 0, 0, 0, 0, i]) for i in range(1, 5)] +
                       [bytes(6), b"\xff" * 6, b"\x01\x00\x5e\x00\x00\x01"])
OPS = st.lists(st.tuples(
    st.sampled_from(["learn", "learn", "learn", "expire", "flush", "retain", "rebuild"]),
    st.integers(0, 1), MACS, st.integers(1, 3),
    st.integers(0, 8).map(lambda q: q / 4)),  # quarter seconds: exact in float and ns
    max_size=60)


class Model:
    """The obvious dict-based model of a learning table with ageing and limits."""

    def __init__(self, capacity: int, ageout_s: float, per_port_max: int) -> None:
        self.cap, self.ageout_s, self.max = capacity, ageout_s, per_port_max
        self.d: dict[tuple[int, bytes], tuple[int, float]] = {}

    def learn(self, vid: int, mac: bytes, port: int, now: float) -> None:
        if mac[0] & 1 or mac == bytes(6):
            return
        cur = self.d.get((vid, mac))
        if cur is not None and cur[0] == port:
            if now - cur[1] >= TOUCH_INTERVAL_S:  # the table keeps 1 s resolution
                self.d[(vid, mac)] = (port, now)
            return
        if sum(1 for p, _ in self.d.values() if p == port) >= self.max:
            self.d.pop((vid, mac), None)
            return
        if cur is None and len(self.d) >= self.cap:
            return
        self.d[(vid, mac)] = (port, now)

    def lookup(self, vid: int, mac: bytes, now: float) -> int | None:
        cur = self.d.get((vid, mac))
        return cur[0] if cur and now - cur[1] < self.ageout_s else None


@settings(max_examples=500, deadline=None)
@given(ops=OPS, capacity=st.integers(1, 6), per_port_max=st.integers(1, 4))
def test_matches_a_model(ops: list[tuple[str, int, bytes, int, float]], capacity: int,
                        per_port_max: int) -> None:
    ageout_s = 5.0
    t = table(capacity)
    f = Fdb(t, ageout_s, per_port_max, move_hold_s=0.0)
    model = Model(capacity, ageout_s, per_port_max)
    now = 0.0
    for op, vid, mac, port, dt in ops:
        now += dt
        if op == "learn":
            f.learn(vid, mac, port, now)
            model.learn(vid, mac, port, now)
        elif op == "expire":
            f.expire(now)
            model.d = {k: v for k, v in model.d.items() if now - v[1] < ageout_s}
        elif op == "flush":
            f.flush_port(port)
            model.d = {k: v for k, v in model.d.items() if v[0] != port}
        elif op == "retain":
            f.retain_ports({port, port + 1})
            model.d = {k: v for k, v in model.d.items() if v[0] in (port, port + 1)}
        else:
            f = Fdb(t, ageout_s, per_port_max, move_hold_s=0.0)
        check(f, t, model, now)


def check(f: Fdb, t: FdbTable, model: Model, now: float) -> None:
    for vid, mac in model.d:
        assert f.lookup(vid, mac, now) == model.lookup(vid, mac, now), (vid, mac)
    # The shared table says exactly what the object and the model know.
    want = {fdb_key(v, m): (p, int(seen * NS)) for (v, m), (p, seen) in model.d.items()}
    assert table_entries(t) == want
    assert {fdb_key(v, m): (p, int(seen * NS)) for v, m, p, seen in f.entries()} == want
    assert t.in_use == len(f) <= t.capacity
    assert all(f.port_count(p) <= f.per_port_max for p in range(1, 6))
    assert not any(t.is_torn(i) for i in range(t.capacity))


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(st.tuples(st.booleans(), st.integers(1, 3),
                              st.integers(0, 8).map(lambda q: q / 4)), max_size=40))
def test_ageing_matches_a_model(ops: list[tuple[bool, int, float]]) -> None:
    """Only learning and expiry, on one port: the refresh/ageing order at its densest."""
    t = table(8)
    f = Fdb(t, 5.0)
    model = Model(8, 5.0, 1024)
    now = 0.0
    for is_learn, n, dt in ops:
        now += dt
        mac = bytes([2, 0, 0, 0, 0, n])
        if is_learn:
            f.learn(0, mac, 1, now)
            model.learn(0, mac, 1, now)
        else:
            f.expire(now)
            model.d = {k: v for k, v in model.d.items() if now - v[1] < 5.0}
        check(f, t, model, now)

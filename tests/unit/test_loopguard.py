"""The loop guard: probe frames, one switch's decisions with a fake clock, and whole
segments of guards simulated (which ports end up blocked, and that the switches agree)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etherws.frame import header
from etherws.loopguard import (
    FRESH_S,
    HOLD_S,
    INTERVAL_S,
    MAX_FLAGS,
    MAX_HOLD_S,
    ONWARD_PER_S,
    PROBE_DST,
    PROBE_LEN,
    SETTLE_S,
    Change,
    LoopGuard,
    Probe,
    is_probe,
    parse,
    probe_frame,
    sign,
)

ME, LOW, HIGH = 1000, 10, 5000
KEY = bytes(range(16))


# --- the frame ----------------------------------------------------------------------------
@given(st.integers(1, 2**63 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
       st.booleans())
def test_a_probe_reads_back_as_sent(switch: int, port: int, seq: int, looped: bool) -> None:
    tag = sign(KEY, switch, port, seq)
    f = probe_frame(switch, port, seq, looped, tag)
    assert len(f) == PROBE_LEN and is_probe(f) and is_probe(memoryview(f))
    assert parse(f) == parse(memoryview(f)) == Probe(switch, port, seq, looped, tag)
    assert len(tag) == 8 and tag != sign(bytes(16), switch, port, seq)
    _, dst, src = header(f)
    assert dst == PROBE_DST and dst[0] & 1  # a group address: every bridge floods it
    assert not src[0] & 1 and src[0] & 2  # a locally administered unicast source


@pytest.mark.parametrize("damage", [
    lambda f: f[:40],  # cut short
    lambda f: f[:12] + b"\x88\xb5" + f[14:],  # another ethertype
    lambda f: f[:15] + b"X" + f[16:],  # another magic
    lambda f: b"\xff" * 6 + f[6:],  # another destination
])
def test_a_damaged_probe_is_not_one(damage: object) -> None:
    f = probe_frame(ME, 3, 1, False)
    assert parse(damage(f)) is None  # type: ignore[operator]


def test_a_frame_to_the_probe_address_is_a_probe_even_if_broken() -> None:
    assert is_probe(PROBE_DST + bytes(54)) and parse(PROBE_DST + bytes(54)) is None


# --- one switch ---------------------------------------------------------------------------
def own(port: int, looped: bool = False, seq: int = 1) -> Probe:
    return Probe(ME, port, seq, looped, sign(KEY, ME, port, seq))


def guard(ports: dict[int, float] | None = None) -> LoopGuard:
    g = LoopGuard(ME, KEY)
    g.set_ports({1: 0.0, 2: 5.0, 3: 9.0} if ports is None else ports)
    return g


def feed_loop(g: LoopGuard, start: float, end: float, sent: int = 1, back: int = 2) -> None:
    """The guard's probes out of ``sent`` come back by ``back`` every interval."""
    t = start
    while t <= end:
        g.received(back, own(sent), t)
        t += INTERVAL_S


def test_no_loop_no_block() -> None:
    g = guard()
    for t in range(20):
        g.received(1, Probe(LOW, 4, t, False), float(t))
        assert g.decide(float(t)) == []
    assert not g.looped(20.0) and g.blocked == frozenset()


def test_a_loop_is_blocked_once_settled_at_its_newest_port() -> None:
    g = guard()
    feed_loop(g, 0.0, SETTLE_S - 0.1)
    assert g.looped(SETTLE_S - 0.1)
    assert g.decide(SETTLE_S - 0.1) == []  # others' flags may still be on their way
    feed_loop(g, SETTLE_S, SETTLE_S)
    assert g.decide(SETTLE_S) == [Change(2, True, 1)]  # port 2 came up after port 1
    assert g.blocked == {2}
    assert not g.looped(SETTLE_S)  # a loop through a blocked port is cut: no flag


def test_the_newest_port_goes_whichever_way_the_probe_went() -> None:
    g = guard({1: 50.0, 2: 5.0})
    feed_loop(g, 0.0, SETTLE_S, sent=2, back=1)
    assert g.decide(SETTLE_S) == [Change(1, True, 2)]


def test_a_port_whose_own_frames_come_back_is_blocked() -> None:
    g = guard()
    feed_loop(g, 0.0, SETTLE_S, sent=3, back=3)
    assert g.decide(SETTLE_S) == [Change(3, True, 3)]


def test_a_higher_switch_that_sees_a_loop_acts_and_a_lower_one_does_not() -> None:
    g = guard()
    g.received(1, Probe(HIGH, 7, 1, True), 0.0)
    g.received(2, Probe(LOW, 7, 1, True), 0.0)
    feed_loop(g, 0.0, 2.5)
    assert g.decide(2.5) == []  # the higher one cuts it
    feed_loop(g, 2.6, 3.1)  # its flag is 3.1 s old now, and it said nothing since
    assert g.decide(3.1) == [Change(2, True, 1)]


def test_a_stale_loop_is_no_loop() -> None:
    g = guard()
    feed_loop(g, 0.0, 1.0)
    assert g.decide(1.0 + FRESH_S + 0.01) == [] and not g.looped(1.0 + FRESH_S + 0.01)


def test_a_loop_broken_for_a_while_settles_anew() -> None:
    g = guard()
    feed_loop(g, 0.0, 1.0)
    feed_loop(g, 3.0, 3.0 + SETTLE_S - 0.5)  # it went away and came back at 3.0
    assert g.decide(3.0 + SETTLE_S - 0.5) == []


def test_a_blocked_port_stays_blocked_while_the_probes_still_cross_it() -> None:
    g = guard()
    feed_loop(g, 0.0, SETTLE_S)
    g.decide(SETTLE_S)
    feed_loop(g, SETTLE_S, 60.0)  # the loop would close again through port 2
    assert g.decide(60.0) == [] and g.blocked == {2}


def test_a_blocked_port_opens_after_its_hold_once_the_loop_is_gone() -> None:
    g = guard()
    feed_loop(g, 0.0, SETTLE_S)
    g.decide(SETTLE_S)
    assert g.decide(SETTLE_S + HOLD_S - 0.01) == []  # not before the hold
    assert g.decide(SETTLE_S + HOLD_S) == [Change(2, False)]
    assert g.blocked == frozenset()


def test_blocked_again_soon_after_opening_holds_twice_as_long() -> None:
    g = guard()
    t = SETTLE_S
    feed_loop(g, 0.0, t)
    g.decide(t)
    hold = HOLD_S
    for _ in range(8):
        t += hold
        assert g.decide(t) == [Change(2, False)]
        feed_loop(g, t + 0.1, t + 0.1 + SETTLE_S)  # the loop is back
        t += 0.1 + SETTLE_S
        assert g.decide(t) == [Change(2, True, 1)]
        hold = min(hold * 2, MAX_HOLD_S)
        assert g.decide(t + hold - 0.01 - 0.1) == []
    assert hold == MAX_HOLD_S
    t += hold
    assert g.decide(t) == [Change(2, False)]
    feed_loop(g, t + MAX_HOLD_S, t + MAX_HOLD_S + SETTLE_S)  # quiet for long: hold anew
    t += MAX_HOLD_S + SETTLE_S
    assert g.decide(t) == [Change(2, True, 1)]
    assert g.decide(t + HOLD_S) == [Change(2, False)]


def test_a_port_that_goes_away_is_forgotten_blocked_or_not() -> None:
    g = guard()
    feed_loop(g, 0.0, SETTLE_S)
    g.decide(SETTLE_S)
    g.set_ports({1: 0.0, 3: 9.0})
    assert g.blocked == frozenset() and g.decide(SETTLE_S + 0.1) == []
    assert set(g.probes(SETTLE_S + 0.2)) == {1, 3}


def test_restore_blocks_a_port_held_anew() -> None:
    g = guard()
    g.restore(3, 10.0)
    assert g.blocked == {3}
    assert g.decide(10.0 + HOLD_S - 0.1) == [] and g.decide(10.0 + HOLD_S) == [Change(3, False)]


def test_probes_every_interval_out_of_every_port_blocked_or_not_flagged_when_looped() -> None:
    g = guard()
    assert g.due(0.0)
    first = g.probes(0.0)
    assert set(first) == {1, 2, 3} and not g.due(INTERVAL_S - 0.01) and g.due(INTERVAL_S)
    assert [parse(f) for f in first.values()] == [own(p) for p in (1, 2, 3)]
    feed_loop(g, 0.0, SETTLE_S)
    second = g.probes(SETTLE_S)
    assert all(p is not None and p.looped and p.seq == 2
               for p in map(parse, second.values()))
    g.decide(SETTLE_S)
    third = g.probes(SETTLE_S + 0.1)
    assert set(third) == {1, 2, 3}  # the blocked port 2 still gets its probe


def test_ports_not_in_the_set_make_no_loop() -> None:
    g = guard()
    g.received(2, own(7), 0.0)  # port 7 is not ours (any more)
    assert not g.looped(0.0)


def test_onward_once_per_probe_never_own_never_from_a_blocked_port() -> None:
    g = guard()
    other = Probe(LOW, 4, 9, False)
    assert g.onward(1, other, 0.0)
    assert not g.onward(2, other, 0.1)  # its copy by another path
    assert g.onward(2, Probe(LOW, 4, 10, False), 0.5)  # the next round
    assert not g.onward(1, own(1), 0.5)
    g.restore(3, 0.0)
    assert not g.onward(3, Probe(LOW, 5, 1, False), 0.6)
    assert g.onward(1, other, 10.0)  # long forgotten: a new one


def test_onward_is_bounded_per_ingress_port() -> None:
    g = guard()
    passed = sum(g.onward(1, Probe(LOW, 4, seq, False), 0.0) for seq in range(1000))
    assert passed == ONWARD_PER_S
    assert g.onward(2, Probe(LOW, 4, 5000, False), 0.0)  # another port has its own budget
    assert sum(g.onward(1, Probe(LOW, 4, seq, False), 1.0) for seq in range(2000, 3000)) \
        == ONWARD_PER_S


def test_flags_of_made_up_switches_are_bounded() -> None:
    me, higher = 10**9, 2 * 10**9

    def flooded(at: float) -> LoopGuard:
        g = LoopGuard(me, KEY)
        g.set_ports({1: 0.0, 2: 5.0})
        for sid in range(1, MAX_FLAGS + 500):  # made-up switches, all lower, all flagging
            g.received(1, Probe(sid, 1, 1, True), 0.0)
        g.received(1, Probe(higher, 1, 1, True), at)
        t = at
        while t <= at + SETTLE_S:
            g.received(2, Probe(me, 1, 1, False, sign(KEY, me, 1, 1)), t)
            t += INTERVAL_S
        return g
    # a full table takes no more: the higher switch is not heard, this one acts
    assert flooded(0.0).decide(SETTLE_S) == [Change(2, True, 1)]
    # once the made-up ones are stale they make room: the higher one is heard
    assert flooded(10.0).decide(10.0 + SETTLE_S) == []


def test_a_made_up_probe_of_ours_is_no_loop() -> None:
    g = guard()
    for t in range(10):  # a peer on port 2 sends "our probe of port 1", tagged wrongly
        g.received(2, Probe(ME, 1, t, False, bytes(8)), float(t) / 2)
        g.received(2, Probe(ME, 1, t, False, sign(bytes(16), ME, 1, t)), float(t) / 2)
    assert not g.looped(4.5) and g.decide(4.5) == []
    feed_loop(g, 5.0, 5.0 + SETTLE_S, sent=2, back=2)  # what it can send back: its own
    assert g.decide(5.0 + SETTLE_S) == [Change(2, True, 2)]  # port's probes: blocks itself


def test_a_switch_id_is_positive_and_a_key_long_enough() -> None:
    with pytest.raises(ValueError):
        LoopGuard(0, KEY)
    with pytest.raises(ValueError):
        LoopGuard(ME, b"short")


# --- segments of switches -----------------------------------------------------------------
End = tuple[str, int]  # (switch, port)


@dataclass
class Segment:
    """Switches joined by links, each running a guard; probes delivered at once, flooded
    by every switch as ``etherws.broker.loops`` floods them."""

    ids: dict[str, int]
    links: list[tuple[End, End]]
    guards: dict[str, LoopGuard] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.peer: dict[End, End] = {}
        ports: dict[str, dict[int, float]] = {s: {} for s in self.ids}
        for n, (a, b) in enumerate(self.links):
            self.peer[a], self.peer[b] = b, a
            ports[a[0]][a[1]] = float(n)  # links come up in order
            ports[b[0]][b[1]] = float(n)
        for s, sid in self.ids.items():
            self.guards[s] = LoopGuard(sid, sid.to_bytes(16, "big"))
            self.guards[s].set_ports(ports[s])
        self.ports = ports

    def run(self, until: float, step: float = 0.05) -> None:
        t = 0.0
        while t <= until:
            for s, g in self.guards.items():
                if g.due(t):
                    for port, frame in g.probes(t).items():
                        self._carry((s, port), frame, t)
                    g.decide(t)
            t += step

    def _carry(self, out: End, frame: bytes, t: float) -> None:
        queue = deque([out])
        while queue:
            end = queue.popleft()
            s, p = self.peer[end]
            probe = parse(frame)
            assert probe is not None
            g = self.guards[s]
            g.received(p, probe, t)
            if g.onward(p, probe, t):
                queue.extend((s, q) for q in self.ports[s] if q != p and q not in g.blocked)

    def blocked(self) -> set[End]:
        return {(s, p) for s, g in self.guards.items() for p in g.blocked}

    def working(self) -> list[tuple[End, End]]:
        """The links that carry frames: neither end blocked."""
        blocked = self.blocked()
        return [(a, b) for a, b in self.links if a not in blocked and b not in blocked]


def is_tree(nodes: set[str], edges: list[tuple[End, End]]) -> bool:
    """True when ``edges`` join ``nodes`` without a cycle (a multigraph's spanning tree)."""
    parent = {n: n for n in nodes}

    def root(n: str) -> str:
        while parent[n] != n:
            n = parent[n]
        return n
    for (a, _), (b, _) in edges:
        ra, rb = root(a), root(b)
        if ra == rb:
            return False
        parent[ra] = rb
    return len(edges) == len(nodes) - 1


def test_two_tunnels_between_two_switches_one_end_of_the_newer_is_blocked() -> None:
    seg = Segment({"a": LOW, "b": HIGH}, [(("a", 1), ("b", 1)), (("a", 2), ("b", 2))])
    seg.run(5.0)
    assert seg.blocked() == {("b", 2)}  # by the higher switch only, the newer tunnel
    seg.run(60.0)  # and it stays so: the loop would close again
    assert seg.blocked() == {("b", 2)}


def test_a_triangle_keeps_every_switch_reachable() -> None:
    seg = Segment({"a": 3, "b": 2, "c": 1},
                  [(("a", 1), ("b", 1)), (("b", 2), ("c", 1)), (("c", 2), ("a", 2))])
    seg.run(10.0)
    assert len(seg.blocked()) == 1 and is_tree({"a", "b", "c"}, seg.working())


def test_a_switch_joined_to_itself_blocks_the_newer_port() -> None:
    seg = Segment({"a": LOW}, [(("a", 1), ("a", 2))])
    seg.run(5.0)
    assert seg.blocked() == {("a", 2)}


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_any_looped_segment_ends_as_a_spanning_tree(data: st.DataObject) -> None:
    n = data.draw(st.integers(2, 5))
    names = [f"s{i}" for i in range(n)]
    ids = data.draw(st.lists(st.integers(1, 2**63 - 1), min_size=n, max_size=n, unique=True))
    # a random tree joins them all, then extra links make loops
    pairs = [(names[i], names[data.draw(st.integers(0, i - 1))]) for i in range(1, n)]
    pairs += data.draw(st.lists(st.tuples(st.sampled_from(names), st.sampled_from(names))
                                .filter(lambda p: p[0] != p[1]), min_size=1, max_size=4))
    pairs = data.draw(st.permutations(pairs))  # in any order of coming up
    next_port = {s: 1 for s in names}
    links = []
    for a, b in pairs:
        links.append(((a, next_port[a]), (b, next_port[b])))
        next_port[a] += 1
        next_port[b] += 1
    seg = Segment(dict(zip(names, ids)), links)
    seg.run(4.0 * len(links) + 10.0)
    assert is_tree(set(names), seg.working()), (seg.blocked(), links)
    assert len(seg.blocked()) == len(links) - (n - 1)  # one end of each extra link

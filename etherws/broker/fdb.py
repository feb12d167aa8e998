"""The forwarding database: learn, look up and age (VLAN id, MAC) -> port (pure).

The entries live in an ``etherws.tables.FdbTable`` (shared memory in production, a
bytearray in tests) so that a restarted broker and the supervisor's ``listfdb`` see what
was learned; this object is the table's only writer and keeps an in-memory index beside
it so that a lookup never scans the table.

Time is a parameter: ``now`` is float seconds of a monotonic clock, non-decreasing from
one call to the next; the table stores ``int(now * 1e9)``. An entry is absent once it is
``tables.aged`` (at ``now - last_seen >= ageout_s``, Linux's bridge's boundary), whether
or not ``expire`` has removed it yet.

MAC move protection: a station learned on a port moves to another only once its old port
has not seen it for ``move_hold_s`` (or the old port went away, which forgets it), so a
peer cannot take a gateway's address while the gateway talks, and a frame that looped
back cannot drag its source away from where it is. The refusal is HELD (the caller drops
the frame) and counted in the table's header.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from enum import Enum

from etherws.config import DEFAULT_AGEOUT_S, DEFAULT_MOVE_HOLD_S, FDB_PER_PORT
from etherws.frame import Frame
from etherws.tables import FdbTable, aged, fdb_key, learnable, split_key

TOUCH_INTERVAL_S = 1.0
"""Least time between two writes of an entry's last-seen time: ages are shown with 1 s
resolution, and a shared-memory store per frame would be wasted work on the hot path."""

_NS = 1_000_000_000


class LearnResult(Enum):
    """What ``Fdb.learn`` did with a source address."""

    LEARNED = "learned"
    REFRESHED = "refreshed"
    MOVED = "moved"
    REFUSED_FULL = "refused-full"
    REFUSED_PORT_FULL = "refused-port-full"
    HELD = "held"
    INVALID = "invalid"


class Fdb:
    """A learning table of fixed capacity over an ``FdbTable``.

    The table is the authority and memory mirrors it exactly, last-seen times included: a
    refresh less than ``TOUCH_INTERVAL_S`` after the last write changes neither, so ages
    have that resolution. A full table learns nothing new (no eviction, so a MAC
    flood cannot push out established stations); a port holding ``per_port_max`` entries
    (or its own smaller limit, ``set_port_limit``: a peer token's MAC quota) learns nothing
    new either. Both refusals are counted in the table's header.
    """

    def __init__(self, table: FdbTable, ageout_s: float = DEFAULT_AGEOUT_S,
                 per_port_max: int = FDB_PER_PORT,
                 move_hold_s: float = DEFAULT_MOVE_HOLD_S) -> None:
        if ageout_s <= 0:
            raise ValueError("ageout_s must be positive")
        if move_hold_s < 0:
            raise ValueError("move_hold_s must not be negative")
        self.move_hold_s = float(move_hold_s)
        if per_port_max < 1:
            raise ValueError("per_port_max must be at least 1")
        self.table = table
        self.ageout_s = float(ageout_s)
        self.per_port_max = per_port_max
        cap = table.capacity
        self._index: dict[int, int] = {}
        self._key = [0] * cap
        self._port = [0] * cap
        self._seen = [0.0] * cap
        self._port_count: dict[int, int] = {}
        self._port_max: dict[int, int] = {}  # ports with a limit below per_port_max
        # Entries oldest-first by last-seen: ``now`` never goes back, so appending (or
        # moving to the end) whenever an entry's time is written keeps the order, and
        # expire() only looks at the entries it removes plus one.
        self._order: OrderedDict[int, None] = OrderedDict()
        self._free: list[int] = []
        self._rebuild()

    # --- construction ---------------------------------------------------------------
    def _rebuild(self) -> None:
        """Index the table's entries, clearing torn, invalid and duplicate ones."""
        found: list[tuple[int, int, int, int]] = []
        for i in range(self.table.capacity):
            if self.table.is_torn(i):
                self.table.clear(i)  # the previous broker died inside this entry
                continue
            e = self.table.read(i)
            if e is None:
                continue
            key, port, seen_ns = e
            if not learnable(*split_key(key)):
                self.table.clear(i)
                continue
            found.append((seen_ns, i, key, port))
        found.sort()  # oldest first, the order expire() relies on
        for seen_ns, i, key, port in found:
            old = self._index.get(key)
            if old is not None:  # never written twice by us; keep the newer copy
                self._drop(old)
            self._index[key] = i
            self._key[i], self._port[i], self._seen[i] = key, port, seen_ns / _NS
            self._port_count[port] = self._port_count.get(port, 0) + 1
            self._order[i] = None
        # pop() hands out the lowest free index first
        self._free = [i for i in range(self.table.capacity - 1, -1, -1)
                      if i not in self._order]
        self.table.set_in_use(len(self._index))

    # --- the hot path -----------------------------------------------------------------
    def learn(self, vid: int, mac: Frame, port: int, now: float) -> LearnResult:
        """Record that ``mac`` in VLAN ``vid`` was seen as a source on ``port`` at ``now``."""
        key = fdb_key(vid, mac)
        i = self._index.get(key)
        if i is not None and self._port[i] == port:
            if now - self._seen[i] >= TOUCH_INTERVAL_S:
                return self._refresh(i, now)
            return LearnResult.REFRESHED
        if port <= 0 or not learnable(vid, mac):
            return LearnResult.INVALID
        if i is not None and now - self._seen[i] < self.move_hold_s \
                and not aged(now, self._seen[i], self.ageout_s):
            # Seen on its port within the hold-down (to TOUCH_INTERVAL_S): it stays there.
            self.table.count_held_move()
            return LearnResult.HELD
        if self._port_count.get(port, 0) >= self._port_max.get(port, self.per_port_max):
            if i is not None:
                # Leaving the old port in place would send this station's traffic to
                # where it no longer is; forgetting it makes frames flood instead.
                self._drop(i)
            self.table.count_refused_port()
            return LearnResult.REFUSED_PORT_FULL
        if i is not None:
            self._set(i, key, port, now)
            return LearnResult.MOVED
        if not self._free:
            self.table.count_refused_full()
            return LearnResult.REFUSED_FULL
        i = self._free.pop()
        self._index[key] = i
        self._set(i, key, port, now)
        self.table.set_in_use(len(self._index))
        return LearnResult.LEARNED

    def lookup(self, vid: int, mac: Frame, now: float) -> int | None:
        """The port ``mac`` in VLAN ``vid`` was last seen on, or None (unknown or aged)."""
        i = self._index.get(fdb_key(vid, mac))
        if i is None or aged(now, self._seen[i], self.ageout_s):
            return None
        return self._port[i]

    def _refresh(self, i: int, now: float) -> LearnResult:
        if aged(now, self._seen[i], self.ageout_s):
            # Aged but not yet expired: seen again, it is a new station as far as anyone
            # reading the table can tell.
            self._set(i, self._key[i], self._port[i], now)
            return LearnResult.LEARNED
        self._seen[i] = now
        self.table.touch(i, int(now * _NS))
        self._order.move_to_end(i)
        return LearnResult.REFRESHED

    def _set(self, i: int, key: int, port: int, now: float) -> None:
        """(Re)write entry ``i`` for ``key`` on ``port``; ``key`` is already indexed."""
        old = self._port[i]
        if old != port:
            if old:
                self._port_count[old] -= 1
            self._port_count[port] = self._port_count.get(port, 0) + 1
        self._key[i], self._port[i], self._seen[i] = key, port, now
        self.table.write(i, key, port, int(now * _NS))
        self._order[i] = None
        self._order.move_to_end(i)

    def _drop(self, i: int) -> None:
        """Remove entry ``i`` from the table and the index."""
        key, port = self._key[i], self._port[i]
        if self._index.get(key) == i:
            del self._index[key]
        n = self._port_count[port] - 1
        if n:
            self._port_count[port] = n
        else:
            del self._port_count[port]
        self._key[i], self._port[i], self._seen[i] = 0, 0, 0.0
        self.table.clear(i)
        self._order.pop(i, None)
        self._free.append(i)
        self.table.set_in_use(len(self._index))

    # --- limits -----------------------------------------------------------------------
    def set_port_limit(self, port: int, limit: int | None) -> None:
        """Let ``port`` learn at most ``limit`` addresses (never more than per_port_max;
        None: per_port_max). Addresses it holds beyond a new limit stay until they age
        out or move: the limit refuses new ones."""
        if limit is not None and limit < 1:
            raise ValueError("a port's limit must be at least 1")
        if limit is None or limit >= self.per_port_max:
            self._port_max.pop(port, None)
        else:
            self._port_max[port] = limit

    def port_limit(self, port: int) -> int:
        """Most addresses ``port`` may learn."""
        return self._port_max.get(port, self.per_port_max)

    # --- housekeeping -----------------------------------------------------------------
    def expire(self, now: float) -> int:
        """Remove every entry aged out at ``now``; returns how many.

        Costs O(removed): entries are kept in last-seen order.
        """
        removed = 0
        order, seen, ageout_s = self._order, self._seen, self.ageout_s
        while order:
            i = next(iter(order))
            if not aged(now, seen[i], ageout_s):  # the same rule as lookup()
                break
            self._drop(i)
            removed += 1
        return removed

    def flush_port(self, port: int) -> int:
        """Forget every address learned on ``port``; returns how many."""
        return self._drop_where(lambda p: p == port)

    def flush_all(self) -> int:
        """Forget every address; returns how many."""
        return self._drop_where(lambda p: True)

    def retain_ports(self, ports: Iterable[int]) -> int:
        """Forget the addresses of every port not in ``ports``; returns how many."""
        keep = frozenset(ports)
        return self._drop_where(lambda p: p not in keep)

    def _drop_where(self, doomed: Callable[[int], bool]) -> int:
        victims = [i for i in self._index.values() if doomed(self._port[i])]
        for i in victims:
            self._drop(i)
        return len(victims)

    # --- inspection -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._index)

    def port_count(self, port: int) -> int:
        """How many addresses are learned on ``port``."""
        return self._port_count.get(port, 0)

    def entries(self) -> Iterator[tuple[int, bytes, int, float]]:
        """``(vid, mac, port, last_seen)`` of every entry, aged or not, oldest first."""
        for i in self._order:
            vid, mac = split_key(self._key[i])
            yield vid, mac, self._port[i], self._seen[i]


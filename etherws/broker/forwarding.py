"""Forwarding decisions: which ports a batch of frames from one port goes out of (pure).

The rules of a learning bridge (IEEE 802.1D, as Linux's bridge applies them):

- frames from a port that does not exist or is shut are dropped, and teach nothing;
- the source (VLAN id, MAC) of every frame is learned on its ingress port; with port
  security (the default) a frame whose source its port may not learn, because the port
  holds its most addresses already, is dropped: a MAC flood from one port is not sent
  out of every other port; a frame whose source another port holds (MAC move
  protection, ``Fdb``) is dropped too, whatever the port security: it is a thief's, or
  a looped copy;
- a unicast frame to a known, live destination goes out of that port only; if that port is
  the ingress port the frame is filtered (the destination is on the ingress segment), if
  it is shut the frame is dropped;
- a group-addressed frame or an unknown unicast floods to every port but the ingress
  port and the shut ones.

A frame never goes back out of its ingress port.

A frame may come with a virtio-net header (a super-frame, or a frame whose checksum is
left to do: ``etherws.gso``), in ``headers`` keyed by the id of the frame's object as the
ring hands them out; the rules see the Ethernet frame only. A frame a VLAN rule rewrites
gets its own entry there, its offsets moved with the tag.

Each port may also have (``PortPolicy``):

- a VLAN setting (``etherws.vlan``): a frame is in the VLAN its ingress port's rules give it
  (or dropped, counted in ``vlan``); it is learned, looked up and flooded in that VLAN only,
  goes out only of ports that are members, and leaves each with the bytes that port's rules
  give it (a tag added, stripped or kept). With every port transparent (the default) frames
  are switched as they came, in the VLAN their tag names, without looking at the rules;
- a rate limit on what it sends into the switch (its ingress, ``rate``): frames over a
  token bucket of bytes are dropped, counted in ``rate``, before anything is learned;
- storm control: frames it sends that would flood (broadcast, multicast, unknown unicast)
  over a token bucket of frames are dropped, counted in ``storm``;
- isolation: a frame from an isolated port never leaves by another isolated port (it
  floods to the others only; a unicast to one is filtered), as a private VLAN's isolated
  ports: the switch's accepted peers reach its own ports but not each other;
- a MAC quota (a peer token's, ``claimed``): the port learns at most that many source
  addresses, and frames from others are dropped (counted in ``secured``) whatever the
  port security.

With the loop guard on (``guard``), frames addressed to ``loopguard.PROBE_DST`` are
never switched nor learned from: they are handed back in ``ForwardResult.probes`` for
the broker's ``LoopGuard``, whatever the port's VLAN rules. A port the guard blocked
(``set_blocked``) sends and receives nothing else: its frames are dropped (counted in
``loop``), floods leave it out, and a unicast to it is filtered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

from etherws.broker.fdb import Fdb, LearnResult
from etherws.frame import FrameError, header
from etherws.gso import GsoError, shifted
from etherws.loopguard import PROBE_DST, is_probe
from etherws.ratelimit import TokenBucket, rate_bucket, storm_bucket
from etherws.vlan import MAX_VID, MIN_VID, TRANSPARENT, Out, PortVlan, access, rewrite

REFUSED = LearnResult.REFUSED_PORT_FULL
HELD = LearnResult.HELD
REFRESHED = LearnResult.REFRESHED
F = TypeVar("F", bytes, memoryview)
"""A frame: bytes, or a view into the ring it arrived in."""
Headers = dict[int, bytes | memoryview]
"""The virtio-net headers of a batch's frames, by ``id`` of the frame (``Ring.take``)."""
MAX_VLAN_FLOOD_CACHE = 4096
"""Flood lists kept per (ingress port, VLAN) before the cache starts again: a port sending
every VID cannot grow it without bound."""


@dataclass(frozen=True)
class PortPolicy:
    """A port's state and rules: shut, VLAN setting, storm and rate limits (0: none),
    isolation."""

    shut: bool = False
    vlan: PortVlan = TRANSPARENT
    storm_pps: int = 0
    rate_bps: int = 0
    isolated: bool = False
    max_macs: int = 0
    """Most source addresses it may use (0: only the switch's per-port limit)."""


def claimed(policy: PortPolicy, vlan: int, max_macs: int) -> PortPolicy:
    """``policy`` with the claims of its peer's token (``etherws.token``; 0: none).

    The claims come from the peer worker, which may be compromised, so they can only
    restrict the port: ``vlan`` makes a transparent port an access port of that VLAN (an
    operator's VLAN setting wins), ``max_macs`` is its MAC quota (the Fdb caps it at the
    switch's per-port limit). A VLAN id out of range is ignored, as none.
    """
    if vlan and MIN_VID <= vlan <= MAX_VID and policy.vlan.transparent:
        policy = replace(policy, vlan=access(vlan))
    if max_macs:
        policy = replace(policy, max_macs=max_macs)
    return policy


@dataclass(slots=True)
class ForwardResult(Generic[F]):
    """What to do with one batch.

    ``egress`` maps a port to the frames to send out of it, in order. Lists may be shared
    between ports (a flooded batch is one list): treat them as read-only.
    ``malformed`` frames could not be parsed; ``filtered`` frames were dropped by the rules;
    ``secured`` frames were dropped by port security or MAC move protection; ``shut``
    counts, per shut port, the frames dropped because it is shut (coming in, or sent to
    it as a unicast).
    ``vlan``, ``storm`` and ``rate`` frames of the ingress port were dropped by its VLAN
    rules, its storm control and its rate limit. A frame a VLAN rule rewrote is bytes.
    ``probes`` are the loop guard's frames, ``loop`` the others from a blocked port.
    """

    egress: dict[int, list[F | bytes]] = field(default_factory=dict)
    malformed: int = 0
    filtered: int = 0
    secured: int = 0
    shut: dict[int, int] = field(default_factory=dict)
    vlan: int = 0
    storm: int = 0
    rate: int = 0
    probes: list[F] = field(default_factory=list)
    loop: int = 0


class Forwarder:
    """Applies the forwarding rules over an ``Fdb`` and the current set of ports."""

    def __init__(self, fdb: Fdb, port_security: bool = True, guard: bool = False) -> None:
        self.fdb = fdb
        self.port_security = port_security
        self.guard = guard
        """Probes are taken out for the loop guard (else switched as any frame)."""
        self._blocked: frozenset[int] = frozenset()
        self._live: dict[int, bool] = {}  # port -> shut, as set_ports gave it
        self._shut: dict[int, bool] = {}
        self._flood_cache: dict[int, tuple[int, ...]] = {}
        self._policy: dict[int, PortPolicy] = {}
        self._vlan: dict[int, PortVlan] = {}  # the ports that are not transparent
        self._vlan_flood: dict[tuple[int, int], tuple[tuple[int, Out], ...]] = {}
        self._storm: dict[int, TokenBucket] = {}
        self._rate: dict[int, TokenBucket] = {}
        self._isolated: frozenset[int] = frozenset()
        self._quota: frozenset[int] = frozenset()  # ports with a MAC quota

    def set_ports(self, ports: Mapping[int, bool | PortPolicy], now: float = 0.0) -> None:
        """Replace the set of ports: port number -> shut, or its ``PortPolicy``.

        A port whose limit did not change keeps its bucket (a new one starts full)."""
        policies = {p: v if isinstance(v, PortPolicy) else PortPolicy(shut=v)
                    for p, v in ports.items()}
        old = self._policy
        self._policy = policies
        self._live = {p: v.shut for p, v in policies.items()}
        self._shut = self._effective_shut()
        self._vlan = {p: v.vlan for p, v in policies.items() if not v.vlan.transparent}
        self._isolated = frozenset(p for p, v in policies.items() if v.isolated)
        for p in self._quota:
            if not policies.get(p, PortPolicy()).max_macs:
                self.fdb.set_port_limit(p, None)
        self._quota = frozenset(p for p, v in policies.items() if v.max_macs)
        for p in self._quota:
            self.fdb.set_port_limit(p, policies[p].max_macs)
        self._storm = {p: self._storm[p] if p in self._storm and old[p].storm_pps == v.storm_pps
                       else storm_bucket(v.storm_pps, now)
                       for p, v in policies.items() if v.storm_pps}
        self._rate = {p: self._rate[p] if p in self._rate and old[p].rate_bps == v.rate_bps
                      else rate_bucket(v.rate_bps, now)
                      for p, v in policies.items() if v.rate_bps}
        self._flood_cache.clear()
        self._vlan_flood.clear()

    def set_blocked(self, ports: frozenset[int]) -> None:
        """The ports the loop guard blocks now (as shut, but counted apart)."""
        self._blocked = ports
        self._shut = self._effective_shut()
        self._flood_cache.clear()
        self._vlan_flood.clear()

    def _effective_shut(self) -> dict[int, bool]:
        """Port -> neither forwards nor floods to it: shut by the operator, or blocked."""
        return {p: shut or p in self._blocked for p, shut in self._live.items()}

    def update_port(self, port: int, policy: PortPolicy, now: float = 0.0) -> None:
        """Replace one port's policy (``set_ports`` with the others unchanged)."""
        self.set_ports({**self._policy, port: policy}, now)

    def _barred(self, in_port: int) -> frozenset[int]:
        """The ports a frame from ``in_port`` may never leave by: the isolated ones, if
        ``in_port`` is isolated itself."""
        return self._isolated if in_port in self._isolated else frozenset()

    def policy(self, port: int) -> PortPolicy | None:
        """A port's state and rules, or None for no such port."""
        return self._policy.get(port)

    @property
    def ports(self) -> dict[int, bool]:
        """The current ports: port number -> shut (a copy)."""
        return dict(self._live)

    def flood_targets(self, in_port: int) -> tuple[int, ...]:
        """The ports a frame from ``in_port`` floods to: live ones but ``in_port`` (and
        but the isolated ones, from an isolated port), sorted."""
        targets = self._flood_cache.get(in_port)
        if targets is None:
            barred = self._barred(in_port)
            targets = tuple(sorted(p for p, shut in self._shut.items()
                                   if not shut and p != in_port and p not in barred))
            self._flood_cache[in_port] = targets
        return targets

    def forward(self, in_port: int, frames: list[F], now: float,
                headers: Headers | None = None) -> ForwardResult[F]:
        """Learn from and decide the egress of ``frames`` received on ``in_port`` at ``now``.
        ``headers`` (the frames' virtio-net headers) gains the rewritten frames' own.

        Within the result, frames to one destination keep their order; unicast frames to a
        port come before the flooded ones (802.1D orders frames per destination and
        source only, and a batch decides every frame to one destination alike).
        """
        result: ForwardResult[F] = ForwardResult()
        state = self._shut.get(in_port)
        if state is None or state:  # unknown, shut or blocked
            if in_port in self._blocked and not self._live[in_port]:
                result.probes = [f for f in frames if is_probe(f)] if self.guard else []
                result.loop = len(frames) - len(result.probes)
            else:
                result.filtered = len(frames)
                if state:
                    result.shut[in_port] = len(frames)
            return result
        bucket = self._rate.get(in_port)
        if bucket is not None:
            kept = [f for f in frames if bucket.take(len(f), now)]
            result.rate = len(frames) - len(kept)
            frames = kept
        if self._vlan:
            self._forward_vlan(in_port, frames, now, result, headers or None)
            return result
        storm = self._storm.get(in_port)
        shut_of = self._shut
        barred = self._barred(in_port)
        learn, lookup = self.fdb.learn, self.fdb.lookup
        unicast: dict[int, list[F | bytes]] = {}
        flood: list[F | bytes] = []
        malformed = filtered = secured = stormed = 0
        secure = self.port_security or in_port in self._quota
        guard = self.guard
        probes = result.probes
        # A batch is mostly one stream: the same source and destination frame after frame.
        # The verdicts are kept while the keys repeat (a learn that changed the table
        # forgets the lookup), which took the broker from 2 to 1 lookups' worth per frame.
        from_bytes = int.from_bytes
        last_src = last_dst = -1
        refused = False
        out: int | None = None
        for f in frames:
            try:
                vid, dst, src = header(f)
            except FrameError:
                malformed += 1
                continue
            if dst[0] == 3 and guard and dst == PROBE_DST:  # the first byte: cheap
                probes.append(f)
                continue
            key = (vid << 48) | from_bytes(src, "big")
            if key != last_src:
                last_src = key
                verdict = learn(vid, src, in_port, now)
                refused = verdict is HELD or (verdict is REFUSED and secure)
                if verdict is not REFRESHED:
                    last_dst = -1
            if refused:
                secured += 1
                continue
            if dst[0] & 1:
                if storm is None or storm.take(1, now):
                    flood.append(f)
                else:
                    stormed += 1
                continue
            key = (vid << 48) | from_bytes(dst, "big")
            if key != last_dst:
                last_dst = key
                out = lookup(vid, dst, now)
            if out is None:
                if storm is None or storm.take(1, now):
                    flood.append(f)
                else:
                    stormed += 1
            elif out == in_port:
                filtered += 1
            else:
                shut = shut_of.get(out)
                if shut is None:  # learned on a port since deleted: as good as unknown
                    if storm is None or storm.take(1, now):
                        flood.append(f)
                    else:
                        stormed += 1
                elif shut:
                    filtered += 1
                    result.shut[out] = result.shut.get(out, 0) + 1
                elif out in barred:
                    filtered += 1
                else:
                    to = unicast.get(out)
                    if to is None:
                        unicast[out] = [f]
                    else:
                        to.append(f)
        result.malformed, result.filtered, result.secured = malformed, filtered, secured
        result.storm = stormed
        result.egress = self._merge(in_port, unicast, flood)
        return result

    def _merge(self, in_port: int, unicast: dict[int, list[F | bytes]],
               flood: list[F | bytes]) -> dict[int, list[F | bytes]]:
        if not flood:
            return unicast
        egress = unicast
        for p in self.flood_targets(in_port):
            to = egress.get(p)
            egress[p] = flood if to is None else to + flood
        return egress

    # --- with VLANs -----------------------------------------------------------------------
    def vlan_flood_targets(self, in_port: int, vid: int) -> tuple[tuple[int, Out], ...]:
        """The ports a frame of VLAN ``vid`` from ``in_port`` floods to, each with how it
        leaves there: live members but ``in_port``, sorted."""
        key = (in_port, vid)
        targets = self._vlan_flood.get(key)
        if targets is None:
            found = []
            for p in self.flood_targets(in_port):
                out = self._vlan.get(p, TRANSPARENT).egress(vid)
                if out is not None:
                    found.append((p, out))
            targets = tuple(found)
            if len(self._vlan_flood) >= MAX_VLAN_FLOOD_CACHE:
                self._vlan_flood.clear()
            self._vlan_flood[key] = targets
        return targets

    def _forward_vlan(self, in_port: int, frames: list[F], now: float,
                      result: ForwardResult[F], headers: Headers | None) -> None:
        """``forward`` when some port is not transparent: frames keep their batch order
        on every egress port."""
        rules = self._vlan.get(in_port, TRANSPARENT)
        storm = self._storm.get(in_port)
        shut_of, vlan_of = self._shut, self._vlan
        barred = self._barred(in_port)
        learn, lookup = self.fdb.learn, self.fdb.lookup
        egress = result.egress
        secure = self.port_security or in_port in self._quota
        for f in frames:
            try:
                _, dst, src = header(f)
            except FrameError:
                result.malformed += 1
                continue
            if dst[0] == 3 and self.guard and dst == PROBE_DST:
                result.probes.append(f)
                continue
            vid = rules.classify(f)
            if vid is None:
                result.vlan += 1
                continue
            verdict = learn(vid, src, in_port, now)
            if verdict is HELD or (verdict is REFUSED and secure):
                result.secured += 1
                continue
            out = None if dst[0] & 1 else lookup(vid, dst, now)
            if out is not None and out != in_port:
                shut = shut_of.get(out)
                if shut is None:
                    out = None  # learned on a port since deleted: as good as unknown
                elif shut:
                    result.filtered += 1
                    result.shut[out] = result.shut.get(out, 0) + 1
                    continue
            if out == in_port or out in barred:
                result.filtered += 1
            elif out is not None:
                how = vlan_of.get(out, TRANSPARENT).egress(vid)
                g = None if how is None else _rewrite(f, how, vid, headers)
                if g is None:  # its VLAN setting changed since: not a member now
                    result.filtered += 1
                else:
                    egress.setdefault(out, []).append(g)
            elif storm is not None and not storm.take(1, now):
                result.storm += 1
            else:
                forms: dict[Out, F | bytes | None] = {}
                for p, how in self.vlan_flood_targets(in_port, vid):
                    if how in forms:
                        g = forms[how]
                    else:
                        g = forms[how] = _rewrite(f, how, vid, headers)
                        if g is None:
                            result.malformed += 1
                    if g is not None:
                        egress.setdefault(p, []).append(g)


def _rewrite(f: F, how: Out, vid: int, headers: Headers | None) -> F | bytes | None:
    """``vlan.rewrite``, the frame's virtio-net header moved along; None when the header
    does not survive the move (a worker's nonsense: dropped)."""
    g = rewrite(f, how, vid)
    if headers is not None and g is not f:
        h = headers.get(id(f))
        if h is not None:
            try:
                headers[id(g)] = shifted(h, len(g) - len(f))
            except GsoError:
                return None
    return g

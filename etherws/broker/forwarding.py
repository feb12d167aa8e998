"""Forwarding decisions: which ports a batch of frames from one port goes out of (pure).

The rules of a learning bridge (IEEE 802.1D, as Linux's bridge applies them):

- frames from a port that does not exist or is shut are dropped, and teach nothing;
- the source (VLAN id, MAC) of every frame is learned on its ingress port; with port
  security (the default) a frame whose source its port may not learn, because the port
  holds its most addresses already, is dropped: a MAC flood from one port is not sent
  out of every other port;
- a unicast frame to a known, live destination goes out of that port only; if that port is
  the ingress port the frame is filtered (the destination is on the ingress segment), if
  it is shut the frame is dropped;
- a group-addressed frame or an unknown unicast floods to every port but the ingress
  port and the shut ones.

A frame never goes back out of its ingress port.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from etherws.broker.fdb import Fdb, LearnResult
from etherws.frame import FrameError, header

REFUSED = LearnResult.REFUSED_PORT_FULL
REFRESHED = LearnResult.REFRESHED
F = TypeVar("F", bytes, memoryview)
"""A frame: bytes, or a view into the ring it arrived in."""


@dataclass(slots=True)
class ForwardResult(Generic[F]):
    """What to do with one batch.

    ``egress`` maps a port to the frames to send out of it, in order. Lists may be shared
    between ports (a flooded batch is one list): treat them as read-only.
    ``malformed`` frames could not be parsed; ``filtered`` frames were dropped by the rules;
    ``secured`` frames were dropped by port security; ``shut`` counts, per shut port,
    the frames dropped because it is shut (coming in, or sent to it as a unicast).
    """

    egress: dict[int, list[F]] = field(default_factory=dict)
    malformed: int = 0
    filtered: int = 0
    secured: int = 0
    shut: dict[int, int] = field(default_factory=dict)


class Forwarder:
    """Applies the forwarding rules over an ``Fdb`` and the current set of ports."""

    def __init__(self, fdb: Fdb, port_security: bool = True) -> None:
        self.fdb = fdb
        self.port_security = port_security
        self._shut: dict[int, bool] = {}
        self._flood_cache: dict[int, tuple[int, ...]] = {}

    def set_ports(self, ports: Mapping[int, bool]) -> None:
        """Replace the set of ports: port number -> shut."""
        self._shut = dict(ports)
        self._flood_cache.clear()

    @property
    def ports(self) -> dict[int, bool]:
        """The current ports: port number -> shut (a copy)."""
        return dict(self._shut)

    def flood_targets(self, in_port: int) -> tuple[int, ...]:
        """The ports a frame from ``in_port`` floods to: live ones but ``in_port``, sorted."""
        targets = self._flood_cache.get(in_port)
        if targets is None:
            targets = tuple(sorted(p for p, shut in self._shut.items()
                                   if not shut and p != in_port))
            self._flood_cache[in_port] = targets
        return targets

    def forward(self, in_port: int, frames: list[F], now: float) -> ForwardResult[F]:
        """Learn from and decide the egress of ``frames`` received on ``in_port`` at ``now``.

        Within the result, frames to one destination keep their order; unicast frames to a
        port come before the flooded ones (802.1D orders frames per destination and
        source only, and a batch decides every frame to one destination alike).
        """
        result: ForwardResult[F] = ForwardResult()
        state = self._shut.get(in_port)
        if state is None or state:  # unknown or shut
            result.filtered = len(frames)
            if state:
                result.shut[in_port] = len(frames)
            return result
        shut_of = self._shut
        learn, lookup = self.fdb.learn, self.fdb.lookup
        unicast: dict[int, list[F]] = {}
        flood: list[F] = []
        malformed = filtered = secured = 0
        secure = self.port_security
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
            key = (vid << 48) | from_bytes(src, "big")
            if key != last_src:
                last_src = key
                verdict = learn(vid, src, in_port, now)
                refused = verdict is REFUSED
                if verdict is not REFRESHED:
                    last_dst = -1
            if refused and secure:
                secured += 1
                continue
            if dst[0] & 1:
                flood.append(f)
                continue
            key = (vid << 48) | from_bytes(dst, "big")
            if key != last_dst:
                last_dst = key
                out = lookup(vid, dst, now)
            if out is None:
                flood.append(f)
            elif out == in_port:
                filtered += 1
            else:
                shut = shut_of.get(out)
                if shut is None:  # learned on a port since deleted: as good as unknown
                    flood.append(f)
                elif shut:
                    filtered += 1
                    result.shut[out] = result.shut.get(out, 0) + 1
                else:
                    to = unicast.get(out)
                    if to is None:
                        unicast[out] = [f]
                    else:
                        to.append(f)
        result.malformed, result.filtered, result.secured = malformed, filtered, secured
        result.egress = self._merge(in_port, unicast, flood)
        return result

    def _merge(self, in_port: int, unicast: dict[int, list[F]],
               flood: list[F]) -> dict[int, list[F]]:
        if not flood:
            return unicast
        egress = unicast
        for p in self.flood_targets(in_port):
            to = egress.get(p)
            egress[p] = flood if to is None else to + flood
        return egress

"""A port's switching rules as an operator gives them: VLAN, storm control, rate limit (pure).

The same keys everywhere: ``setport`` options and ``setPort`` parameters, ``[[ports]]`` keys,
``listport`` fields::

    vlan = 10               # access port of VLAN 10 (0 with setport: back to transparent)
    trunk = "10,20,30-39"   # or "all", or a list of VIDs: an 802.1Q trunk
    native = 1              # a trunk's untagged VLAN
    storm = 2000            # broadcast, multicast and unknown unicast frames a second that
                            # the port may send (0: no limit; absent: the default, which is
                            # ratelimit.STORM_DEFAULT_PPS on tunnel ports, none on others)
    rate = 50               # Mbit/s the port may send into the switch (0 or absent: no limit)

The supervisor writes them into the port's slot (``tables.PortRules``); the broker applies
them (``broker.forwarding``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from etherws import vlan
from etherws.errors import EtherwsError
from etherws.ratelimit import storm_limit
from etherws.tables import STORM_DEFAULT, STORM_OFF, PortRules
from etherws.vlan import Mode, PortVlan, VlanError

KEYS = ("vlan", "trunk", "native", "storm", "rate")
MAX_STORM_PPS = 100_000_000
MAX_RATE_MBIT = 1_000_000.0
"""A terabit: more is no limit."""


class RulesError(EtherwsError):
    """Rules that cannot be used; the message is one line for the user."""


@dataclass(frozen=True)
class Rules:
    """A port's rules; the defaults are a transparent port with the default storm limit
    and no rate limit."""

    vlan: int | None = None
    trunk: frozenset[int] | None = None
    native: int | None = None
    storm: int | None = None
    rate: float | None = None

    def __post_init__(self) -> None:
        try:
            self.port_vlan()
        except VlanError as exc:
            raise RulesError(str(exc)) from None
        if self.vlan is not None and self.trunk is not None:
            raise RulesError("a port is an access port (vlan) or a trunk, not both")
        if self.native is not None and self.trunk is None:
            raise RulesError("'native' is the untagged VLAN of a trunk: give 'trunk' too")
        if self.storm is not None and not 0 <= self.storm <= MAX_STORM_PPS:
            raise RulesError(f"'storm' must be between 0 and {MAX_STORM_PPS} frames a second")
        if self.rate is not None and not (math.isfinite(self.rate)
                                          and 0 < self.rate <= MAX_RATE_MBIT):
            raise RulesError(f"'rate' must be between 0 and {MAX_RATE_MBIT:g} Mbit/s")

    def port_vlan(self) -> PortVlan:
        """The VLAN setting; VlanError."""
        if self.vlan is not None:
            return vlan.access(self.vlan)
        if self.trunk is not None:
            return vlan.trunk(self.trunk, self.native or 0)
        return vlan.TRANSPARENT

    def table(self) -> PortRules:
        """The port table's words for these rules."""
        v = self.port_vlan()
        storm = STORM_DEFAULT if self.storm is None else (self.storm or STORM_OFF)
        return PortRules(v.word(), v.bitmap(), storm, round((self.rate or 0) * 1e6))

    @staticmethod
    def from_table(rules: PortRules) -> Rules:
        """Inverse of ``table`` (what the supervisor wrote earlier)."""
        v = PortVlan.from_words(rules.vlan, rules.trunk)
        storm = None if rules.storm == STORM_DEFAULT else (
            0 if rules.storm == STORM_OFF else rules.storm)
        return Rules(v.vid if v.mode is Mode.ACCESS else None,
                     v.vids if v.mode is Mode.TRUNK else None,
                     (v.vid or None) if v.mode is Mode.TRUNK else None,
                     storm, rules.rate_bps / 1e6 if rules.rate_bps else None)

    def keys(self) -> dict[str, Any]:
        """The ``[[ports]]`` keys of the rules that are not defaults, in ``KEYS`` order."""
        out: dict[str, Any] = {}
        if self.vlan is not None:
            out["vlan"] = self.vlan
        if self.trunk is not None:
            out["trunk"] = vlan.format_vids(self.trunk)
        if self.native is not None:
            out["native"] = self.native
        if self.storm is not None:
            out["storm"] = self.storm
        if self.rate is not None:
            out["rate"] = int(self.rate) if self.rate == int(self.rate) else self.rate
        return out

    def entry(self, tunnel: bool) -> dict[str, Any]:
        """The ``listport`` fields: the VLAN setting, the storm limit in force (None: no
        limit) and the rate limit in Mbit/s (None: no limit)."""
        storm = storm_limit(self.table().storm, tunnel)
        return {"vlan": self.vlan,
                "trunk": None if self.trunk is None else vlan.format_vids(self.trunk),
                "native": self.native, "storm": storm or None, "rate": self.rate}

    def changed(self, params: Mapping[str, Any]) -> Rules:
        """These rules with ``setport``'s options: ``vlan`` (0: transparent) or ``trunk``
        (with ``native``) replace the VLAN setting, ``native`` alone changes a trunk's,
        ``storm`` and ``rate`` (0: no limit) replace theirs; RulesError."""
        new = self
        if "vlan" in params or "trunk" in params:
            new = replace(new, vlan=None, trunk=None, native=None)
        try:
            if "vlan" in params:
                if "trunk" in params:
                    raise RulesError("give --vlan or --trunk, not both")
                vid = params["vlan"]
                new = replace(new, vlan=None if vid == 0 else vlan.parse_vid(vid))
            if "trunk" in params:
                new = replace(new, trunk=vlan.parse_vids(str(params["trunk"])))
            if "native" in params:
                if new.trunk is None:
                    raise RulesError("--native goes with --trunk (or a port that is a trunk)")
                new = replace(new, native=vlan.parse_vid(params["native"], "native VLAN id"))
        except VlanError as exc:
            raise RulesError(str(exc)) from None
        if "storm" in params:
            new = replace(new, storm=params["storm"])
        if "rate" in params:
            new = replace(new, rate=float(params["rate"]) or None)
        return new


def from_keys(table: Mapping[str, Any]) -> Rules:
    """The rules of a ``[[ports]]`` table (its other keys are ignored); RulesError naming
    the key."""
    values: dict[str, Any] = {}
    for key in ("vlan", "native", "storm"):
        if key in table:
            value = table[key]
            if not isinstance(value, int) or isinstance(value, bool):
                raise RulesError(f"{key!r} must be an integer")
            values[key] = value
    try:
        if "vlan" in values:
            vlan.parse_vid(values["vlan"])
        if "native" in values:
            vlan.parse_vid(values["native"], "native VLAN id")
        if "trunk" in table:
            values["trunk"] = _trunk(table["trunk"])
    except VlanError as exc:
        raise RulesError(str(exc)) from None
    if "rate" in table:
        rate = table["rate"]
        if not isinstance(rate, (int, float)) or isinstance(rate, bool):
            raise RulesError("'rate' must be a number of Mbit/s")
        values["rate"] = float(rate) or None
    return Rules(**values)


def _trunk(value: Any) -> frozenset[int]:
    if isinstance(value, str):
        return vlan.parse_vids(value)
    if isinstance(value, list) and value and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        return frozenset(vlan.parse_vid(v) for v in value)
    raise RulesError("'trunk' must be a list of VLAN ids, or a string like \"10,20-29\" "
                     "or \"all\"")

"""Offloads that break TCP through a netdev port: turned off while the port exists (I/O).

A netdev port reads and writes whole frames on an AF_PACKET socket. With receive
offloads on (GRO, LRO), the kernel hands it merged segments far above the MTU, which no
other port can carry; with checksum and segmentation offloads on (tx/rx checksum, GSO,
TSO), it sees frames whose checksums are left for hardware that never computes them.
TCP through such a port stalls or crawls. So the supervisor turns these features off on
the port's interface when the port is added, logs exactly which, and turns the same
ones back on when the port is deleted or the supervisor stops. It uses pyroute2's
ethtool (the ETHTOOL_GFEATURES/SFEATURES ioctls, as ``ethtool -K`` does); a feature the
driver does not let change is left as it is, and an interface without the ioctl (some
virtual devices) is logged and used as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from pyroute2.ethtool import Ethtool

log = logging.getLogger(__name__)

FEATURES = (
    "rx-gro", "rx-lro", "rx-gro-hw", "rx-gro-list", "rx-udp-gro-forwarding",
    "tx-generic-segmentation", "tx-tcp-segmentation", "tx-tcp-ecn-segmentation",
    "tx-tcp-mangleid-segmentation", "tx-tcp6-segmentation", "tx-udp-segmentation",
    "tx-checksum-ipv4", "tx-checksum-ip-generic", "tx-checksum-ipv6", "tx-checksum-sctp",
    "rx-checksum",
)
"""The kernel's names (``ethtool -k``) of what is turned off: GRO, LRO, GSO, TSO and
the checksum offloads."""

_turned_off: dict[str, list[str]] = {}
"""Interface -> the features this supervisor turned off there (and must turn back on)."""


def enabled(ifname: str) -> dict[str, bool]:
    """The FEATURES of ``ifname`` the kernel knows, and whether each is on."""
    with Ethtool() as et:
        feats = et.get_features(ifname).features
    return {name: bool(feats[name].enable) for name in FEATURES if name in feats}


def _set(ifname: str, names: Iterable[str], on: bool) -> None:
    with Ethtool() as et:
        features = et.get_features(ifname)
        for name in names:
            features.features[name].enable = on
        et.set_features(ifname, features)


def turn_off(ifname: str, port: int) -> list[str]:
    """Turn the offloads that break a netdev port off on ``ifname``; returns the ones
    that were on and are now off (remembered for ``restore``)."""
    try:
        with Ethtool() as et:
            feats = et.get_features(ifname).features
        on = [n for n in FEATURES if n in feats and feats[n].enable and feats[n].available]
        if on:
            _set(ifname, on, False)
        now = enabled(ifname)
    except (OSError, KeyError) as exc:
        log.warning("port %d: cannot read or change the offloads of %s (%s); TCP through "
                    "it may stall", port, ifname, exc)
        return []
    off = [n for n in on if not now.get(n, False)]
    stuck = [n for n in on if now.get(n, False)]
    if off:
        _turned_off[ifname] = _turned_off.get(ifname, []) + off
        log.info("port %d: turned off on %s (they break TCP through the port): %s",
                 port, ifname, " ".join(off))
    if stuck:
        log.warning("port %d: the driver of %s keeps these on: %s", port, ifname,
                    " ".join(stuck))
    return off


def restore(ifname: str) -> list[str]:
    """Turn back on what ``turn_off`` turned off on ``ifname``; returns those names."""
    names = _turned_off.pop(ifname, [])
    if not names:
        return []
    try:
        _set(ifname, names, True)
    except (OSError, KeyError) as exc:  # the interface is gone, or changed driver
        log.warning("cannot restore the offloads of %s (%s): %s", ifname, exc,
                    " ".join(names))
        return []
    log.info("offloads restored on %s: %s", ifname, " ".join(names))
    return names


def restore_unused(in_use: Iterable[str]) -> None:
    """Restore every interface that is no longer a netdev port (a port removed by
    reload, or all of them at stop with an empty ``in_use``)."""
    keep = set(in_use)
    for ifname in [i for i in _turned_off if i not in keep]:
        restore(ifname)

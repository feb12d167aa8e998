"""Netlink operations on port interfaces, through pyroute2 (I/O; supervisor only).

Only the supervisor imports pyroute2 (it costs ~150 ms and 25 MB per process), so
workers that restart often stay light.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from etherws.errors import EtherwsError
from etherws.ifaddr import IfAddress, netmask_text

_FAMILY = {4: 2, 6: 10}  # AF_INET, AF_INET6
_SCOPE_LINK = 253


class NetifError(OSError, EtherwsError):
    """A netlink operation failed; the message names the interface and the reason."""


@dataclass(frozen=True)
class IfInfo:
    """What listif shows about an interface."""

    mtu: int
    addresses: tuple[tuple[str, int, int], ...]  # (address, prefixlen, family 4|6)

    def as_entry(self) -> dict[str, object]:
        """The address fields of a listInterface entry."""
        first = self.addresses[0] if self.addresses else None
        return {
            "address": first[0] if first else "",
            "netmask": netmask_text(first[2], first[1]) if first else "",
            "mtu": self.mtu,
            "addresses": [f"{a}/{p}" for a, p, _ in self.addresses],
        }


def exists(name: str) -> bool:
    """True when an interface of that name exists in our network namespace."""
    return os.path.exists(f"/sys/class/net/{name}")


def is_tap(name: str) -> bool:
    """True when ``name`` is a TUN/TAP device (the kernel shows tun_flags only for those)."""
    return os.path.exists(f"/sys/class/net/{name}/tun_flags")


def _index(ipr: IPRoute, name: str) -> int:
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise NetifError(f"no interface named {name}")
    return int(found[0])


def _fail(name: str, exc: NetlinkError) -> NetifError:
    return NetifError(f"{name}: {os.strerror(exc.code) if exc.code else exc}")


def set_up(name: str) -> None:
    """Bring the link up."""
    with IPRoute() as ipr:
        try:
            ipr.link("set", index=_index(ipr, name), state="up")
        except NetlinkError as exc:
            raise _fail(name, exc) from None


def set_mtu(name: str, mtu: int) -> None:
    """Set the MTU (the kernel has the last word on the range)."""
    with IPRoute() as ipr:
        try:
            ipr.link("set", index=_index(ipr, name), mtu=mtu)
        except NetlinkError as exc:
            raise _fail(name, exc) from None


def set_address(name: str, addr: IfAddress) -> None:
    """Make ``addr`` the interface's address of its family (``set_addresses``)."""
    set_addresses(name, [addr])


def set_addresses(name: str, addrs: Sequence[IfAddress]) -> None:
    """Make ``addrs`` the interface's global addresses of the families they are of.

    Other global addresses of those families are removed: "set" means the port ends
    up with exactly these addresses, as etherws 1.3's setInterface did; families not in
    ``addrs`` are left alone. New addresses are added before the old ones go, and
    setting the addresses it already has changes nothing (routes through them survive
    an idempotent configuration script, a reload, or a restart that adopts the device).
    """
    wanted = {(a.address, a.prefixlen) for a in addrs}
    if any(a.family == 4 for a in addrs):
        _promote_secondaries(name)
    with IPRoute() as ipr:
        idx = _index(ipr, name)
        try:
            current = [(msg.get_attr("IFA_ADDRESS"), msg["prefixlen"])
                       for family in sorted({a.family for a in addrs})
                       for msg in ipr.addr("dump", index=idx, family=_FAMILY[family])
                       if msg["scope"] != _SCOPE_LINK]
            for addr in addrs:
                if (addr.address, addr.prefixlen) not in current:
                    ipr.addr("add", index=idx, address=addr.address, prefixlen=addr.prefixlen)
            for address, prefixlen in current:
                if (address, prefixlen) not in wanted:
                    ipr.addr("del", index=idx, address=address, prefixlen=prefixlen)
        except NetlinkError as exc:
            raise _fail(name, exc) from None


def _promote_secondaries(name: str) -> None:
    """A new IPv4 address in the subnet of the old one is added as a secondary, and the
    kernel deletes secondaries with their primary unless told to promote them: without
    this, replacing 192.0.2.1/24 by 192.0.2.2/24 left the interface with no address."""
    path = f"/proc/sys/net/ipv4/conf/{name}/promote_secondaries"
    try:
        with open(path, "w") as f:
            f.write("1")
    except OSError as exc:
        raise NetifError(f"{name}: cannot set promote_secondaries: {exc.strerror}") from None


def set_master(name: str, bridge: str | None) -> None:
    """Put the interface into bridge ``bridge`` (None: out of any); nothing when it is
    already where it should be, so an adopted TAP's bridge membership does not flap."""
    with IPRoute() as ipr:
        idx = _index(ipr, name)
        master = 0 if bridge is None else _index(ipr, bridge)
        if bridge is not None and not os.path.isdir(f"/sys/class/net/{bridge}/bridge"):
            raise NetifError(f"{bridge} is not a bridge")
        try:
            link = ipr.link("get", index=idx)[0]
            if (link.get_attr("IFLA_MASTER") or 0) != master:
                ipr.link("set", index=idx, master=master)
        except NetlinkError as exc:
            raise _fail(name, exc) from None


def master(name: str) -> str | None:
    """The bridge (or other master) the interface is in, or None."""
    path = f"/sys/class/net/{name}/master"
    return os.path.basename(os.readlink(path)) if os.path.islink(path) else None


def ifindex(name: str) -> int | None:
    """The interface's index, or None when it does not exist."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        return int(found[0]) if found else None


def info(name: str) -> IfInfo | None:
    """MTU and global addresses of ``name``, or None when it does not exist (any more)."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found:
            return None
        idx = found[0]
        try:
            link = ipr.link("get", index=idx)[0]
            addrs = []
            for msg in ipr.addr("dump", index=idx):
                if msg["scope"] == _SCOPE_LINK:
                    continue
                fam = 4 if msg["family"] == _FAMILY[4] else 6
                addrs.append((msg.get_attr("IFA_ADDRESS"), msg["prefixlen"], fam))
        except NetlinkError:  # deleted between the lookup and the dump
            return None
        return IfInfo(int(link.get_attr("IFLA_MTU")), tuple(addrs))

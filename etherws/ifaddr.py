"""Interface settings from the control protocol: addresses, netmasks, MTUs (pure)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from etherws.errors import EtherwsError

IFNAMSIZ = 16
"""The kernel's interface-name buffer, NUL included: names have at most 15 bytes."""
MIN_MTU = 68
"""The IPv4 minimum (RFC 791); the kernel refuses less on Ethernet."""
MAX_MTU = 65521
"""What a TAP device accepts: 65535 less the Ethernet header and an 802.1Q tag."""


class AddressError(EtherwsError):
    """An address, netmask or MTU that cannot be set; the message is for the user."""


@dataclass(frozen=True)
class IfAddress:
    """An address with its prefix length, ready for netlink."""

    address: str
    prefixlen: int
    family: int  # 4 or 6

    @property
    def cidr(self) -> str:
        """``address/prefixlen``."""
        return f"{self.address}/{self.prefixlen}"


def parse_address(address: str, netmask: str | None = None) -> IfAddress:
    """Parse ``192.0.2.1`` + ``255.255.255.0`` (or ``24``), or a CIDR ``192.0.2.1/24``.

    IPv6 works the same way (``2001:db8::1/64``, or netmask ``64``). Without a netmask
    or prefix the host prefix (/32, /128) is used, as ``ip addr add`` does.
    """
    text = address.strip()
    if "/" in text and netmask:
        raise AddressError("give the prefix either in the address or as --netmask, not both")
    if netmask:
        text = f"{text}/{netmask.strip()}"
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError:
        raise AddressError(f"not an address with netmask: {text!r}") from None
    if iface.ip.is_multicast or iface.ip.is_unspecified:
        raise AddressError(f"{iface.ip} cannot be an interface address")
    return IfAddress(str(iface.ip), iface.network.prefixlen, iface.version)


def netmask_text(family: int, prefixlen: int) -> str:
    """The netmask as listif shows it: dotted for IPv4, the prefix length for IPv6."""
    if family == 4:
        return str(ipaddress.IPv4Network(f"0.0.0.0/{prefixlen}").netmask)
    return str(prefixlen)


def check_mtu(mtu: int) -> int:
    """Return ``mtu`` when a TAP or Ethernet device can take it; raise AddressError."""
    if not MIN_MTU <= mtu <= MAX_MTU:
        raise AddressError(f"MTU {mtu} is out of range ({MIN_MTU}..{MAX_MTU})")
    return mtu


def valid_ifname(name: str) -> bool:
    """True when ``name`` is a fixed interface name the kernel accepts.

    The kernel's ``dev_valid_name``: 1..15 bytes, no '/', ':' or whitespace, not '.'
    or '..'. Also refused here: NUL, and '%' — the kernel treats ``tap%d`` as a
    pattern and picks a new name on every creation, which a port cannot re-attach to.
    """
    raw = name.encode("utf-8", "surrogateescape")  # os.fsencode on Linux, without os
    if not 1 <= len(raw) < IFNAMSIZ or raw in (b".", b".."):
        return False
    return not any(c in b"/:%\0" or chr(c).isspace() for c in raw)

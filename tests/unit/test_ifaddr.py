"""Addresses, netmasks and MTUs as setif takes them."""

from __future__ import annotations

import pytest

from etherws.ifaddr import (
    AddressError,
    IfAddress,
    check_mtu,
    netmask_text,
    parse_address,
)


@pytest.mark.parametrize("address, netmask, expected", [
    ("192.0.2.1", "255.255.255.0", IfAddress("192.0.2.1", 24, 4)),
    ("192.0.2.1", "24", IfAddress("192.0.2.1", 24, 4)),
    ("192.0.2.1/25", None, IfAddress("192.0.2.1", 25, 4)),
    ("192.0.2.1", None, IfAddress("192.0.2.1", 32, 4)),
    (" 198.51.100.7/16 ", "", IfAddress("198.51.100.7", 16, 4)),
    ("2001:db8::1/64", None, IfAddress("2001:db8::1", 64, 6)),
    ("2001:db8::1", "48", IfAddress("2001:db8::1", 48, 6)),
])
def test_parse(address: str, netmask: str | None, expected: IfAddress) -> None:
    assert parse_address(address, netmask) == expected


@pytest.mark.parametrize("address, netmask", [
    ("192.0.2.300", None), ("192.0.2.1", "255.0.255.0"), ("192.0.2.1/33", None),
    ("192.0.2.1/24", "24"), ("hello", None), ("224.0.0.1/4", None), ("0.0.0.0", None),
    ("2001:db8::1", "129"), ("", None),
])
def test_parse_rejects(address: str, netmask: str | None) -> None:
    with pytest.raises(AddressError):
        parse_address(address, netmask)


def test_cidr_and_netmask_text() -> None:
    assert parse_address("192.0.2.1/24").cidr == "192.0.2.1/24"
    assert netmask_text(4, 24) == "255.255.255.0"
    assert netmask_text(6, 64) == "64"


@pytest.mark.parametrize("mtu, ok", [(67, False), (68, True), (1500, True), (9000, True),
                                     (65521, True), (65522, False), (0, False), (-1, False)])
def test_mtu_range(mtu: int, ok: bool) -> None:
    if ok:
        assert check_mtu(mtu) == mtu
    else:
        with pytest.raises(AddressError, match="out of range"):
            check_mtu(mtu)

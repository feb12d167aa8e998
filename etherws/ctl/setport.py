"""etherws-ctl setport: the options beyond --shut (VLANs, storm control, rate limit) and
their argument types (``etherws.portrules`` says what they mean)."""

from __future__ import annotations

import argparse
from typing import Any

from etherws import vlan
from etherws.ctl.secrets import UsageError


def vid(value: str) -> int:
    """A VLAN id, 1-4094."""
    try:
        return vlan.parse_vid(value)
    except vlan.VlanError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def vid_or_zero(value: str) -> int:
    """A VLAN id, or 0: none."""
    return 0 if value.strip() == "0" else vid(value)


def vid_list(value: str) -> str:
    """VLAN ids: ``10,20,30-39`` or ``all``, as the supervisor reads them."""
    try:
        return vlan.format_vids(vlan.parse_vids(value))
    except vlan.VlanError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def non_negative_int(value: str) -> int:
    """An integer, 0 or more."""
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"not a number of frames a second: {value!r}")
    return int(value)


def mbit(value: str) -> float:
    """Mbit/s, 0 or more."""
    try:
        rate = float(value)
    except ValueError:
        rate = -1.0
    if not 0 <= rate < float("inf"):
        raise argparse.ArgumentTypeError(f"not a number of Mbit/s: {value!r}")
    return rate


def add_options(p: argparse.ArgumentParser) -> None:
    """setport's VLAN, storm and rate options."""
    vlans = p.add_mutually_exclusive_group()
    vlans.add_argument("--vlan", metavar="VID", type=vid_or_zero,
                       help="an access port of VLAN VID: untagged frames are in VID, tagged "
                       "ones are dropped (0: no VLAN setting, every frame as it comes)")
    vlans.add_argument("--trunk", metavar="VIDS", type=vid_list,
                       help="an 802.1Q trunk of VIDS (10,20,30-39 or all): frames of other "
                       "VLANs are dropped")
    p.add_argument("--native", metavar="VID", type=vid,
                   help="the trunk's untagged VLAN")
    p.add_argument("--storm", metavar="PPS", type=non_negative_int,
                   help="broadcast, multicast and unknown unicast frames a second the port "
                   "may send; more are dropped (0: no limit)")
    p.add_argument("--rate", metavar="MBIT", type=mbit,
                   help="Mbit/s the port may send into the switch; more is dropped "
                   "(0: no limit)")


def params(args: argparse.Namespace) -> dict[str, Any]:
    """setPort's params: the port and the options given; UsageError for none."""
    params: dict[str, Any] = {"port": args.port}
    for key in ("shut", "vlan", "trunk", "native", "storm", "rate"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    if len(params) == 1:
        raise UsageError("setport: give --shut, --vlan, --trunk, --native, --storm or --rate")
    return params

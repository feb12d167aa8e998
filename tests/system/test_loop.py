"""A real loop: two switches joined by two tunnels. MAC move protection drops the copies
that come back, so broadcasts do not circle and hosts still reach each other."""

from __future__ import annotations

import re
import time
from pathlib import Path

from tests.support import SCALE, run, wait_until
from tests.system.tunnel import (
    OVERLAY_B,
    UNDERLAY_B,
    Site,
    Underlay,
    connected,
    server_and_client,
)


def tunnel_frames(s: Site) -> int:
    """Frames the site's tunnel ports have carried, both ways."""
    return sum(e["rx"] + e["tx"] for e in s.switch.entries("listport")
               if e["type"] in ("client", "server"))


def test_two_tunnels_between_two_switches_do_not_melt_the_segment(
        net: Underlay, tmp_path: Path) -> None:
    with server_and_client(net, tmp_path) as (b, a):
        connected(a, f"ws://{UNDERLAY_B}/")
        connected(a, f"ws://{UNDERLAY_B}:80/")  # the same switch again: a loop
        assert len(b.tunnel_ports("server")) == 2
        a.host.wait_ping(OVERLAY_B, 15 * SCALE, "a ping through the looped tunnels")
        # Broadcasts on the loop: ARP for an address nobody has, from both sides.
        for s in (a, b):
            run("ip", "netns", "exec", s.ns, "ping", "-c", "3", "-i", "0.2", "-W", "1",
                "198.51.100.99", check=False)
        # Copies of those broadcasts reached each side by both tunnels: a side may have
        # learned the other's host on the tunnel that is not the one it is answered by.
        # Frames that come by the other tunnel are then held until the hold-down (2 s) of
        # silence moves the address: a hiccup of a few seconds, never a storm.
        a.host.wait_ping(OVERLAY_B, 10 * SCALE, "a ping once the addresses settled")
        res = run("ip", "netns", "exec", a.ns, "ping", "-n", "-c", "20", "-i", "0.1", "-W",
                  "1", OVERLAY_B, check=False)
        received = int(re.search(r"(\d+) received", res.stdout).group(1))  # type: ignore[union-attr]
        assert received >= 19, res.stdout
        assert "DUP!" not in res.stdout  # one copy of each reply, not one per tunnel
        held = sum(s.switch.status()["fdb"]["held_moves"] for s in (a, b))
        assert held > 0  # the copies that came back were dropped, not switched
        # Quiet now: nothing keeps circling (a storm would be thousands a second).
        wait_until(lambda: _rate(a) < 50, 10, "the tunnels to go quiet")


def _rate(s: Site, seconds: float = 1.0) -> float:
    before = tunnel_frames(s)
    time.sleep(seconds)  # a rate needs an interval; the wait_until around it has a deadline
    return (tunnel_frames(s) - before) / seconds

"""MAC move protection on a real switch: a host that takes another's address cannot move
it while the owner talks; once the owner is silent for the hold-down, it moves."""

from __future__ import annotations

import subprocess
from typing import Iterator

import pytest

from tests.support import PYTHON, run, wait_until
from tests.system.harness import Pair, Switch, two_hosts

A, B = "203.0.113.1", "203.0.113.2"


@pytest.fixture
def pair(switch: Switch) -> Iterator[Pair]:
    with two_hosts(switch, A, B) as p:
        yield p


def port_of(switch: Switch, mac: str) -> int | None:
    """The port listfdb shows ``mac`` on."""
    return next((e["port"] for e in switch.entries("listfdb") if e["mac"] == mac), None)


INJECT = """
import socket, sys, time
dev, src, count = sys.argv[1], bytes.fromhex(sys.argv[2].replace(":", "")), int(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((dev, 0))
for _ in range(count):  # broadcasts with someone else's source address
    s.send(b"\\xff" * 6 + src + b"\\x88\\xb5" + b"etherws move-hold test".ljust(46))
    time.sleep(0.1)
"""


def inject(ns: str, dev: str, src: str, count: int) -> subprocess.Popen[bytes]:
    """Frames from ``src`` sent out of ``dev`` in namespace ``ns``, ten a second."""
    return subprocess.Popen(["ip", "netns", "exec", ns, PYTHON, "-c", INJECT, dev, src,
                             str(count)])


def test_a_stolen_address_stays_with_its_talking_owner(switch: Switch, pair: Pair) -> None:
    owner = pair.a.mac()
    pair.a.wait_ping(B, 10)
    assert port_of(switch, owner) == pair.tap_port
    # Host A keeps talking, ten frames a second, while host B sends with its address.
    talk = inject(pair.a.ns, pair.a.inner, owner, 200)
    steal = inject(pair.b.ns, pair.b.inner, owner, 300)
    try:
        wait_until(lambda: switch.status()["fdb"]["held_moves"] >= 10, 10,
                   "the thief's frames to be held")
        assert port_of(switch, owner) == pair.tap_port
        drops = next(e["drops"] for e in switch.entries("listport")
                     if e["port"] == pair.net_port)
        assert drops >= 10  # counted on the thief's port
        # The owner goes quiet: after the hold-down the address follows its new port.
        talk.kill()
        talk.wait()
        run("ip", "-n", pair.a.ns, "link", "set", "dev", pair.a.inner, "down")
        wait_until(lambda: port_of(switch, owner) == pair.net_port, 10,
                   "the address to move once its owner is silent")
    finally:
        for p in (talk, steal):
            p.kill()
            p.wait()

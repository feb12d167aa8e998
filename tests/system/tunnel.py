"""System-test harness for tunnels: two sites in network namespaces, each its own switch.

An *underlay* is two namespaces joined by a veth pair (203.0.113.1 and .2): the only
path between them, like two hosts that reach each other over one network. A *site* is
one of them running its own supervisor (inside the namespace) with a TAP port that
has an overlay address (198.51.100.0/24); a tunnel between the two switches puts both
TAPs on one Ethernet segment, so the overlay addresses answer pings only through it.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tests.support import PYTHON, delete_link, netns, run, unique
from tests.system.harness import Host, Switch, no_offloads

UNDERLAY_A, UNDERLAY_B = "203.0.113.1", "203.0.113.2"
OVERLAY_A, OVERLAY_B = "198.51.100.1", "198.51.100.2"


@dataclass
class Underlay:
    """Two namespaces joined by a veth pair."""

    a: str
    b: str


@contextlib.contextmanager
def underlay() -> Iterator[Underlay]:
    """Namespaces A (203.0.113.1) and B (203.0.113.2) joined by a veth; removed after."""
    tag = unique("")
    with netns(f"etw-a{tag}") as a, netns(f"etw-b{tag}") as b:
        ua, ub = f"etwua{tag}", f"etwub{tag}"
        run("ip", "link", "add", ua, "type", "veth", "peer", "name", ub)
        try:
            run("ip", "link", "set", ua, "netns", a)
            run("ip", "link", "set", ub, "netns", b)
            for ns, dev, address in ((a, ua, UNDERLAY_A), (b, ub, UNDERLAY_B)):
                run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", dev)
                run("ip", "-n", ns, "link", "set", dev, "up")
                no_offloads(dev, ns)
            yield Underlay(a, b)
        finally:
            delete_link(ua)  # normally gone with its namespace already
            delete_link(ub)


@dataclass
class Site:
    """One namespace's switch and its TAP port with an overlay address."""

    ns: str
    switch: Switch
    host: Host      # the TAP as a host: ping from it, its MAC
    tap_port: int

    def ctl(self, *args: str, check: bool = True,
            timeout_s: float = 5) -> subprocess.CompletedProcess:
        """etherws-ctl against this site's switch."""
        return self.switch.ctl(*args, check=check, timeout_s=timeout_s)

    def add_client(self, url: str, *options: str,
                   timeout_s: float = 60) -> subprocess.CompletedProcess:
        """``addport client`` (not checked: tests look at the exit status)."""
        return self.switch.ctl("--json", "addport", "client", *options, url, check=False,
                               timeout_s=timeout_s)

    def tunnel_ports(self, kind: str) -> list[dict]:
        """listport entries of this type (client/server)."""
        return [e for e in self.switch.entries("listport") if e["type"] == kind]

    def fdb_port(self, mac: str) -> int | None:
        """The port ``mac`` is learned on, or None."""
        return next((e["port"] for e in self.switch.entries("listfdb") if e["mac"] == mac), None)


def fresh_rundir(tmp_path: Path, name: str) -> str:
    """A run directory (0700) for one of the test's switches; reused if it exists."""
    d = tmp_path / name
    d.mkdir(mode=0o700, exist_ok=True)
    return str(d)


def start_switch(ns: str, rundir: str, log: Path, *options: str, server: bool = True) -> Switch:
    """A supervisor in namespace ``ns``."""
    return Switch(rundir, log, list(options), server=server, ns=ns)


def add_tap(sw: Switch, ns: str, overlay: str, tap: str | None = None) -> Site:
    """A TAP port with ``overlay``/24 on switch ``sw``; the Site.

    ``tap`` names a TAP that already exists (it outlives the switch, with its MAC, as a
    gateway's configured TAP would); by default the switch creates one.
    """
    if tap is None:
        tap = unique("etwt")
        sw.taps.append(tap)
    port = sw.json("addport", "tap", tap)["entries"][0]["port"]
    sw.ctl("setif", str(port), "--address", f"{overlay}/24")
    sw.wait_port(port, "up")
    return Site(ns, sw, Host(ns, tap, tap, overlay), port)


@contextlib.contextmanager
def site(ns: str, rundir: str, log: Path, overlay: str, *options: str,
         server: bool = True, tap: str | None = None) -> Iterator[Site]:
    """A switch in ``ns`` with a TAP port at ``overlay`` (``tap``: an existing TAP, see
    add_tap); stopped afterwards."""
    sw = start_switch(ns, rundir, log, *options, server=server)
    try:
        yield add_tap(sw, ns, overlay, tap)
    finally:
        sw.close()


@contextlib.contextmanager
def server_and_client(net: Underlay, tmp_path: Path, *options: str
                      ) -> Iterator[tuple[Site, Site]]:
    """Site B with a WebSocket server (port 80) and site A without one, both started with
    ``options`` and stopped afterwards: (b, a)."""
    with site(net.b, fresh_rundir(tmp_path, "rb"), tmp_path / "b.log", OVERLAY_B,
              *options) as b, \
            site(net.a, fresh_rundir(tmp_path, "ra"), tmp_path / "a.log", OVERLAY_A,
                 *options, server=False) as a:
        yield b, a


def connected(client: Site, url: str, *options: str) -> int:
    """``addport client`` that must succeed; waits for the link; the port number."""
    res = client.add_client(url, *options)
    assert res.returncode == 0, f"addport client {url}: {res.stderr.strip()}"
    port = json.loads(res.stdout)["entries"][0]["port"]
    client.switch.wait_port(port, "up", timeout_s=20)
    return port


def self_signed(directory: Path, name: str, ip: str) -> tuple[Path, Path]:
    """A self-signed certificate for ``ip`` (its own CA), as an operator would make one:
    (certificate, key)."""
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(directory / f"{name}.key"),
        "-out", str(directory / f"{name}.pem"), "-days", "2", "-subj", f"/CN={ip}",
        "-addext", f"subjectAltName=IP:{ip}")
    return directory / f"{name}.pem", directory / f"{name}.key"


def ns_python(ns: str, code: str, *args: str, timeout_s: float = 30) -> subprocess.CompletedProcess:
    """Run a Python snippet inside namespace ``ns`` (a raw client of the test's own)."""
    return run("ip", "netns", "exec", ns, PYTHON, "-c", code, *args, check=False,
               timeout_s=timeout_s)


def pings_both_ways(a: Site, b: Site, timeout_s: float = 15) -> None:
    """Ping across the tunnel from each side (ARP included)."""
    a.host.wait_ping(OVERLAY_B, timeout_s, f"{a.ns} to reach {OVERLAY_B} through the tunnel")
    b.host.wait_ping(OVERLAY_A, timeout_s, f"{b.ns} to reach {OVERLAY_A} through the tunnel")


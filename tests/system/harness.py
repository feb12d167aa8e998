"""System-test harness: a real supervisor and hosts in network namespaces.

A *host* is a network namespace with one end of a veth pair (addressed from
203.0.113.0/24); the other end stays in the root namespace, where the switch runs, and
is either a ``netdev`` port itself or bridged with a TAP port. Two ping endpoints are
always in two different namespaces, or the kernel would deliver locally.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import psutil

from tests.support import (
    PYTHON,
    SCALE,
    deadline,
    delete_link,
    netns,
    run,
    unique,
    wait_until,
)

START_TIMEOUT_S = 15.0


class Switch:
    """A supervisor started in the foreground by a test, driven through etherws-ctl.

    Without ``server`` it runs with ``--no-server`` (most tests need no WebSocket server,
    and the default port 80 is not theirs to take); ``ns`` runs it in a network namespace.
    """

    def __init__(self, rundir: str, log: Path, extra: list[str] | None = None,
                 server: bool = False, ns: str | None = None) -> None:
        self.rundir = rundir
        self.log = log
        self.ns = ns
        self.taps: list[str] = []  # deleted at close if a killed supervisor left them
        self._logf = open(log, "ab")
        argv = (["ip", "netns", "exec", ns] if ns else []) + [
            PYTHON, "-m", "etherws.supervisor", "start", "--foreground",
            "--rundir", rundir, "--debug", *([] if server else ["--no-server"]), *(extra or [])]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._logf,
                                     stderr=self._logf)
        try:
            wait_until(lambda: self.proc.poll() is not None or
                       self.ctl("listport", check=False).returncode == 0,
                       START_TIMEOUT_S, "the supervisor to answer")
            if self.proc.poll() is not None:
                raise AssertionError(f"supervisor exited at start:\n{self.log_text()}")
        except BaseException:
            self.close()  # no fixture will get this object: clean up here
            raise

    def log_text(self) -> str:
        """Everything the switch logged so far."""
        return self.log.read_text(errors="replace")

    def ctl(self, *args: str, check: bool = True, timeout_s: float = 5) -> subprocess.CompletedProcess:
        """Run etherws-ctl against this switch."""
        res = run(PYTHON, "-m", "etherws.ctl.cli", "--rundir", self.rundir,
                  "--timeout", str(timeout_s * SCALE), *args, check=False,
                  timeout_s=timeout_s + 10)
        if check and res.returncode != 0:
            raise AssertionError(f"etherws-ctl {' '.join(args)} -> {res.returncode}: "
                                 f"{res.stderr.strip()}")
        return res

    def json(self, *args: str) -> dict[str, Any]:
        """Run etherws-ctl --json and decode the result."""
        return json.loads(self.ctl("--json", *args).stdout)

    def entries(self, command: str) -> list[dict[str, Any]]:
        """The entries of listport/listfdb/listif."""
        return self.json(command)["entries"]

    def port(self, number: int) -> dict[str, Any] | None:
        """The listport entry of one port, or None."""
        return next((e for e in self.entries("listport") if e["port"] == number), None)

    def add(self, kind: str, target: str) -> int:
        """addport; returns the new port number."""
        if kind == "tap":
            self.taps.append(target)
        return self.json("addport", kind, target)["entries"][0]["port"]

    def wait_port(self, number: int, state: str, timeout_s: float = 10) -> dict[str, Any]:
        """Wait until a port reaches ``state``; returns its entry."""
        return wait_until(lambda: (e := self.port(number)) and e["state"] == state and e,
                          timeout_s, f"port {number} to be {state}")

    def status(self) -> dict[str, Any]:
        """getStatus."""
        return self.json("status")["entries"][0]

    def descendants(self) -> list[psutil.Process]:
        """Every process below the supervisor."""
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def close(self) -> None:
        """Stop the supervisor (SIGTERM, then SIGKILL) and any child it left behind."""
        kids = self.descendants()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15 * SCALE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for kid in kids:  # ours, by pid: only if a bug left one behind
            with contextlib.suppress(psutil.Error):
                if kid.is_running() and kid.status() != psutil.STATUS_ZOMBIE:
                    kid.kill()
        for tap in self.taps:
            delete_link(tap, self.ns)
        self._logf.close()


@dataclass
class Host:
    """A network namespace wired to the root namespace by a veth pair."""

    ns: str
    inner: str   # veth end inside the namespace, with ``address``
    outer: str   # veth end in the root namespace, for the switch
    address: str

    def mac(self) -> str:
        """The inner interface's MAC address."""
        out = run("ip", "-n", self.ns, "-j", "link", "show", "dev", self.inner).stdout
        return json.loads(out)[0]["address"]

    def ping(self, address: str, timeout_s: float = 0.5) -> bool:
        """One ping from this host; True when answered."""
        res = run("ip", "netns", "exec", self.ns, "ping", "-n", "-q", "-c", "1",
                  "-W", str(timeout_s), address, check=False, timeout_s=timeout_s + 10)
        return res.returncode == 0

    def wait_ping(self, address: str, timeout_s: float, what: str = "") -> float:
        """Ping until answered; returns the seconds it took."""
        start = time.monotonic()
        wait_until(lambda: self.ping(address, 0.3), timeout_s,
                   what or f"{self.ns} to reach {address}", interval_s=0)
        return time.monotonic() - start


def no_offloads(dev: str, ns: str | None = None) -> None:
    """Turn off checksum/segmentation offloads: an AF_PACKET port reads frames as they
    are, so a veth's unfinished checksums or 64 KB super-packets must not reach it."""
    cmd = (["ip", "netns", "exec", ns] if ns else []) + [
        "ethtool", "-K", dev, "tx", "off", "rx", "off", "tso", "off", "gso", "off", "gro", "off"]
    run(*cmd, check=False)


@contextlib.contextmanager
def host(address: str, outer_offloads: bool = False,
         inner_offloads: bool = False) -> Iterator[Host]:
    """A host namespace with ``address``/24 on its veth; removed afterwards.

    The host's own end has its offloads off, as a host behind a real NIC sends wire-sized
    frames with their checksums, unless ``inner_offloads`` (a host whose stack hands the
    veth 64 KiB TSO buffers); ``outer_offloads`` keeps the kernel's default offloads on
    the other end (the switch's port), off otherwise."""
    tag = unique("")
    with netns(f"etw-{tag}") as ns:
        h = Host(ns, f"etwi{tag}", f"etwo{tag}", address)
        run("ip", "link", "add", h.outer, "type", "veth", "peer", "name", h.inner)
        try:
            run("ip", "link", "set", h.inner, "netns", ns)
            run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", h.inner)
            run("ip", "-n", ns, "link", "set", h.inner, "up")
            run("ip", "link", "set", h.outer, "up")
            if not outer_offloads:
                no_offloads(h.outer)
            if not inner_offloads:
                no_offloads(h.inner, ns)
            yield h
        finally:
            delete_link(h.outer)


@contextlib.contextmanager
def bridge(*members: str) -> Iterator[str]:
    """A Linux bridge in the root namespace enslaving ``members``; removed afterwards."""
    name = unique("etwbr")
    run("ip", "link", "add", name, "type", "bridge")
    try:
        run("ip", "link", "set", name, "type", "bridge", "forward_delay", "0")
        for m in members:
            run("ip", "link", "set", m, "master", name)
        run("ip", "link", "set", name, "up")
        yield name
    finally:
        delete_link(name)


@dataclass
class Pair:
    """Host A behind a TAP port (bridged with it), host B behind a netdev port."""

    a: Host
    b: Host
    tap: str
    tap_port: int
    net_port: int


@contextlib.contextmanager
def two_hosts(sw: Switch, address_a: str, address_b: str) -> Iterator[Pair]:
    """The basic topology: both ports up, everything removed afterwards."""
    with host(address_a) as a, host(address_b) as b:
        tap = unique("etwt")
        tap_port = sw.add("tap", tap)
        with bridge(tap, a.outer):
            net_port = sw.add("netdev", b.outer)
            sw.wait_port(tap_port, "up")
            sw.wait_port(net_port, "up")
            yield Pair(a, b, tap, tap_port, net_port)


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone: it no longer does anything)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def within(seconds: float) -> float:
    """A scaled deadline, re-exported for tests that time a recovery."""
    return deadline(seconds)


def sigkill(pid: int) -> None:
    """kill -9 a process the test's switch started."""
    os.kill(pid, signal.SIGKILL)

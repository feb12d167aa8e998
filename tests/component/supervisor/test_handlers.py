"""The control handlers against a switch of fakes: real tables in memory, real TAP
devices, and stand-in worker processes (a sleeping Python) instead of port workers.

This is the supervisor's control path without the supervisor: what each request does to
the ports, the tables and the interfaces, and what it answers.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from etherws import probe, tables
from etherws.control import Later, Refused
from etherws.runtime import portstatus
from etherws.supervisor import handlers, netif, probing
from etherws.supervisor.policy import State
from etherws.supervisor.handlers import Switch
from etherws.supervisor.ports import PortManager
from etherws.tables import BrokerView, FdbTable, PortKind, PortTable, SlotView
from tests import support

STAND_IN = [sys.executable, "-c", "import time; time.sleep(120)"]
"""A worker that does nothing but live; the port's arguments follow as its argv."""


@pytest.fixture
def switch(rundir: str) -> Iterator[Switch]:
    """A switch whose workers are stand-ins; every port is removed afterwards."""
    table = PortTable.format(bytearray(PortTable.size(8)), 8)
    fdb = FdbTable.format(bytearray(FdbTable.size(64)), 64)
    ports = PortManager(table, lambda module: list(STAND_IN), rundir)
    stopped: list[bool] = []
    sw = Switch(ports=ports, table=table, fdb=fdb, ageout_s=300.0, rundir=rundir,
                started=time.monotonic(), stop=lambda: stopped.append(True))
    try:
        yield sw
    finally:
        for port in list(ports.ports.values()):
            ports.remove(port)


@pytest.fixture
def tap_name() -> Iterator[str]:
    """A TAP name of this test's own, deleted afterwards if anything left it."""
    name = support.unique("etwh")
    try:
        yield name
    finally:
        support.delete_link(name)


def call(sw: Switch, method: str, **params: Any) -> Mapping[str, Any]:
    """Run a handler; a deferred answer is polled until it is known (with a deadline)."""
    result = handlers.HANDLERS[method](sw, params)
    if isinstance(result, Later):
        return support.wait_until(result.poll, 5, f"the answer to {method}")
    return result


def test_addport_tap_creates_the_device_and_delport_deletes_it(switch: Switch,
                                                                tap_name: str) -> None:
    entry = call(switch, "addPort", type="tap", target=tap_name)["entries"][0]
    assert (entry["port"], entry["type"], entry["target"]) == (1, "tap", tap_name)
    assert netif.is_tap(tap_name)
    port = switch.ports.ports[1]
    assert switch.table.read(port.slot).port == 1
    assert entry["pid"] == port.child.pid and port.child.popen is not None
    call(switch, "delPort", port=1)
    assert switch.ports.ports == {}
    assert not netif.exists(tap_name)
    assert port.child.popen is None or port.child.popen.poll() is not None


def test_addport_refusals_change_nothing(switch: Switch, tap_name: str) -> None:
    call(switch, "addPort", type="tap", target=tap_name)
    for params, reason in [
        ({"type": "tap", "target": tap_name}, "duplicate"),
        ({"type": "bridge", "target": "x"}, "bad-type"),
        ({"type": "tap", "target": "x" * 16}, "bad-name"),
        ({"type": "tap", "target": "y", "insecure": True}, "bad-option"),
        ({"type": "netdev", "target": support.unique("nope")}, "no-such-interface"),
        ({"type": "netdev", "target": "lo"}, "bad-name"),
        ({"type": "client", "target": "ftp://h/"}, "bad-url"),
    ]:
        with pytest.raises(Refused) as err:
            call(switch, "addPort", **params)
        assert err.value.reason == reason, params
    assert list(switch.ports.ports) == [1]


def test_setport_shuts_the_slot(switch: Switch, tap_name: str) -> None:
    call(switch, "addPort", type="tap", target=tap_name)
    slot = switch.ports.ports[1].slot
    assert call(switch, "setPort", port=1, shut=True)["entries"] == [{"port": 1, "shut": True}]
    assert switch.table.read(slot).shut
    call(switch, "setPort", port=1, shut=False)
    assert not switch.table.read(slot).shut


@pytest.mark.parametrize("method, extra", [
    ("setPort", {"shut": True}), ("delPort", {}), ("restartPort", {}),
    ("setInterface", {"mtu": 1400}), ("flushFdb", {}), ("probePort", {}),
])
def test_an_unknown_port_is_refused(switch: Switch, method: str, extra: dict[str, Any]) -> None:
    with pytest.raises(Refused) as err:
        call(switch, method, port=7, **extra)
    assert err.value.reason == "no-such-port"


def test_setif_sets_address_and_mtu(switch: Switch, tap_name: str) -> None:
    call(switch, "addPort", type="tap", target=tap_name)
    entry = call(switch, "setInterface", port=1, address="192.0.2.9/24", mtu=1400)["entries"][0]
    assert (entry["address"], entry["netmask"], entry["mtu"]) == (
        "192.0.2.9", "255.255.255.0", 1400)
    with pytest.raises(Refused) as err:
        call(switch, "setInterface", port=1, mtu=10)
    assert err.value.reason == "bad-value"
    info = netif.info(tap_name)
    assert info is not None and info.mtu == 1400


def test_restartport_starts_a_new_worker(switch: Switch, tap_name: str) -> None:
    call(switch, "addPort", type="tap", target=tap_name)
    before = switch.ports.ports[1].child.pid
    after = call(switch, "restartPort", port=1)["entries"][0]["pid"]
    assert after is not None and after != before


def test_listfdb_hides_expired_entries_and_deleted_ports(switch: Switch,
                                                         tap_name: str) -> None:
    call(switch, "addPort", type="tap", target=tap_name)
    now = time.monotonic_ns()
    mac = bytes.fromhex("020000000001")
    switch.fdb.write(0, tables.fdb_key(0, mac), 1, now)
    switch.fdb.write(1, tables.fdb_key(0, bytes.fromhex("020000000002")), 1,
                     now - 301 * 1_000_000_000)  # older than ageout
    switch.fdb.write(2, tables.fdb_key(5, bytes.fromhex("020000000003")), 9, now)  # no port 9
    assert call(switch, "listFdb")["entries"] == [
        {"vid": 0, "mac": "02:00:00:00:00:01", "port": 1, "age": 0}]


def test_flushfdb_waits_for_the_broker_without_blocking(switch: Switch) -> None:
    later = handlers.HANDLERS["flushFdb"](switch, {})
    assert isinstance(later, Later)
    assert later.poll() is None  # deferred: the supervisor's loop goes on meanwhile
    # the broker's side: it serves the request it finds
    broker = BrokerView(switch.table)
    pending = broker.pending_flush()
    assert pending is not None and pending[1] == 0  # all ports
    broker.flush_served(pending[0])
    assert later.poll() == {"entries": []}


def test_flushfdb_is_refused_when_the_broker_does_not_answer(
        switch: Switch, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handlers, "FLUSH_TIMEOUT_S", 0.05)
    later = handlers.HANDLERS["flushFdb"](switch, {})
    assert isinstance(later, Later)
    with pytest.raises(Refused) as err:
        support.wait_until(later.poll, 5, "the refusal")
    assert err.value.reason == "broker-down"


def test_status_and_shutdown(switch: Switch) -> None:
    status = call(switch, "getStatus")["entries"][0]
    assert status["pid"] == os.getpid() and status["rundir"] == switch.rundir
    assert status["ports"] == 0 and status["fdb"]["capacity"] == 64
    stopped: list[bool] = []
    switch.stop = lambda: stopped.append(True)
    call(switch, "shutdown")
    assert stopped == [True]


def test_a_gone_peers_counters_stay_in_the_status(switch: Switch) -> None:
    now = time.monotonic()
    peer = switch.ports.add(PortKind.SERVER, "198.51.100.7:5555", now)
    view = SlotView(switch.table, peer.slot)
    view.received(3, 180)
    view.add_drops(2)
    call(switch, "delPort", port=peer.number)
    gone = call(switch, "getStatus")["entries"][0]["gone_peers"]
    assert (gone["peers"], gone["rx"], gone["rx_bytes"], gone["drops"]) == (1, 3, 180, 2)


@pytest.mark.parametrize("first, second", [
    ("192.0.2.1/24", "192.0.2.2/24"),  # the same subnet: once left no address at all
    ("192.0.2.1/24", "198.51.100.1/24"),
    ("2001:db8::1/64", "2001:db8::2/64"),
])
def test_setif_replaces_an_address_without_leaving_none(switch: Switch, tap_name: str,
                                                        first: str, second: str) -> None:
    call(switch, "addPort", type="tap", target=tap_name)
    call(switch, "setInterface", port=1, address=first)
    entry = call(switch, "setInterface", port=1, address=second)["entries"][0]
    family = 6 if ":" in second else 4
    mine = [a for a in entry["addresses"] if (":" in a) == (family == 6)]
    assert mine == [second]


@pytest.mark.parametrize("size, reason", [(1514, "not-a-tunnel"), (63, "bad-value"),
                                          (65536, "bad-value")])
def test_probe_refuses_a_tap_port_and_sizes_out_of_range(switch: Switch, tap_name: str,
                                                         size: int, reason: str) -> None:
    call(switch, "addPort", type="tap", target=tap_name)
    slot = switch.ports.ports[1].slot
    with pytest.raises(Refused) as err:
        call(switch, "probePort", port=1, size=size)
    assert err.value.reason == reason
    assert "\n" not in err.value.message
    assert switch.table.probe(slot).request == 0  # nothing asked of the worker


@pytest.fixture
def tunnel(switch: Switch, tap_name: str) -> Iterator[SlotView]:
    """Port 1 played as a client port whose link is up; its slot as its worker sees it."""
    call(switch, "addPort", type="tap", target=tap_name)
    port = switch.ports.ports[1]
    port.kind, port.child.life.state = PortKind.CLIENT, State.UP
    portstatus.write(switch.rundir, 1, "up")
    try:
        yield SlotView(switch.table, port.slot)
    finally:
        port.kind = PortKind.TAP  # deleted as what it is


def test_probe_waits_for_the_workers_result(switch: Switch, tunnel: SlotView) -> None:
    later = handlers.HANDLERS["probePort"](switch, {"port": 1, "size": 9014})
    assert isinstance(later, Later) and later.poll() is None
    request = tunnel.probe_request()
    assert request is not None and request[1] == 9014
    result = probe.Result(probe.Code.ANSWERED, 9014, 0.002, 0.001, 4096, (9014,), 65535)
    tunnel.probe_done(request[0], *probe.to_words(result))
    assert later.poll() == {"entries": [{"port": 1, "name": None, **result.entry()}]}


def test_probe_of_the_default_size_and_no_answer(switch: Switch, tunnel: SlotView) -> None:
    later = handlers.HANDLERS["probePort"](switch, {"port": 1})
    request = tunnel.probe_request()
    assert isinstance(later, Later) and request is not None and request[1] == 1514
    tunnel.probe_done(request[0], *probe.to_words(probe.Result(probe.Code.NO_ANSWER, 1514)))
    [entry] = later.poll()["entries"]  # type: ignore[index]
    assert not entry["answered"] and entry["largest"] is None


@pytest.mark.parametrize("case, reason", [
    ("link down", "not-up"), ("superseded", "superseded"), ("deadline", "no-result"),
    ("unsupported", "not-a-tunnel"), ("deleted", "gone")])
def test_probe_refusals(switch: Switch, tunnel: SlotView, monkeypatch: pytest.MonkeyPatch,
                        case: str, reason: str) -> None:
    if case == "link down":
        portstatus.write(switch.rundir, 1, "backoff", "connection refused")
    if case == "deadline":
        monkeypatch.setattr(probing, "DEADLINE_S", -1.0)
    with pytest.raises(Refused) as err:
        later = handlers.HANDLERS["probePort"](switch, {"port": 1})
        assert isinstance(later, Later)
        request = tunnel.probe_request()
        assert request is not None
        if case == "superseded":
            switch.table.request_probe(tunnel.slot, 64)
        elif case == "unsupported":
            tunnel.probe_done(request[0], *probe.to_words(probe.unsupported(1514)))
        elif case == "deleted":  # and a new port 1 (the same child: cleaned up as usual)
            switch.ports.ports[1] = dataclasses.replace(switch.ports.ports[1])
        later.poll()
    assert err.value.reason == reason and "\n" not in err.value.message
    if case == "link down":
        assert "backoff" in err.value.message and tunnel.probe_request() is None

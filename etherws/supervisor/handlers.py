"""The control methods: what each JSON-RPC request does to the switch (I/O shell).

Each handler takes validated params (``control.METHODS``) and returns a result
``{"entries": [...]}``, or raises ``control.Refused`` with a reason slug and one line
for the user. Refusals change nothing.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Callable

from etherws import tuntap
from etherws.control import Handler, Refused
from etherws.frame import mac_to_text
from etherws.ifaddr import AddressError, check_mtu, parse_address
from etherws.supervisor import netif
from etherws.supervisor.ports import Port
from etherws.tables import F_IN_USE, F_REFUSED_FULL, F_REFUSED_PORT, PortKind, split_key

if TYPE_CHECKING:
    from etherws.supervisor.service import Supervisor

Params = dict[str, Any]
FLUSH_TIMEOUT_S = 2.0


def _port(sup: Supervisor, params: Params) -> Port:
    number = params["port"]
    port = sup.ports.ports.get(number)
    if port is None:
        raise Refused("no-such-port", f"no port {number}")
    return port


def port_entry(sup: Supervisor, port: Port, now: float) -> dict[str, Any]:
    """A listPort entry."""
    child, life = port.child, port.child.life
    cpu, rss = child.stats()
    slot = sup.table.read(port.slot)
    return {
        "port": port.number, "type": port.kind.label, "target": port.target,
        "state": life.state.value, "shut": port.shut, "pid": child.pid,
        "restarts": life.restarts, "uptime": child.uptime(now), "cpu": cpu, "rss": rss,
        "rx": slot.rx, "tx": slot.tx, "rx_bytes": slot.rx_bytes, "tx_bytes": slot.tx_bytes,
        "drops": slot.drops, "errors": slot.errors, "reason": life.reason,
        "next_retry": max(0.0, life.next_start_at - now)
        if life.next_start_at is not None else None,
    }


def add_port(sup: Supervisor, params: Params) -> dict[str, Any]:
    """addPort: a TAP (created or attached) or an existing interface (netdev)."""
    kinds = {"tap": PortKind.TAP, "netdev": PortKind.NETDEV}
    kind = kinds.get(params["type"])
    if kind is None:
        raise Refused("bad-type", f"unknown port type {params['type']!r} "
                                  f"(this version has: {', '.join(kinds)})")
    name = params["target"]
    if not tuntap.valid_ifname(name):
        raise Refused("bad-name", f"{name!r} is not a valid interface name")
    other = sup.ports.find_target(name)
    if other is not None:
        raise Refused("duplicate", f"{name} is already port {other.number}")
    created = False
    if kind is PortKind.TAP:
        if netif.exists(name) and not netif.is_tap(name):
            raise Refused("not-a-tap", f"interface {name} exists and is not a TAP device")
        if netif.exists(name):
            _try_attach(name)
        else:
            try:
                tuntap.create_persistent_tap(name)
            except OSError as exc:
                raise Refused("tap-failed", f"cannot create TAP {name}: {exc}") from None
            created = True
    elif not netif.exists(name):
        raise Refused("no-such-interface", f"no interface named {name}")
    elif name == "lo":
        raise Refused("bad-name", "the loopback interface cannot be a switch port")
    try:
        netif.set_up(name)
        port = sup.ports.add(kind, name, created, time.monotonic())
    except (OSError, LookupError) as exc:
        if created:
            tuntap.delete_persistent_tap(name)
        raise Refused("add-failed", f"cannot add {name}: {exc}") from None
    return {"entries": [port_entry(sup, port, time.monotonic())]}


def _try_attach(name: str) -> None:
    """Refuse an existing TUN/TAP the worker could never attach (a TUN device, flags
    that differ, a TAP another process holds) now, not after a crash loop."""
    try:
        os.close(tuntap.attach_tap(name))
    except OSError as exc:
        raise Refused("tap-busy", f"cannot attach to {name}: {exc}") from None


def set_port(sup: Supervisor, params: Params) -> dict[str, Any]:
    """setPort: shut or open a port."""
    port = _port(sup, params)
    sup.ports.set_shut(port, params["shut"])
    return {"entries": [{"port": port.number, "shut": port.shut}]}


def del_port(sup: Supervisor, params: Params) -> dict[str, Any]:
    """delPort: stop the worker, forget its addresses, delete its TAP if we made it."""
    port = _port(sup, params)
    # Releasing the slot bumps the port table's generation; the broker then forgets the
    # port's addresses itself (and so does a restarted broker), while listfdb hides them
    # at once because their port is gone.
    sup.ports.remove(port)
    return {"entries": [{"port": port.number}]}


def restart_port(sup: Supervisor, params: Params) -> dict[str, Any]:
    """restartPort: clear FATAL (or just bounce a worker)."""
    port = _port(sup, params)
    sup.ports.restart(port, time.monotonic())
    return {"entries": [port_entry(sup, port, time.monotonic())]}


def list_port(sup: Supervisor, params: Params) -> dict[str, Any]:
    """listPort: the per-port process monitor."""
    now = time.monotonic()
    return {"entries": [port_entry(sup, p, now) for p in sup.ports.ports.values()]}


def set_interface(sup: Supervisor, params: Params) -> dict[str, Any]:
    """setInterface: address and/or MTU of a TAP or netdev port's interface."""
    port = _port(sup, params)
    if port.kind not in (PortKind.TAP, PortKind.NETDEV):
        raise Refused("not-an-interface", f"port {port.number} has no interface")
    if "address" not in params and "mtu" not in params:
        raise Refused("nothing-to-set", "give --address and/or --mtu")
    try:
        mtu = check_mtu(params["mtu"]) if "mtu" in params else None
        addr = parse_address(params["address"], params.get("netmask")) \
            if "address" in params else None
    except AddressError as exc:
        raise Refused("bad-value", str(exc)) from None
    try:
        # the address first: when it fails, nothing has changed yet
        if addr is not None:
            netif.set_address(port.target, addr)
        if mtu is not None:
            netif.set_mtu(port.target, mtu)
    except OSError as exc:
        raise Refused("netlink", str(exc)) from None
    return list_interface(sup, {"port": port.number})


def list_interface(sup: Supervisor, params: Params) -> dict[str, Any]:
    """listInterface: addresses and MTU of every interface port."""
    entries = []
    for port in sup.ports.ports.values():
        if port.kind not in (PortKind.TAP, PortKind.NETDEV):
            continue
        if "port" in params and port.number != params["port"]:
            continue
        entry: dict[str, Any] = {"port": port.number, "type": port.kind.label,
                                 "target": port.target}
        info = netif.info(port.target)
        entry.update(info.as_entry() if info else
                     {"address": "", "netmask": "", "mtu": None, "addresses": []})
        entries.append(entry)
    return {"entries": entries}


def list_fdb(sup: Supervisor, params: Params) -> dict[str, Any]:
    """listFdb: learned addresses with their port and age in seconds."""
    now_ns = time.monotonic_ns()
    ageout_ns = sup.cfg.ageout * 1e9
    entries = []
    for _, key, port, seen_ns in sup.fdb.entries():
        age_ns = max(0, now_ns - seen_ns)
        if age_ns >= ageout_ns or port not in sup.ports.ports:
            continue  # expired or of a deleted port: the broker drops it within a second
        vid, mac = split_key(key)
        entries.append({"vid": vid, "mac": mac_to_text(mac), "port": port,
                        "age": int(age_ns // 1_000_000_000)})
    entries.sort(key=lambda e: (e["vid"], e["mac"]))
    return {"entries": entries}


def flush_fdb(sup: Supervisor, params: Params) -> dict[str, Any]:
    """flushFdb: forget learned addresses (of one port, or all)."""
    number = params.get("port", 0)
    if number:
        _port(sup, params)
    if not sup.flush(number, FLUSH_TIMEOUT_S):
        raise Refused("broker-down", "the broker did not answer in time; "
                                     "it flushes when it is back")
    return {"entries": []}


def get_status(sup: Supervisor, params: Params) -> dict[str, Any]:
    """getStatus: the supervisor, the broker and the FDB at a glance."""
    broker = sup.ports.broker
    w = sup.fdb.words
    return {"entries": [{
        "pid": os.getpid(), "rundir": sup.rundir.root,
        "uptime": time.monotonic() - sup.started, "ports": len(sup.ports.ports),
        "broker": {"state": broker.life.state.value, "pid": broker.pid,
                   "restarts": broker.life.restarts, "reason": broker.life.reason},
        "fdb": {"entries": w[F_IN_USE], "capacity": sup.fdb.capacity,
                "refused_full": w[F_REFUSED_FULL], "refused_port": w[F_REFUSED_PORT]},
    }]}


def shutdown(sup: Supervisor, params: Params) -> dict[str, Any]:
    """shutdown: reply, then stop everything in order."""
    sup.stopping = True
    return {"entries": [{"pid": os.getpid()}]}


def table(sup: Supervisor) -> dict[str, Handler]:
    """The method table for control.dispatch, bound to one supervisor."""
    def bind(fn: Callable[[Supervisor, Params], dict[str, Any]]) -> Handler:
        return lambda params: fn(sup, params)
    return {
        "addPort": bind(add_port), "setPort": bind(set_port), "delPort": bind(del_port),
        "restartPort": bind(restart_port), "listPort": bind(list_port),
        "setInterface": bind(set_interface), "listInterface": bind(list_interface),
        "listFdb": bind(list_fdb), "flushFdb": bind(flush_fdb),
        "getStatus": bind(get_status), "shutdown": bind(shutdown),
    }

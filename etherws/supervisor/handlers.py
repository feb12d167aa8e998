"""The control methods: what each JSON-RPC request does to the switch (I/O shell).

Each handler takes validated params (``control.METHODS``) and returns a result
``{"entries": [...]}``, or raises ``control.Refused`` with a reason slug and one line
for the user. Refusals change nothing.
"""

from __future__ import annotations

import json
import os
import ssl
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from etherws.control import Handler, Later, Refused
from etherws.frame import mac_to_text
from etherws.ifaddr import AddressError, check_mtu, parse_address, valid_ifname
from etherws.runtime import tuntap
from etherws.supervisor import netif
from etherws.supervisor.policy import State
from etherws.supervisor.ports import Port, PortManager
from etherws.tables import (
    F_IN_USE,
    F_REFUSED_FULL,
    F_REFUSED_PORT,
    FdbTable,
    PortKind,
    PortTable,
    split_key,
)
from etherws.wsurl import Target, check_proxy_env, parse_proxy

Params = dict[str, Any]
FLUSH_TIMEOUT_S = 2.0
FIRST_ANSWER_S = 40.0
"""Longest wait for a client port's first connection before addport answers; above the
worker's own limit for one attempt (``client.ATTEMPT_LIMIT_S``), so the worker decides."""
MAX_URL = 2048


@dataclass
class Switch:
    """What the control handlers see of the running switch, and all they may change: the
    ports (through their manager), the shared tables, and a way to ask for a stop."""

    ports: PortManager
    table: PortTable
    fdb: FdbTable
    ageout_s: float
    rundir: str
    started: float
    """time.monotonic() at start"""
    stop: Callable[[], None]


def _port(sw: Switch, params: Params) -> Port:
    number = params["port"]
    port = sw.ports.ports.get(number)
    if port is None:
        raise Refused("no-such-port", f"no port {number}")
    return port


def port_entry(sw: Switch, port: Port, now: float) -> dict[str, Any]:
    """A listPort entry.

    While a tunnel port's worker runs, its state is the link's (connecting, up, backoff,
    failed) with the link's next retry and last error: that is what the operator asks
    about; the process's own state shows when it is not running.
    """
    child, life = port.child, port.child.life
    cpu, rss = child.stats()
    slot = sw.table.read(port.slot)
    state, reason = life.state.value, life.reason
    next_retry = max(0.0, life.next_start_at - now) if life.next_start_at is not None else None
    link = sw.ports.link(port)
    if link is not None and life.state in (State.STARTING, State.UP):
        state = str(link["state"])
        reason = str(link["error"] or "") if state != "up" else reason
        at_ns = link.get("next_retry_ns")
        next_retry = max(0.0, (at_ns - time.monotonic_ns()) / 1e9) \
            if isinstance(at_ns, int) and state == "backoff" else None
    return {
        "port": port.number, "type": port.kind.label, "target": port.target,
        "state": state, "shut": port.shut, "pid": child.pid,
        "restarts": life.restarts, "uptime": child.uptime(now), "cpu": cpu, "rss": rss,
        "rx": slot.rx, "tx": slot.tx, "rx_bytes": slot.rx_bytes, "tx_bytes": slot.tx_bytes,
        "drops": slot.drops, "errors": slot.errors, "reason": reason,
        "next_retry": next_retry,
        "link": None if link is None else link["state"],
    }


CLIENT_ONLY = ("user", "passwd", "cacerts", "insecure", "proxy", "proxy_env", "retry")


def add_port(sw: Switch, params: Params) -> dict[str, Any] | Later:
    """addPort: a TAP (created or attached), an existing interface (netdev) or an
    outgoing WebSocket (client)."""
    kinds = {"tap": PortKind.TAP, "netdev": PortKind.NETDEV, "client": PortKind.CLIENT}
    kind = kinds.get(params["type"])
    if kind is None:
        raise Refused("bad-type", f"unknown port type {params['type']!r} "
                                  f"(one of: {', '.join(kinds)})")
    if kind is PortKind.CLIENT:
        return add_client(sw, params)
    extra = [k for k in CLIENT_ONLY if k in params]
    if extra:
        raise Refused("bad-option", f"{extra[0]!r} is an option of client ports")
    name = params["target"]
    if not valid_ifname(name):
        raise Refused("bad-name", f"{name!r} is not a valid interface name")
    other = sw.ports.find_target(name)
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
        port = sw.ports.add(kind, name, time.monotonic(), created_tap=created)
    except (OSError, LookupError) as exc:
        if created:
            tuntap.delete_persistent_tap(name)
        raise Refused("add-failed", f"cannot add {name}: {exc}") from None
    return {"entries": [port_entry(sw, port, time.monotonic())]}


def _client_options(params: Params, target: Target) -> tuple[str, ...]:
    """The client worker's command line options; Refused for ones that cannot work."""
    options: list[str] = []
    if (params.get("cacerts") or params.get("insecure")) and not target.secure:
        raise Refused("bad-option", "--cacerts and --insecure are for wss:// URLs")
    if params.get("cacerts") and params.get("insecure"):
        raise Refused("bad-option", "choose --cacerts or --insecure, not both")
    if params.get("cacerts"):
        path = params["cacerts"]
        if not os.path.isabs(path):
            raise Refused("bad-option", f"--cacerts {path}: give an absolute path")
        try:  # a CA file the worker could never load is an error now, not a crash loop
            ssl.create_default_context(cafile=path)
        except (OSError, ssl.SSLError) as exc:
            why = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
            raise Refused("bad-cacerts", f"cannot use --cacerts {path}: {why}") from None
        options += ["--cacerts", path]
    if params.get("insecure"):
        options.append("--insecure")
    if params.get("retry"):
        options.append("--retry")
    return tuple(options)


def _client_secrets(params: Params) -> bytes:
    """What the client worker reads on its stdin; Refused (naming no secret) if unusable."""
    if "passwd" in params and "user" not in params:
        raise Refused("bad-option", "--passwd goes with --user")
    if ":" in params.get("user", ""):
        raise Refused("bad-option", "a Basic-auth user name cannot contain ':'")
    try:
        if params.get("proxy"):
            parse_proxy(params["proxy"])
        check_proxy_env(params.get("proxy_env"))
    except ValueError as exc:
        raise Refused("bad-proxy", str(exc)) from None
    keys = ("user", "passwd", "proxy", "proxy_env")
    return json.dumps({k: params.get(k) for k in keys}).encode()


def add_client(sw: Switch, params: Params) -> Later:
    """addPort client: start the worker, answer once its first connection is decided.

    Without ``retry``, a first connection that fails removes the port again and the
    request is refused with the worker's reason (authentication, certificate, ...).
    """
    url = params["target"]
    if len(url) > MAX_URL:
        raise Refused("bad-url", f"the URL is longer than {MAX_URL} characters")
    try:
        target = Target.parse(url)
    except ValueError as exc:  # its message never repeats the URL (it may hold a password)
        raise Refused("bad-url", str(exc)) from None
    other = sw.ports.find_target(url)
    if other is not None:
        raise Refused("duplicate", f"{url} is already port {other.number}")
    options = _client_options(params, target)
    secrets = _client_secrets(params)
    try:
        port = sw.ports.add(PortKind.CLIENT, url, time.monotonic(), options=options,
                             secrets=secrets)
    except (OSError, LookupError) as exc:
        raise Refused("add-failed", f"cannot add {url}: {exc}") from None
    return Later(_first_answer(sw, port, bool(params.get("retry")),
                               time.monotonic() + FIRST_ANSWER_S))


def _first_answer(sw: Switch, port: Port, retry: bool,
                  deadline: float) -> Callable[[], Mapping[str, Any] | None]:
    def poll() -> Mapping[str, Any] | None:
        now = time.monotonic()
        if sw.ports.ports.get(port.number) is not port:
            raise Refused("gone", f"port {port.number} was deleted before it connected")
        link = sw.ports.link(port) or {}
        first, life = link.get("first"), port.child.life
        settled = first is not None or life.state in (State.FATAL, State.STOPPED)
        if first == "ok" or (retry and (settled or now >= deadline)):
            return {"entries": [port_entry(sw, port, now)]}
        if not settled and now < deadline:
            return None
        why = link.get("error") or life.reason or f"no connection within {FIRST_ANSWER_S:g}s"
        sw.ports.remove(port)
        raise Refused("connect-failed", f"cannot connect to {port.target}: {why}")
    return poll


def _try_attach(name: str) -> None:
    """Refuse an existing TUN/TAP the worker could never attach (a TUN device, flags
    that differ, a TAP another process holds) now, not after a crash loop."""
    try:
        os.close(tuntap.attach_tap(name))
    except OSError as exc:
        raise Refused("tap-busy", f"cannot attach to {name}: {exc}") from None


def set_port(sw: Switch, params: Params) -> dict[str, Any]:
    """setPort: shut or open a port."""
    port = _port(sw, params)
    sw.ports.set_shut(port, params["shut"])
    return {"entries": [{"port": port.number, "shut": port.shut}]}


def del_port(sw: Switch, params: Params) -> dict[str, Any]:
    """delPort: stop the worker, forget its addresses, delete its TAP if we made it."""
    port = _port(sw, params)
    # Releasing the slot bumps the port table's generation; the broker then forgets the
    # port's addresses itself (and so does a restarted broker), while listfdb hides them
    # at once because their port is gone.
    sw.ports.remove(port)
    return {"entries": [{"port": port.number}]}


def restart_port(sw: Switch, params: Params) -> dict[str, Any]:
    """restartPort: clear FATAL (or just bounce a worker)."""
    port = _port(sw, params)
    if port.kind is PortKind.SERVER:
        raise Refused("not-restartable", f"port {port.number} is an accepted peer: its "
                      "connection cannot be restarted (delport ends it; the peer reconnects)")
    sw.ports.restart(port, time.monotonic())
    return {"entries": [port_entry(sw, port, time.monotonic())]}


def list_port(sw: Switch, params: Params) -> dict[str, Any]:
    """listPort: the per-port process monitor."""
    now = time.monotonic()
    return {"entries": [port_entry(sw, p, now) for p in sw.ports.ports.values()]}


def set_interface(sw: Switch, params: Params) -> dict[str, Any]:
    """setInterface: address and/or MTU of a TAP or netdev port's interface."""
    port = _port(sw, params)
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
    return list_interface(sw, {"port": port.number})


def list_interface(sw: Switch, params: Params) -> dict[str, Any]:
    """listInterface: addresses and MTU of every interface port."""
    entries = []
    for port in sw.ports.ports.values():
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


def list_fdb(sw: Switch, params: Params) -> dict[str, Any]:
    """listFdb: learned addresses with their port and age in seconds."""
    now_ns = time.monotonic_ns()
    ageout_ns = sw.ageout_s * 1e9
    entries = []
    for _, key, port, seen_ns in sw.fdb.entries():
        age_ns = max(0, now_ns - seen_ns)
        if age_ns >= ageout_ns or port not in sw.ports.ports:
            continue  # expired or of a deleted port: the broker drops it within a second
        vid, mac = split_key(key)
        entries.append({"vid": vid, "mac": mac_to_text(mac), "port": port,
                        "age": int(age_ns // 1_000_000_000)})
    entries.sort(key=lambda e: (e["vid"], e["mac"]))
    return {"entries": entries}


def flush_fdb(sw: Switch, params: Params) -> Later:
    """flushFdb: forget learned addresses (of one port, or all).

    The broker does the flush; the reply waits for it (deferred, so the supervisor
    keeps serving meanwhile) and is refused when the broker does not answer in time."""
    number = params.get("port", 0)
    if number:
        _port(sw, params)
    ticket = sw.table.request_flush(number)
    deadline = time.monotonic() + FLUSH_TIMEOUT_S

    def poll() -> Mapping[str, Any] | None:
        if sw.table.flush_done(ticket):
            return {"entries": []}
        if time.monotonic() > deadline:
            raise Refused("broker-down", "the broker did not answer in time; "
                                         "it flushes when it is back")
        return None
    return Later(poll)


def get_status(sw: Switch, params: Params) -> dict[str, Any]:
    """getStatus: the supervisor, the broker and the FDB at a glance."""
    broker = sw.ports.broker
    w = sw.fdb.words
    return {"entries": [{
        "pid": os.getpid(), "rundir": sw.rundir,
        "uptime": time.monotonic() - sw.started, "ports": len(sw.ports.ports),
        "broker": {"state": broker.life.state.value, "pid": broker.pid,
                   "restarts": broker.life.restarts, "reason": broker.life.reason},
        "fdb": {"entries": w[F_IN_USE], "capacity": sw.fdb.capacity,
                "refused_full": w[F_REFUSED_FULL], "refused_port": w[F_REFUSED_PORT]},
    }]}


def shutdown(sw: Switch, params: Params) -> dict[str, Any]:
    """shutdown: reply, then stop everything in order."""
    sw.stop()
    return {"entries": [{"pid": os.getpid()}]}


HANDLERS: dict[str, Callable[[Switch, Params], Mapping[str, Any] | Later]] = {
    "addPort": add_port, "setPort": set_port, "delPort": del_port,
    "restartPort": restart_port, "listPort": list_port,
    "setInterface": set_interface, "listInterface": list_interface,
    "listFdb": list_fdb, "flushFdb": flush_fdb,
    "getStatus": get_status, "shutdown": shutdown,
}
"""Every method of ``control.COMMANDS`` and what does it (a test checks they agree)."""


def table(sw: Switch) -> dict[str, Handler]:
    """The method table for control.dispatch, bound to one switch."""
    def bind(fn: Callable[[Switch, Params], Mapping[str, Any] | Later]) -> Handler:
        return lambda params: fn(sw, params)
    return {method: bind(fn) for method, fn in HANDLERS.items()}

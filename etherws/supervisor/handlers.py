"""The control methods: what each JSON-RPC request does to the switch (I/O shell).

Each handler takes validated params (``control.METHODS``) and returns a result
``{"entries": [...]}``, or raises ``control.Refused`` with a reason slug and one line
for the user. Refusals change nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

from etherws import token
from etherws.config import DEFAULT_MOVE_HOLD_S, FDB_PER_PORT
from etherws.control import BY_METHOD, Handler, Later, Refused, loggable
from etherws.frame import mac_to_text
from etherws.ifaddr import AddressError, check_mtu, parse_address, valid_ifname
from etherws.portconfig import NAME_RULE, PortSpec, valid_port_name
from etherws.portrules import KEYS as RULE_KEYS
from etherws.portrules import RulesError
from etherws import probe
from etherws.runtime import tokenkey
from etherws.supervisor import netif, offloads, portops, probing
from etherws.supervisor.children import Child
from etherws.supervisor.declared import Declared
from etherws.supervisor.policy import State
from etherws.supervisor.portops import PortError
from etherws.supervisor.ports import TUNNELS, Port, PortManager
from etherws.tables import (
    FdbTable,
    PortKind,
    PortTable,
    aged,
    split_key,
)
from etherws.wsurl import Secrets, Target, UrlError, env_proxy, split_proxy

log = logging.getLogger(__name__)

Params = dict[str, Any]
FLUSH_TIMEOUT_S = 2.0
FIRST_ANSWER_S = 40.0
"""Longest wait for a client port's first connection before addport answers; above the
worker's own limit for one attempt (``client.ATTEMPT_LIMIT_S``), so the worker decides."""
MAX_URL = 2048
DEFAULT_TOKEN_TTL_S = 3600.0
MIN_TOKEN_TTL_S, MAX_TOKEN_TTL_S = 1.0, 30 * 86400.0
DEFAULT_TOKEN_MACS = 4
"""A browser VM has one NIC; the rest is room for one that changes its MAC (a new
address counts against the quota until the old one ages out)."""


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
    declared: Declared = field(default_factory=lambda: Declared(None))
    """The configuration file and its ports (save, reload, unsaved)."""
    source: str = "local"
    """Where the request being served came from: "local", or "remote NAME" over CURVE
    (NAME: the client's key file in --ctl-clients, ``admin`` for ``admin.key``)."""
    reloading: Callable[[], None] = lambda: None
    reloaded: Callable[[], None] = lambda: None
    """Around a reload: the service manager is told (RELOADING=1, then READY=1)."""
    isolate: bool = False
    """Accepted peers cannot reach each other (``--isolate``)."""
    move_hold_s: float = DEFAULT_MOVE_HOLD_S
    """MAC move protection's hold-down (``--move-hold``)."""
    offload: bool = True
    loop_guard: bool = True
    """Loop probes are sent and looped ports blocked (not ``--no-loop-guard``)."""
    """TAP and netdev ports take super-frames, the server accepts etherws.gso.1 (not
    ``--no-offload``)."""
    token_key: str | None = None
    """The file of the secret key of peer tokens (None: no WebSocket server, no tokens);
    read at every mint, as every peer worker reads it: replacing it revokes every token."""


def _port(sw: Switch, params: Params) -> Port:
    ref = params["port"]
    port = sw.ports.find(ref)
    if port is None:
        raise Refused("no-such-port", f"no port {ref}" if isinstance(ref, int) else
                      f"no port named {ref}")
    return port


def port_entry(sw: Switch, port: Port, now: float) -> dict[str, Any]:
    """A listPort entry.

    While a tunnel port's worker runs, its state is the link's (connecting, up, backoff,
    failed) with the link's next retry and last error: that is what the operator asks
    about; the process's own state shows when it is not running. A port the loop guard
    blocks is ``loop`` while its worker is up.
    """
    child, life = port.child, port.child.life
    cpu, rss = child.stats()
    slot = sw.table.read(port.slot)
    state, reason = life.state.value, life.shown_reason(now)
    next_retry = max(0.0, life.next_start_at - now) if life.next_start_at is not None else None
    link = sw.ports.link(port)
    if link is not None and life.state in (State.STARTING, State.UP):
        state = str(link["state"])
        reason = str(link["error"] or "") if state != "up" else reason
        at_ns = link.get("next_retry_ns")
        next_retry = max(0.0, (at_ns - time.monotonic_ns()) / 1e9) \
            if isinstance(at_ns, int) and state == "backoff" else None
    looped = bool(slot.loop_since_ns)
    if looped and state == "up":
        state, reason = "loop", "blocked by the loop guard: a loop closes through it"
    return {
        "port": port.number, "name": port.name, "type": port.kind.label,
        "target": port.target, "unsaved": sw.declared.unsaved(port),
        "state": state, "shut": port.shut, "pid": child.pid,
        "restarts": life.restarts, "uptime": child.uptime(now), "cpu": cpu, "rss": rss,
        "rx": slot.rx, "tx": slot.tx, "rx_bytes": slot.rx_bytes, "tx_bytes": slot.tx_bytes,
        "drops": slot.drops, "errors": slot.errors, "reason": reason,
        **portops.rules(sw.ports, port).entry(port.kind in TUNNELS),
        "vlan_drops": slot.vlan_drops, "storm_drops": slot.storm_drops,
        "rate_drops": slot.rate_drops,
        "loop": looped, "loop_blocks": slot.loop_blocks, "loop_drops": slot.loop_drops,
        "last_reason": life.reason,
        "last_reason_age": None if life.reason_at is None else now - life.reason_at,
        "next_retry": next_retry,
        "link": None if link is None else link["state"],
        "offload": _offload(sw, port, link if state == "up" else None),
        **_token_claims(sw, port),
    }


def _token_claims(sw: Switch, port: Port) -> dict[str, Any]:
    """What an accepted peer's token binds it to: ``token_vlan`` (an access port of it,
    unless setport gave the port VLANs) and ``max_macs``; None for none."""
    if port.kind is not PortKind.SERVER:
        return {"token_vlan": None, "max_macs": None}
    vlan, max_macs = sw.table.token(port.slot)
    return {"token_vlan": vlan or None, "max_macs": max_macs or None}


def _offload(sw: Switch, port: Port, link: dict[str, Any] | None) -> bool | None:
    """The port takes super-frames: a TAP or netdev port unless --no-offload, a tunnel
    whose link is up and negotiated them; None when not known (a tunnel that is not up)."""
    if port.kind in (PortKind.TAP, PortKind.NETDEV):
        return sw.offload
    if port.kind in TUNNELS:
        return None if link is None else bool(link.get("offload"))
    return None


CLIENT_ONLY = ("user", "passwd", "cacerts", "insecure", "proxy", "proxy_env", "retry",
               "no_offload")


def add_port(sw: Switch, params: Params) -> dict[str, Any] | Later:
    """addPort: a TAP (created or attached), an existing interface (netdev) or an
    outgoing WebSocket (client)."""
    kind = params["type"]
    if kind not in portops.KINDS:
        raise Refused("bad-type", f"unknown port type {kind!r} "
                                  f"(one of: {', '.join(portops.KINDS)})")
    target = params["target"]
    name = params.get("name")
    if name is not None and not valid_port_name(name):
        raise Refused("bad-name", f"{name!r} is not a port name: {NAME_RULE}")
    if kind == "client":
        return add_client(sw, params)
    extra = [k for k in CLIENT_ONLY if k in params]
    if extra:
        raise Refused("bad-option", f"{extra[0]!r} is an option of client ports")
    if not valid_ifname(target):
        raise Refused("bad-name", f"{target!r} is not a valid interface name")
    bridge = params.get("bridge")
    if bridge is not None and (kind != "tap" or not valid_ifname(bridge)):
        raise Refused("bad-option", "--bridge takes a bridge's name, for tap ports")
    spec = PortSpec(kind, target, name=name, bridge=bridge)
    try:
        port = portops.create(sw.ports, spec, Secrets(), retry=False)
    except PortError as exc:
        raise Refused(exc.reason, str(exc)) from None
    return {"entries": [port_entry(sw, port, time.monotonic())]}


def add_client(sw: Switch, params: Params) -> Later:
    """addPort client: start the worker, answer once its first connection is decided.

    Without ``retry``, a first connection that fails removes the port again (its
    number is given out again) and the request is refused with the worker's reason
    (authentication, certificate, ...).
    """
    url = params["target"]
    if len(url) > MAX_URL:
        raise Refused("bad-url", f"the URL is longer than {MAX_URL} characters")
    if "bridge" in params:
        raise Refused("bad-option", "--bridge is an option of tap ports")
    proxy = params.get("proxy")
    if not proxy and isinstance(params.get("proxy_env"), dict):
        # the proxy etherws-ctl's environment chose, made explicit: save writes it
        with contextlib.suppress(UrlError):  # a bad URL: refused below, by Target
            proxy = env_proxy(Target.parse(url), params["proxy_env"])
    spec = PortSpec("client", url, name=params.get("name"), user=params.get("user"),
                    cacerts=params.get("cacerts"), insecure=bool(params.get("insecure")),
                    no_offload=bool(params.get("no_offload")),
                    proxy=split_proxy(proxy)[0] if proxy else None)
    secrets = Secrets(user=params.get("user"), passwd=params.get("passwd"),
                      proxy=proxy, proxy_env=params.get("proxy_env"))
    try:
        port = portops.create(sw.ports, spec, secrets, retry=bool(params.get("retry")))
    except PortError as exc:
        raise Refused(exc.reason, str(exc)) from None
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
        sw.ports.remove(port, unnumber=True)
        raise Refused("connect-failed", f"cannot connect to {port.target}: {why}")
    return poll


def set_port(sw: Switch, params: Params) -> dict[str, Any]:
    """setPort: shut or open a port; its VLAN setting, storm control and rate limit
    (``etherws.portrules``). The entry holds the port, its shut flag and what was set."""
    port = _port(sw, params)
    given = [k for k in RULE_KEYS if k in params]
    if "shut" not in params and not given:
        raise Refused("nothing-to-set", "give --shut, --vlan, --trunk, --native, --storm "
                                        "or --rate")
    if given:
        try:
            new = portops.rules(sw.ports, port).changed(params)
        except RulesError as exc:
            raise Refused("bad-value", str(exc)) from None
    if "shut" in params:
        sw.ports.set_shut(port, params["shut"])
    entry: dict[str, Any] = {"port": port.number, "shut": port.shut}
    if given:
        portops.set_rules(sw.ports, port, new)
        fields = new.entry(port.kind in TUNNELS)
        entry.update({k: fields[k] for k in RULE_KEYS})
    return {"entries": [entry]}


def del_port(sw: Switch, params: Params) -> dict[str, Any]:
    """delPort: stop the worker, forget its addresses, delete its TAP if we made it."""
    port = _port(sw, params)
    # Releasing the slot bumps the port table's generation; the broker then forgets the
    # port's addresses itself (and so does a restarted broker), while listfdb hides them
    # at once because their port is gone.
    sw.ports.remove(port)
    if port.kind is PortKind.NETDEV:
        offloads.restore(port.target)
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
    if port.spec is not None:  # what save writes: the address replaces its family's
        spec = port.spec
        if addr is not None:
            kept = tuple(a for a in spec.address if parse_address(a).family != addr.family)
            spec = replace(spec, address=kept + (addr.cidr,))
        port.spec = replace(spec, mtu=mtu if mtu is not None else spec.mtu)
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
    now = time.monotonic_ns() / 1e9
    entries = []
    for _, key, port, seen_ns in sw.fdb.entries():
        seen = seen_ns / 1e9
        if aged(now, seen, sw.ageout_s) or port not in sw.ports.ports:
            continue  # expired or of a deleted port: the broker drops it within a second
        vid, mac = split_key(key)
        entries.append({"vid": vid, "mac": mac_to_text(mac), "port": port,
                        "age": int(max(0.0, now - seen))})
    entries.sort(key=lambda e: (e["vid"], e["mac"]))
    return {"entries": entries}


def flush_fdb(sw: Switch, params: Params) -> Later:
    """flushFdb: forget learned addresses (of one port, or all).

    The broker does the flush; the reply waits for it (deferred, so the supervisor
    keeps serving meanwhile) and is refused when the broker does not answer in time."""
    number = _port(sw, params).number if "port" in params else 0
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


def probe_port(sw: Switch, params: Params) -> Later:
    """probePort: the round trip and the largest frame across a tunnel port, measured by
    its worker with probes the far etherws switch answers (``supervisor.probing``)."""
    port = _port(sw, params)
    return probing.start(sw.ports, sw.table, port, params.get("size", probe.DEFAULT_SIZE))


def _process(child: Child) -> dict[str, Any]:
    return {"state": child.life.state.value, "pid": child.pid,
            "restarts": child.life.restarts, "reason": child.life.reason}


def get_status(sw: Switch, params: Params) -> dict[str, Any]:
    """getStatus: the supervisor, the broker and the FDB at a glance."""
    broker, listener, zygote = sw.ports.broker, sw.ports.listener, sw.ports.zygote
    return {"entries": [{
        "pid": os.getpid(), "rundir": sw.rundir,
        "uptime": time.monotonic() - sw.started, "ports": len(sw.ports.ports),
        "broker": _process(broker),
        "listener": None if listener is None else _process(listener),
        "zygote": None if zygote is None else {**_process(zygote), "forked": zygote.forked,
                                               "spawned": zygote.spawned},
        "gone_peers": dataclasses.asdict(sw.ports.gone_peers),
        "isolate": sw.isolate, "move_hold": sw.move_hold_s, "offload": sw.offload,
        "loop_guard": sw.loop_guard, "switch_id": f"{sw.table.switch_id():016x}",
        "loop_blocked": sorted(p.number for p in sw.ports.ports.values()
                               if sw.table.read(p.slot).loop_since_ns),
        "fdb": {"entries": sw.fdb.in_use, "capacity": sw.fdb.capacity,
                "refused_full": sw.fdb.refused_full, "refused_port": sw.fdb.refused_port,
                "held_moves": sw.fdb.held_moves},
    }]}


def mint_token(sw: Switch, params: Params) -> dict[str, Any]:
    """mintToken: a peer token signed with the switch's key. The reply holds a secret:
    nothing here logs it."""
    if sw.token_key is None:
        raise Refused("no-server", "no WebSocket server runs (--no-server): no peer "
                                   "could use a token")
    ttl = float(params.get("ttl", DEFAULT_TOKEN_TTL_S))
    if not MIN_TOKEN_TTL_S <= ttl <= MAX_TOKEN_TTL_S:
        raise Refused("bad-value", f"--ttl must be between {MIN_TOKEN_TTL_S:.0f} and "
                                   f"{MAX_TOKEN_TTL_S:.0f} s ({MAX_TOKEN_TTL_S / 86400:g} "
                                   "days)")
    vlan = params.get("vlan", 0)
    if "vlan" in params and not 1 <= vlan <= token.MAX_VLAN:
        raise Refused("bad-value", f"--vlan must be between 1 and {token.MAX_VLAN}")
    max_macs = params.get("max_macs", DEFAULT_TOKEN_MACS)
    if not 1 <= max_macs <= FDB_PER_PORT:
        raise Refused("bad-value", f"--max-macs must be between 1 and {FDB_PER_PORT}")
    try:
        key = tokenkey.read(sw.token_key)
    except tokenkey.TokenKeyError as exc:
        raise Refused("bad-key", str(exc)) from None
    text = token.mint(key, time.time(), ttl, vlan, max_macs, os.urandom(token.NONCE_BYTES))
    claims = token.verify(key, text, time.time())
    return {"entries": [{"token": text, "id": claims.id, "expires": claims.expires,
                         "ttl": ttl, "vlan": vlan or None, "max_macs": max_macs}]}


def save_config(sw: Switch, params: Params) -> dict[str, Any]:
    """saveConfig: write the running ports into the configuration file."""
    try:
        path, count = sw.declared.save(sw.ports)
    except PortError as exc:
        raise Refused(exc.reason, str(exc)) from None
    return {"entries": [{"path": path, "ports": count}]}


def reload_config(sw: Switch, params: Params) -> dict[str, Any]:
    """reloadConfig: apply the configuration file's ports; one entry per change."""
    sw.reloading()
    try:
        lines = sw.declared.reload(sw.ports)
    except PortError as exc:
        raise Refused(exc.reason, str(exc)) from None
    finally:
        sw.reloaded()
    return {"entries": [{"change": line} for line in lines]}


def shutdown(sw: Switch, params: Params) -> dict[str, Any]:
    """shutdown: reply, then stop everything in order."""
    sw.stop()
    return {"entries": [{"pid": os.getpid()}]}


HANDLERS: dict[str, Callable[[Switch, Params], Mapping[str, Any] | Later]] = {
    "addPort": add_port, "setPort": set_port, "delPort": del_port,
    "restartPort": restart_port, "listPort": list_port,
    "setInterface": set_interface, "listInterface": list_interface,
    "listFdb": list_fdb, "flushFdb": flush_fdb,
    "getStatus": get_status, "probePort": probe_port, "saveConfig": save_config,
    "reloadConfig": reload_config, "mintToken": mint_token,
    "shutdown": shutdown,
}
"""Every method of ``control.COMMANDS`` and what does it (a test checks they agree)."""


def table(sw: Switch) -> dict[str, Handler]:
    """The method table for control.dispatch, bound to one switch. Every request that
    changes something is logged once, with its parameters (secrets masked) and where it
    came from: an audit trail of who did what."""
    def bind(method: str, fn: Callable[[Switch, Params], Mapping[str, Any] | Later]
             ) -> Handler:
        audited = BY_METHOD[method].changes

        def handle(params: Params) -> Mapping[str, Any] | Later:
            if audited:
                log.info("control (%s): %s %s", sw.source, method, loggable(params))
            return fn(sw, params)
        return handle
    return {method: bind(method, fn) for method, fn in HANDLERS.items()}

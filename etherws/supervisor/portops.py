"""Creating a port from its description and applying its settings (I/O).

One path for every way a port comes to be: ``addport``, the ports declared in the
configuration file at start, and ``reload``. Each takes a ``PortSpec`` (and, for a client,
its secrets) and either leaves a running port or raises PortError having changed nothing.
"""

from __future__ import annotations

import json
import os
import ssl
import time
from dataclasses import replace

from etherws.errors import EtherwsError
from etherws.ifaddr import AddressError, parse_address
from etherws.portconfig import PortSpec
from etherws.portrules import Rules
from etherws.runtime import tuntap
from etherws.runtime.configfile import ConfigFileError, read_secret
from etherws.supervisor import netif, offloads
from etherws.supervisor.ports import Port, PortManager
from etherws.tables import PortKind
from etherws.wsurl import (
    Secrets,
    Target,
    UrlError,
    check_proxy_env,
    parse_proxy,
    proxy_with_auth,
)

KINDS = {"tap": PortKind.TAP, "netdev": PortKind.NETDEV, "client": PortKind.CLIENT}


class PortError(EtherwsError):
    """A port that cannot be created or changed: a reason slug and one line."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def file_secrets(spec: PortSpec) -> Secrets:
    """A declared client's secrets, read from the files the configuration names."""
    try:
        passwd = read_secret(spec.passwd_file, "password file") if spec.passwd_file else None
        proxy = spec.proxy
        if spec.proxy_auth_file and proxy:
            proxy = proxy_with_auth(proxy, read_secret(spec.proxy_auth_file,
                                                       "proxy-auth file"))
    except ConfigFileError as exc:
        raise PortError("bad-secret", str(exc)) from None
    except UrlError:
        raise PortError("bad-secret", f"the proxy-auth file {spec.proxy_auth_file} must "
                                      "hold user:password") from None
    return Secrets(user=spec.user, passwd=passwd, proxy=proxy)


def _client_options(spec: PortSpec, retry: bool) -> tuple[str, ...]:
    """The client worker's command line options; PortError for ones that cannot work."""
    try:
        target = Target.parse(spec.target)
    except UrlError as exc:  # its message never repeats the URL (it may hold a password)
        raise PortError("bad-url", str(exc)) from None
    options: list[str] = []
    if (spec.cacerts or spec.insecure) and not target.secure:
        raise PortError("bad-option", "--cacerts and --insecure are for wss:// URLs")
    if spec.cacerts and spec.insecure:
        raise PortError("bad-option", "choose --cacerts or --insecure, not both")
    if spec.cacerts:
        if not os.path.isabs(spec.cacerts):
            raise PortError("bad-option", f"--cacerts {spec.cacerts}: give an absolute path")
        try:  # a CA file the worker could never load is an error now, not a crash loop
            ssl.create_default_context(cafile=spec.cacerts)
        except (OSError, ssl.SSLError) as exc:
            why = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
            raise PortError("bad-cacerts", f"cannot use --cacerts {spec.cacerts}: {why}"
                            ) from None
        options += ["--cacerts", spec.cacerts]
    if spec.insecure:
        options.append("--insecure")
    if spec.no_offload:
        options.append("--no-offload")
    if retry:
        options.append("--retry")
    return tuple(options)


def _check_secrets(secrets: Secrets) -> bytes:
    """What the client worker reads on its stdin; PortError (naming no secret)."""
    if secrets.passwd is not None and secrets.user is None:
        raise PortError("bad-option", "--passwd goes with --user")
    if ":" in (secrets.user or ""):
        raise PortError("bad-option", "a Basic-auth user name cannot contain ':'")
    try:
        if secrets.proxy:
            parse_proxy(secrets.proxy)
        check_proxy_env(secrets.proxy_env)
    except UrlError as exc:
        raise PortError("bad-proxy", str(exc)) from None
    return json.dumps({"user": secrets.user, "passwd": secrets.passwd,
                       "proxy": secrets.proxy, "proxy_env": secrets.proxy_env}).encode()


def _check_unique(ports: PortManager, spec: PortSpec) -> None:
    other = ports.find_target(spec.target)
    if other is not None:
        shown = spec.target if spec.kind != "client" else "this URL"
        raise PortError("duplicate", f"{shown} is already port {other.number}")
    if spec.name is not None:
        named = ports.find(spec.name)
        if named is not None:
            raise PortError("duplicate-name", f"the name {spec.name} is port "
                                              f"{named.number}'s")
    if spec.number is not None and spec.number in ports.ports:
        raise PortError("duplicate", f"port number {spec.number} is taken")


def _open_interface(spec: PortSpec) -> bool:
    """Check (or create) a TAP or netdev port's interface; True when we created it."""
    name = spec.target
    if spec.kind == "netdev":
        if not netif.exists(name):
            raise PortError("no-such-interface", f"no interface named {name}")
        if name == "lo":
            raise PortError("bad-name", "the loopback interface cannot be a switch port")
        return False
    if netif.exists(name):
        if not netif.is_tap(name):
            raise PortError("not-a-tap", f"interface {name} exists and is not a TAP device")
        try:  # an existing TAP the worker could never attach: now, not after a crash loop
            os.close(tuntap.attach_tap(name))
        except OSError as exc:
            raise PortError("tap-busy", f"cannot attach to {name}: {exc}") from None
        return False
    try:
        tuntap.create_persistent_tap(name)
    except OSError as exc:
        raise PortError("tap-failed", f"cannot create TAP {name}: {exc}") from None
    return True


def create(ports: PortManager, spec: PortSpec, secrets: Secrets, retry: bool,
           declared: bool = False) -> Port:
    """Start a port as ``spec`` describes it (``spec.number``: that number, else the
    next); its interface gets the spec's settings first. PortError changes nothing."""
    _check_unique(ports, spec)
    kind = KINDS[spec.kind]
    now = time.monotonic()
    if kind is PortKind.CLIENT:
        options = _client_options(spec, retry)
        stdin = _check_secrets(secrets)
        try:
            port = ports.add(kind, spec.target, now, options=options, secrets=stdin,
                             number=spec.number)
        except (OSError, LookupError) as exc:
            raise PortError("add-failed", f"cannot add port: {exc}") from None
    else:
        created = _open_interface(spec)
        try:
            netif.set_up(spec.target)
            apply_interface(spec.target, spec, None)
            port = ports.add(kind, spec.target, now, created_tap=created, number=spec.number)
        except (OSError, LookupError, PortError) as exc:
            if created:
                tuntap.delete_persistent_tap(spec.target)
            if isinstance(exc, PortError):
                raise
            raise PortError("add-failed", f"cannot add {spec.target}: {exc}") from None
    if kind is PortKind.NETDEV and not ports.offload:  # else the header carries them
        offloads.turn_off(spec.target, port.number)
    port.spec = replace(spec, number=port.number)
    port.secrets = secrets
    port.declared = declared
    if spec.shut:
        ports.set_shut(port, True)
    if spec.rules != Rules():
        set_rules(ports, port, spec.rules)
    return port


def rules(ports: PortManager, port: Port) -> Rules:
    """A port's rules as the broker applies them (an accepted peer has no spec)."""
    return Rules.from_table(ports.table.rules(port.slot))


def set_rules(ports: PortManager, port: Port, new: Rules) -> None:
    """Give a port new VLAN, storm and rate rules: the broker applies them once it sees
    the port table's generation move (at once, unless it is busy or down)."""
    ports.table.set_rules(port.slot, new.table())
    if port.spec is not None:
        port.spec = replace(port.spec, rules=new)


def apply_interface(name: str, new: PortSpec, old: PortSpec | None) -> None:
    """Addresses, MTU and bridge of ``new`` on the interface (what ``old`` had and
    ``new`` leaves out is left as it is; a bridge ``new`` drops is left)."""
    try:
        addrs = [parse_address(a) for a in new.address]
    except AddressError as exc:
        raise PortError("bad-value", str(exc)) from None
    try:
        if addrs and (old is None or old.address != new.address):
            netif.set_addresses(name, addrs)
        if new.mtu is not None and (old is None or old.mtu != new.mtu):
            netif.set_mtu(name, new.mtu)
        if new.bridge != (old.bridge if old is not None else None):
            netif.set_master(name, new.bridge)
    except OSError as exc:
        raise PortError("netlink", str(exc)) from None


def change(ports: PortManager, port: Port, new: PortSpec) -> None:
    """Apply ``new``'s settings (name, addresses, MTU, bridge, shut, rules) to a running
    port."""
    old = port.spec
    assert old is not None
    if new.name is not None and new.name != old.name:
        named = ports.find(new.name)
        if named is not None and named is not port:
            raise PortError("duplicate-name", f"the name {new.name} is port "
                                              f"{named.number}'s")
    if port.kind in (PortKind.TAP, PortKind.NETDEV):
        apply_interface(port.target, new, old)
    if new.shut != port.shut:
        ports.set_shut(port, new.shut)
    if new.rules != rules(ports, port):
        set_rules(ports, port, new.rules)
    port.spec = replace(new, number=port.number)

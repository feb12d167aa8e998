"""Ports declared in the configuration file, and what a reload changes (pure).

The file's ``[[ports]]`` tables use the option names of ``addport``, ``setport`` and
``setif``::

    [[ports]]
    tap = "ethws0"                 # exactly one of tap, netdev, client
    name = "lan"                   # optional label, unique; default: none (the target)
    number = 3                     # optional; default: declaration order
    address = ["198.51.100.1/24", "2001:db8::1/64"]   # or one string
    mtu = 1500
    bridge = "br0"                 # a TAP joins this bridge
    shut = false
    vlan = 10                      # or trunk = "10,20" (and native = 1); storm, rate:
                                   # see etherws.portrules

    [[ports]]
    client = "wss://hostB.example/"
    user = "alice"
    passwd-file = "alice.pass"     # secrets by reference, never inline
    cacerts = "hostB.pem"          # relative paths: relative to the file's directory
    insecure = false
    proxy = "http://proxy.example:3128"
    proxy-auth-file = "proxy.pass" # one line, user:password
    no-offload = false             # true: never offer super-frames (etherws.gso.1)

A port's *identity* (kind, target and, for a client, everything its worker is started
with) decides whether a reload may change it in place; its *settings* (name, addresses,
MTU, bridge, shut, VLAN, storm and rate) are applied to the running port. Ports are matched
by number.
"""

from __future__ import annotations

import posixpath
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from etherws.errors import EtherwsError
from etherws.ifaddr import AddressError, check_mtu, parse_address, valid_ifname
from etherws.portrules import KEYS as RULE_KEYS
from etherws.portrules import Rules, RulesError, from_keys
from etherws.wsurl import Target, UrlError, parse_proxy

KINDS = ("tap", "netdev", "client")
MAX_PORT_NUMBER = 1_000_000
_INTERFACE_KEYS = ("address", "mtu", "bridge")
_CLIENT_KEYS = ("user", "passwd-file", "cacerts", "insecure", "proxy", "proxy-auth-file",
                "no-offload")
_PATH_KEYS = ("passwd-file", "cacerts", "proxy-auth-file")
_TYPES: dict[str, type] = {
    "tap": str, "netdev": str, "client": str, "name": str, "number": int, "mtu": int,
    "bridge": str, "shut": bool, "user": str, "passwd-file": str, "cacerts": str,
    "insecure": bool, "proxy": str, "proxy-auth-file": str, "no-offload": bool,
}
_SECRET_KEYS = {"passwd": "passwd-file", "password": "passwd-file"}


class PortConfigError(EtherwsError):
    """A ``[[ports]]`` table that cannot be used; the message names the port and key."""


@dataclass(frozen=True)
class PortSpec:
    """One declared port (or a running port as it would be saved)."""

    kind: str
    target: str
    name: str | None = None
    number: int | None = None
    address: tuple[str, ...] = ()
    mtu: int | None = None
    bridge: str | None = None
    shut: bool = False
    user: str | None = None
    passwd_file: str | None = None
    cacerts: str | None = None
    insecure: bool = False
    proxy: str | None = None
    proxy_auth_file: str | None = None
    no_offload: bool = False
    rules: Rules = field(default_factory=Rules)

    @property
    def label(self) -> str:
        """How errors and listings name the port: its name, else its target."""
        return self.name or self.target

    def identity(self) -> tuple[Any, ...]:
        """What the port's worker is started with: a change means a new port."""
        return (self.kind, self.target, self.user, self.passwd_file, self.cacerts,
                self.insecure, self.proxy, self.proxy_auth_file, self.no_offload)

    def settings(self) -> tuple[Any, ...]:
        """What is applied to a running port in place."""
        return (self.name, self.address, self.mtu, self.bridge, self.shut, self.rules)

    def to_table(self) -> dict[str, Any]:
        """The ``[[ports]]`` table of this port (defaults left out), in a stable order."""
        out: dict[str, Any] = {self.kind: self.target}
        if self.name is not None:
            out["name"] = self.name
        if self.number is not None:
            out["number"] = self.number
        if self.address:
            out["address"] = list(self.address)
        for key in ("mtu", "bridge"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.shut:
            out["shut"] = True
        out.update(self.rules.keys())
        for key in _CLIENT_KEYS:
            value = getattr(self, key.replace("-", "_"))
            if value is not None and value is not False:
                out[key] = value
        return out


def ports_of(text: str, base_dir: str, source: str) -> list[PortSpec]:
    """The ports a configuration file's text declares (none without ``[[ports]]``)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PortConfigError(f"{source}: {exc}") from None
    return parse_ports(data["ports"], base_dir, source) if "ports" in data else []


def parse_ports(value: Any, base_dir: str, source: str = "configuration file") -> list[PortSpec]:
    """The ``ports`` value of a parsed TOML file: a list of tables, checked, with numbers
    assigned and relative paths resolved against ``base_dir``; PortConfigError."""
    if not isinstance(value, list) or not all(isinstance(t, Mapping) for t in value):
        raise PortConfigError(f"{source}: 'ports' must be [[ports]] tables")
    specs = [parse_table(t, base_dir, f"{source}: port #{i}") for i, t in enumerate(value, 1)]
    return assign_numbers(specs, source)


def _where(where: str, table: Mapping[str, Any]) -> str:
    """Name a port in errors by what the user wrote: its name, else an interface name.
    Never a client URL: it is what a user may have put a password in."""
    label = table.get("name") or table.get("tap") or table.get("netdev")
    return f"{where} ({label})" if isinstance(label, str) else where


def parse_table(table: Mapping[str, Any], base_dir: str, where: str) -> PortSpec:
    """One ``[[ports]]`` table; ``where`` names it in errors (``FILE: port #2``)."""
    where = _where(where, table)
    for key, value in table.items():
        if key in _SECRET_KEYS:
            raise PortConfigError(f"{where}: {key!r}: passwords are never written inline; "
                                  f"give {_SECRET_KEYS[key]!r} (a file holding it)")
        if key == "address" or key in RULE_KEYS:
            continue
        if key not in _TYPES:
            raise PortConfigError(f"{where}: unknown key {key!r}")
        typ = _TYPES[key]
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise PortConfigError(f"{where}: {key!r} must be {_type_name(typ)}")
    kinds = [k for k in KINDS if k in table]
    if len(kinds) != 1:
        raise PortConfigError(f"{where}: give exactly one of {', '.join(KINDS)}")
    kind = kinds[0]
    target = table[kind]
    values: dict[str, Any] = {k.replace("-", "_"): v for k, v in table.items()
                              if k not in KINDS and k not in RULE_KEYS}
    try:
        values["rules"] = from_keys(table)
    except RulesError as exc:
        raise PortConfigError(f"{where}: {exc}") from None
    if kind != "tap" and "bridge" in table:
        raise PortConfigError(f"{where}: 'bridge' is an option of tap ports")
    if kind == "client":
        wrong = [k for k in _INTERFACE_KEYS if k in table]
        if wrong:
            raise PortConfigError(f"{where}: {wrong[0]!r} is not an option of client ports")
        _check_client(target, table, where)
    else:
        wrong = [k for k in _CLIENT_KEYS if k in table]
        if wrong:
            raise PortConfigError(f"{where}: {wrong[0]!r} is an option of client ports")
        if not valid_ifname(target):
            raise PortConfigError(f"{where}: {kind!r}: {target!r} is not an interface name")
    if "bridge" in table and not valid_ifname(table["bridge"]):
        raise PortConfigError(f"{where}: 'bridge': {table['bridge']!r} is not an "
                              "interface name")
    values["address"] = _addresses(table.get("address"), where)
    if "mtu" in table:
        try:
            check_mtu(table["mtu"])
        except AddressError as exc:
            raise PortConfigError(f"{where}: 'mtu': {exc}") from None
    if "number" in table and not 1 <= table["number"] <= MAX_PORT_NUMBER:
        raise PortConfigError(f"{where}: 'number' must be between 1 and {MAX_PORT_NUMBER}")
    if "name" in table:
        _check_name(table["name"], where)
    for key in _PATH_KEYS:
        if key in table:
            values[key.replace("-", "_")] = posixpath.normpath(
                posixpath.join(base_dir, table[key]))
    return PortSpec(kind, target, **values)


def _type_name(typ: type) -> str:
    return {str: "a string", int: "an integer", bool: "true or false"}[typ]


NAME_RULE = "a letter, then letters, digits, '-', '_' or '.' (at most 64)"


def valid_port_name(name: str) -> bool:
    """A port name: unlike a number, and usable on a command line unquoted."""
    return (0 < len(name) <= 64 and name.isascii() and name[0].isalpha()
            and all(c.isalnum() or c in "-_." for c in name))


def _check_name(name: str, where: str) -> None:
    if not valid_port_name(name):
        raise PortConfigError(f"{where}: 'name': {name!r} is not a port name: {NAME_RULE}")


def _check_client(url: str, table: Mapping[str, Any], where: str) -> None:
    try:
        target = Target.parse(url)
        proxy = parse_proxy(table["proxy"]) if "proxy" in table else None
    except UrlError as exc:
        raise PortConfigError(f"{where}: {exc}") from None
    if proxy is not None and (proxy.user is not None or proxy.passwd is not None):
        raise PortConfigError(f"{where}: credentials in the proxy URL: give "
                              "'proxy-auth-file'")
    if (table.get("cacerts") or table.get("insecure")) and not target.secure:
        raise PortConfigError(f"{where}: 'cacerts' and 'insecure' are for wss:// URLs")
    if table.get("cacerts") and table.get("insecure"):
        raise PortConfigError(f"{where}: choose 'cacerts' or 'insecure', not both")
    if "passwd-file" in table and "user" not in table:
        raise PortConfigError(f"{where}: 'passwd-file' goes with 'user'")
    if ":" in table.get("user", ""):
        raise PortConfigError(f"{where}: 'user' cannot contain ':'")


def _addresses(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(a, str) for a in items):
        raise PortConfigError(f"{where}: 'address' must be a string or a list of strings")
    for item in items:
        try:
            parse_address(item)
        except AddressError as exc:
            raise PortConfigError(f"{where}: 'address': {exc}") from None
    return tuple(items)


def assign_numbers(specs: Sequence[PortSpec], source: str = "configuration file") -> list[PortSpec]:
    """Give every port without a ``number`` the lowest free one, in declaration order;
    refuse duplicate numbers, names and targets (a name may not be another's target)."""
    taken: dict[int, PortSpec] = {}
    for spec in specs:
        if spec.number is not None:
            if spec.number in taken:
                raise PortConfigError(f"{source}: port {spec.label}: 'number' {spec.number} "
                                      f"is also port {taken[spec.number].label}'s")
            taken[spec.number] = spec
    out: list[PortSpec] = []
    next_free = 1
    for spec in specs:
        if spec.number is None:
            while next_free in taken:
                next_free += 1
            spec = replace(spec, number=next_free)
            taken[next_free] = spec
        out.append(spec)
    _check_unique(out, source)
    return out


def _check_unique(specs: Iterable[PortSpec], source: str) -> None:
    names: dict[str, PortSpec] = {}
    targets: dict[tuple[str, str], PortSpec] = {}
    for spec in specs:
        key = ("if" if spec.kind != "client" else "url", spec.target)
        if key in targets:
            raise PortConfigError(f"{source}: port {spec.number}: {spec.kind} "
                                  f"{_shown(spec)} is also port {targets[key].number}")
        targets[key] = spec
        if spec.name is not None:
            if spec.name in names:
                raise PortConfigError(f"{source}: port {spec.number}: 'name' {spec.name!r} "
                                      f"is also port {names[spec.name].number}'s")
            names[spec.name] = spec
    for spec in specs:
        other = targets.get(("if", spec.name or ""))
        if spec.name is not None and other is not None and other is not spec:
            raise PortConfigError(f"{source}: port {spec.number}: 'name' {spec.name!r} is "
                                  f"port {other.number}'s interface")


def _shown(spec: PortSpec) -> str:
    return spec.target if spec.kind != "client" else (spec.name or "URL")


@dataclass(frozen=True)
class Change:
    """A running port whose settings differ from the file's."""

    old: PortSpec
    new: PortSpec

    def what(self) -> list[str]:
        """The setting names that change."""
        keys = ("name", "address", "mtu", "bridge", "shut")
        what = [k for k, a, b in zip(keys, self.old.settings(), self.new.settings(),
                                     strict=False) if a != b]
        old, new = self.old.rules.keys(), self.new.rules.keys()
        return what + [k for k in RULE_KEYS if old.get(k) != new.get(k)]


@dataclass(frozen=True)
class Plan:
    """What a reload does: ports to remove, to add, and to change in place."""

    remove: tuple[PortSpec, ...] = ()
    add: tuple[PortSpec, ...] = ()
    change: tuple[Change, ...] = ()
    unchanged: tuple[int, ...] = field(default=())

    def summary(self) -> list[str]:
        """One line per change, for the reload reply and the log."""
        lines = [f"removed port {s.number} ({s.label})" for s in self.remove]
        lines += [f"added port {s.number} ({s.label})" for s in self.add]
        lines += [f"changed port {c.new.number} ({c.new.label}): {', '.join(c.what())}"
                  for c in self.change]
        return lines or ["nothing changed"]


def plan(running: Mapping[int, PortSpec], wanted: Sequence[PortSpec]) -> Plan:
    """Turn the ports ``running`` (by number) into ``wanted`` (numbered specs).

    A port whose identity changed is removed and added again (its worker must start
    with other arguments); one whose settings changed is changed in place.
    """
    want = {s.number: s for s in wanted}
    remove = [s for n, s in sorted(running.items()) if n not in want]
    add: list[PortSpec] = []
    change: list[Change] = []
    unchanged: list[int] = []
    for spec in wanted:
        assert spec.number is not None
        old = running.get(spec.number)
        if old is None:
            add.append(spec)
        elif old.identity() != spec.identity():
            remove.append(old)
            add.append(spec)
        elif old.settings() != spec.settings():
            change.append(Change(old, spec))
        else:
            unchanged.append(spec.number)
    return Plan(tuple(remove), tuple(add), tuple(change), tuple(unchanged))


def saved_tables(existing: Sequence[Mapping[str, Any]], running: Sequence[PortSpec],
                 base_dir: str) -> list[tuple[int | None, dict[str, Any]]]:
    """How ``save`` writes the ``running`` ports over the file's ``existing`` tables.

    Returns the tables in file order, each with the index of the existing table it
    rewrites in place (keeping the user's comments and key order), or None for a new one:
    existing ports keep their place, new ones follow by number. A ``number`` key is
    written only where declaration order would give another number (or the user wrote
    one), and a path the user wrote relative to the file stays as written.
    """
    try:
        old = parse_ports(list(existing), base_dir)
    except PortConfigError:
        old = []  # a file the supervisor did not start from: its ports are rewritten
    wanted = {s.number: s for s in running}
    order: list[tuple[int | None, PortSpec]] = [
        (i, wanted[s.number]) for i, s in enumerate(old) if s.number in wanted]
    kept = {s.number for _, s in order}
    order += [(None, s) for s in sorted(running, key=lambda s: s.number or 0)
              if s.number not in kept]
    explicit = {s.number for i, s in order if i is not None and "number" in existing[i]}
    while True:
        trial = assign_numbers([replace(s, number=s.number if s.number in explicit else None)
                                for _, s in order])
        wrong = {want.number for (_, want), got in zip(order, trial, strict=True)
                 if got.number != want.number}
        if not wrong:
            break
        explicit |= wrong
    out: list[tuple[int | None, dict[str, Any]]] = []
    for i, spec in order:
        table = replace(spec, number=spec.number if spec.number in explicit else None
                        ).to_table()
        if i is not None:
            for key in _PATH_KEYS:
                written = existing[i].get(key)
                if isinstance(written, str) and key in table and table[key] == \
                        posixpath.normpath(posixpath.join(base_dir, written)):
                    table[key] = written
        out.append((i, table))
    return out

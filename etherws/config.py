"""Supervisor configuration: command-line values and an optional TOML file (pure).

The TOML file uses the long option names (``ageout = 300``, ``fdb-size = 8192``,
``logfile = "/var/log/etherws.log"``); the command line wins over the file. Unknown
keys and values of the wrong type are errors: a typo must not silently mean "default".
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from typing import Any, Mapping

from etherws.paths import DEFAULT_RUNDIR, RunDir

MIN_FDB, MAX_FDB = 16, 1_000_000
MIN_AGEOUT_S, MAX_AGEOUT_S = 1.0, 86_400.0
DEFAULT_FDB_SIZE = 8192
DEFAULT_AGEOUT_S = 300.0
FDB_PER_PORT = 1024
DEFAULT_MAX_PEERS = 64
"""Each peer is a process of some 25 MB: 64 of them are already a big gateway."""
MAX_PEERS = 1000
"""Below the port table's 1024 slots, leaving room for TAP, netdev and client ports."""
DEFAULT_PING_S = 20.0
MIN_PING_S, MAX_PING_S = 1.0, 3600.0
MAX_SOCKET_PATH = 107
"""sun_path holds 108 bytes with the terminating NUL (unix(7))."""


class ConfigError(ValueError):
    """A configuration that cannot be used; the message is one line for the user."""


@dataclass(frozen=True)
class Config:
    """Everything ``etherws-supervisor start`` needs to know."""

    rundir: str = DEFAULT_RUNDIR
    foreground: bool = False
    ageout: float = DEFAULT_AGEOUT_S
    fdb_size: int = DEFAULT_FDB_SIZE
    ctl: str | None = None
    ctl_secret_key: str | None = None
    ctl_clients: str | None = None
    logfile: str | None = None
    logconf: str | None = None
    syslog: bool = False
    debug: bool = False
    no_server: bool = False
    host: str = ""
    port: int | None = None
    path: str = "/"
    sslkey: str | None = None
    sslcert: str | None = None
    htpasswd: str | None = None
    max_peers: int = DEFAULT_MAX_PEERS
    origin: tuple[str, ...] = ()
    ping_interval: float = DEFAULT_PING_S
    ping_timeout: float = DEFAULT_PING_S

    @property
    def tls(self) -> bool:
        """The server speaks wss:// (TLS)."""
        return self.sslcert is not None

    @property
    def server_port(self) -> int:
        """The TCP port the server listens on: 80, or 443 with TLS, unless given."""
        if self.port is not None:
            return self.port
        return 443 if self.tls else 80

    @property
    def fdb_per_port(self) -> int:
        """Most addresses one port may hold (never more than the table)."""
        return min(FDB_PER_PORT, self.fdb_size)


_TYPES: dict[str, tuple[type, ...]] = {
    "rundir": (str,), "foreground": (bool,), "ageout": (int, float), "fdb_size": (int,),
    "ctl": (str,), "ctl_secret_key": (str,), "ctl_clients": (str,), "logfile": (str,),
    "logconf": (str,), "syslog": (bool,),
    "debug": (bool,), "no_server": (bool,), "host": (str,), "port": (int,), "path": (str,),
    "sslkey": (str,), "sslcert": (str,), "htpasswd": (str,), "max_peers": (int,),
    "origin": (list,), "ping_interval": (int, float), "ping_timeout": (int, float),
}


def parse_toml(text: str) -> dict[str, Any]:
    """Read a TOML configuration into option values; raises ConfigError."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file: {exc}") from None
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key == "ports":
            continue  # the declared ports: etherws.portconfig reads them
        name = key.replace("-", "_")
        if name not in _TYPES:
            raise ConfigError(f"configuration file: unknown key {key!r}")
        if not isinstance(value, _TYPES[name]) or (
                isinstance(value, bool) and bool not in _TYPES[name]):
            raise ConfigError(f"configuration file: {key!r} has the wrong type")
        if isinstance(value, list):  # origin, the one list
            if not all(isinstance(o, str) for o in value):
                raise ConfigError("configuration file: 'origin' must be a list of strings")
            value = tuple(value)
        out[name] = value
    return out


def in_file(err: ConfigError, path: str) -> str:
    """``err``'s message naming the file ``path`` instead of "configuration file"."""
    return str(err).replace("configuration file", path, 1)


def build(file_values: Mapping[str, Any], cli_values: Mapping[str, Any]) -> Config:
    """Merge file and command-line values (None on the command line = not given)."""
    merged: dict[str, Any] = dict(file_values)
    known = {f.name for f in fields(Config)}
    for key, value in cli_values.items():
        if key in known and value is not None and value is not False:
            merged[key] = tuple(value) if isinstance(value, list) else value
    cfg = Config(**merged)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Raise ConfigError for values out of range or combinations that cannot work."""
    if not MIN_FDB <= cfg.fdb_size <= MAX_FDB:
        raise ConfigError(f"--fdb-size must be between {MIN_FDB} and {MAX_FDB}")
    if not MIN_AGEOUT_S <= cfg.ageout <= MAX_AGEOUT_S:
        raise ConfigError(f"--ageout must be between {MIN_AGEOUT_S:g} and {MAX_AGEOUT_S:g} s")
    if not cfg.rundir.startswith("/"):
        raise ConfigError("--rundir must be an absolute path")
    if sum(bool(x) for x in (cfg.logfile, cfg.logconf, cfg.syslog)) > 1:
        raise ConfigError("choose one of --logfile, --logconf and --syslog")
    remote = cfg.ctl is not None and cfg.ctl.startswith("tcp://")
    keys = (cfg.ctl_secret_key, cfg.ctl_clients)
    if remote and not all(keys):
        raise ConfigError("--ctl tcp://... needs --ctl-secret-key and --ctl-clients "
                          "(remote control is CURVE-only)")
    if any(keys) and not remote:
        raise ConfigError("--ctl-secret-key and --ctl-clients go with --ctl tcp://...")
    if cfg.ctl is not None and not remote:
        raise ConfigError("--ctl takes a tcp://ADDRESS:PORT endpoint; the local control "
                          "socket is always RUNDIR/ctl.sock")
    _validate_server(cfg)
    longest = RunDir(cfg.rundir).data_sock  # the longest socket path in the run directory
    if len(longest.encode()) > MAX_SOCKET_PATH:
        raise ConfigError(f"--rundir is too long: socket paths in it must fit in "
                          f"{MAX_SOCKET_PATH} bytes")


def _validate_server(cfg: Config) -> None:
    if cfg.port is not None and not 1 <= cfg.port <= 65535:
        raise ConfigError("--port must be between 1 and 65535")
    if bool(cfg.sslkey) != bool(cfg.sslcert):
        raise ConfigError("--sslkey and --sslcert go together")
    if not cfg.path.startswith("/") or not cfg.path.isascii() or not cfg.path.isprintable() \
            or " " in cfg.path:
        raise ConfigError(f"--path must be an absolute URL path like /ws, not {cfg.path!r}")
    if not 1 <= cfg.max_peers <= MAX_PEERS:
        raise ConfigError(f"--max-peers must be between 1 and {MAX_PEERS}")
    for name, value in (("--ping-interval", cfg.ping_interval),
                        ("--ping-timeout", cfg.ping_timeout)):
        if not MIN_PING_S <= value <= MAX_PING_S:
            raise ConfigError(f"{name} must be between {MIN_PING_S:g} and {MAX_PING_S:g} s")
    for origin in cfg.origin:
        if not origin or not origin.isascii() or not origin.isprintable() or " " in origin:
            raise ConfigError(f"--origin {origin!r} is not an origin like https://example.org")

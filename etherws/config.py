"""Supervisor configuration: one table of options, read from the command line and a TOML
file, and handed on to child processes (pure).

``OPTIONS`` is the one place an option is described: its command-line flag (the TOML key
is the flag without ``--``: ``ageout = 300``, ``fdb-size = 8192``), its type, its default,
its check, and which child processes get it. From it come the argparse options
(``add_arguments``), the TOML checks (``parse_toml``), the arguments that carry a
configuration to a restarted supervisor (``to_args``) and to a child (``child_args``).
The command line wins over the file. Unknown keys and values of the wrong type are
errors: a typo must not silently mean "default". Durations are seconds, ``_s`` names.
"""

from __future__ import annotations

import argparse
import posixpath
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from etherws.errors import EtherwsError
from etherws.frame import ETH_HLEN, MAX_FRAME
from etherws.paths import DEFAULT_RUNDIR, RunDir

MIN_FDB, MAX_FDB = 16, 1_000_000
MIN_AGEOUT_S, MAX_AGEOUT_S = 1.0, 86_400.0
DEFAULT_FDB_SIZE = 8192
DEFAULT_AGEOUT_S = 300.0
FDB_PER_PORT = 1024
DEFAULT_MOVE_HOLD_S = 2.0
"""Long enough that a looped frame (back within milliseconds) or a thief's cannot move a
station that is talking; short enough for a VM migrating between tunnels."""
MAX_MOVE_HOLD_S = 3600.0
DEFAULT_MAX_PEERS = 64
"""Each peer is a process of its own: 64 of them are already a big gateway."""
MAX_PEERS = 1000
"""Below the port table's 1024 slots, leaving room for TAP, netdev and client ports."""
DEFAULT_PING_S = 20.0
MIN_PING_S, MAX_PING_S = 0.5, 3600.0
"""Half a second at least: the tests' fast keepalives; an hour at most."""
MAX_SOCKET_PATH = 107
"""sun_path holds 108 bytes with the terminating NUL (unix(7))."""


class ConfigError(EtherwsError):
    """A configuration that cannot be used; the message is one line for the user."""


def _between(low: float, high: float, unit: str = "") -> Callable[[str, Any], None]:
    def check(flag: str, value: Any) -> None:
        if not low <= value <= high:
            raise ConfigError(f"{flag} must be between {_num(low)} and {_num(high)}{unit}")
    return check


def _num(x: float) -> str:
    return str(int(x)) if x == int(x) else f"{x:g}"


def _plain(text: str) -> bool:
    """Printable ASCII without spaces: safe in an HTTP request line or header."""
    return text.isascii() and text.isprintable() and " " not in text


def _check_path(flag: str, value: str) -> None:
    if not value.startswith("/") or not _plain(value):
        raise ConfigError(f"{flag} must start with '/' and be an absolute URL path like /ws, "
                          f"not {value!r}")


def _check_message(flag: str, value: int) -> None:
    if not ETH_HLEN <= value <= MAX_FRAME:
        raise ConfigError(f"{flag} must be {ETH_HLEN}..{MAX_FRAME}")


def _check_origins(flag: str, value: Sequence[str]) -> None:
    for origin in value:
        if not origin or not _plain(origin):
            raise ConfigError(f"{flag} {origin!r} is not an origin like https://example.org")


def check_tls_pair(sslkey: str | None, sslcert: str | None) -> None:
    """ConfigError unless the TLS key and certificate are given both or neither (the
    supervisor's check, and the peer worker's)."""
    if bool(sslkey) != bool(sslcert):
        raise ConfigError("--sslkey and --sslcert go together")


@dataclass(frozen=True)
class Option:
    """One option of ``etherws-supervisor start`` (and of the children it is passed to)."""

    attr: str
    """The Config attribute (durations end in ``_s``)."""
    flag: str
    """The command-line flag; the TOML key is the flag without ``--``."""
    kind: type
    """bool (a flag), int, float, str, or tuple (a repeatable string option)."""
    default: Any
    help: str
    metavar: str | None = None
    check: Callable[[str, Any], None] | None = None
    """Raises ConfigError for a value it refuses (given the flag, for the message)."""
    path: bool = False
    """A file or directory: relative to the configuration file's directory (in the file)
    or to the working directory (on the command line)."""
    children: frozenset[str] = frozenset()
    """The child processes that take this option too ("broker", "peer", "client")."""
    section: str = "start"
    """"start", "server" (the WebSocket server's group) or "log" (one of three)."""

    @property
    def key(self) -> str:
        """The TOML key."""
        return self.flag[2:]


_CHILD_LOG = frozenset({"broker", "peer", "client", "tap", "netdev", "listener",
                        "zygote"})
OPTIONS: tuple[Option, ...] = (
    Option("foreground", "--foreground", bool, False, "stay attached (for systemd and tests)"),
    Option("rundir", "--rundir", str, DEFAULT_RUNDIR,
           f"run directory (default {DEFAULT_RUNDIR})", "DIR", path=True),
    Option("ageout_s", "--ageout", float, DEFAULT_AGEOUT_S,
           f"seconds before a learned address is forgotten (default {DEFAULT_AGEOUT_S:g})",
           "S", _between(MIN_AGEOUT_S, MAX_AGEOUT_S, " s"), children=frozenset({"broker"})),
    Option("move_hold_s", "--move-hold", float, DEFAULT_MOVE_HOLD_S,
           "seconds a station must be silent on its port before it may move to another "
           f"(MAC move protection; default {DEFAULT_MOVE_HOLD_S:g}, 0: off)", "S",
           _between(0.0, MAX_MOVE_HOLD_S, " s"), children=frozenset({"broker"})),
    Option("fdb_size", "--fdb-size", int, DEFAULT_FDB_SIZE,
           f"FDB capacity (default {DEFAULT_FDB_SIZE})", "N", _between(MIN_FDB, MAX_FDB)),
    Option("no_port_security", "--no-port-security", bool, False, "flood frames from "
           f"addresses a port may not learn any more (it holds {FDB_PER_PORT}) instead of "
           "dropping them", children=frozenset({"broker"})),
    Option("no_loop_guard", "--no-loop-guard", bool, False, "send no loop probes and "
           "block no port (loops are then held off by MAC move protection only)",
           children=frozenset({"broker"})),
    Option("metrics", "--metrics", str, None, "serve Prometheus metrics on [ADDR:]PORT "
           "(127.0.0.1 when only a port is given; off by default)", "[ADDR:]PORT",
           lambda flag, value: metrics_address(value) and None),
    Option("ctl", "--ctl", str, None, "remote control endpoint tcp://ADDR:PORT (CURVE only; "
           "the local socket is always RUNDIR/ctl.sock)", "ENDPOINT"),
    Option("ctl_secret_key", "--ctl-secret-key", str, None, "the supervisor's CURVE key "
           "pair (.key_secret from etherws-ctl keygen), for --ctl tcp://", "F", path=True),
    Option("ctl_clients", "--ctl-clients", str, None, "directory of allowed client public "
           "keys (.key files), for --ctl tcp://", "DIR", path=True),
    Option("no_server", "--no-server", bool, False, "do not accept WebSocket peers",
           section="server"),
    Option("host", "--host", str, "", "address to listen on (default: all)", "ADDR",
           section="server"),
    Option("port", "--port", int, None, "TCP port (default 80, or 443 with --sslcert)", "N",
           _between(1, 65535), section="server"),
    Option("path", "--path", str, "/", "WebSocket path (default /)", "/PATH", _check_path,
           section="server", children=frozenset({"peer"})),
    Option("sslkey", "--sslkey", str, None, "TLS private key (PEM): serve wss://", "F",
           path=True, section="server", children=frozenset({"peer"})),
    Option("sslcert", "--sslcert", str, None, "TLS certificate chain (PEM)", "F",
           path=True, section="server", children=frozenset({"peer"})),
    Option("htpasswd", "--htpasswd", str, None, "require HTTP Basic auth from this htpasswd "
           "file ({SHA}, bcrypt, apr1, SHA-256/512-crypt)", "F", path=True,
           section="server", children=frozenset({"peer"})),
    Option("token_key", "--token-key", str, None, "secret key file of peer tokens "
           "(etherws-ctl token); made (32 random bytes, mode 0600) when missing "
           "(default: one made in the run directory at start and removed at stop: "
           "tokens end with the run)", "F", path=True, section="server",
           children=frozenset({"peer"})),
    Option("max_peers", "--max-peers", int, DEFAULT_MAX_PEERS,
           f"most peers at once; more get HTTP 503 (default {DEFAULT_MAX_PEERS})", "N",
           _between(1, MAX_PEERS), section="server"),
    Option("max_message", "--max-message", int, MAX_FRAME, "largest message a peer may "
           f"send; a larger one closes its tunnel with 1009 (default {MAX_FRAME}; below "
           "it peers get no super-frames)", "B", _check_message, section="server",
           children=frozenset({"peer"})),
    Option("isolate", "--isolate", bool, False, "accepted peers cannot reach each other, "
           "only the switch's own ports (a public relay for browser VMs)", section="server",
           children=frozenset({"broker"})),
    Option("no_offload", "--no-offload", bool, False, "no super-frames: TAP and netdev "
           "ports without the virtio-net header (netdev interfaces get their offloads "
           "turned off instead), tunnels without etherws.gso.1 (for comparison, or a "
           "kernel that misbehaves)",
           children=frozenset({"tap", "netdev", "peer", "client"})),
    Option("no_zygote", "--no-zygote", bool, False, "start every peer worker with "
           "fork+exec, not from the zygote (slower, more memory: for comparison)",
           section="server"),
    Option("origin", "--origin", tuple, (), "let browsers in only from this Origin "
           "(repeatable; default: no Origin check)", "ORIGIN", _check_origins,
           section="server", children=frozenset({"peer"})),
    Option("ping_interval_s", "--ping-interval", float, DEFAULT_PING_S,
           f"ping a peer after S seconds of silence (default {DEFAULT_PING_S:g})", "S",
           _between(MIN_PING_S, MAX_PING_S, " s"), section="server",
           children=frozenset({"peer", "client"})),
    Option("ping_timeout_s", "--ping-timeout", float, DEFAULT_PING_S,
           f"drop a peer S seconds after an unanswered ping (default {DEFAULT_PING_S:g})", "S",
           _between(MIN_PING_S, MAX_PING_S, " s"), section="server",
           children=frozenset({"peer", "client"})),
    Option("logfile", "--logfile", str, None, "append log lines to FILE", "FILE", path=True,
           section="log", children=_CHILD_LOG),
    Option("logconf", "--logconf", str, None, "configure logging from FILE "
           "(logging.config.fileConfig format)", "FILE", path=True, section="log",
           children=_CHILD_LOG),
    Option("syslog", "--syslog", bool, False, "log to syslog (/dev/log)", section="log",
           children=_CHILD_LOG),
    Option("debug", "--debug", bool, False, "log debug messages", children=_CHILD_LOG),
)
BY_ATTR: dict[str, Option] = {o.attr: o for o in OPTIONS}
BY_KEY: dict[str, Option] = {o.key: o for o in OPTIONS}


@dataclass(frozen=True)
class Config:
    """Everything ``etherws-supervisor start`` needs to know (one field per option)."""

    foreground: bool = False
    rundir: str = DEFAULT_RUNDIR
    ageout_s: float = DEFAULT_AGEOUT_S
    move_hold_s: float = DEFAULT_MOVE_HOLD_S
    fdb_size: int = DEFAULT_FDB_SIZE
    no_port_security: bool = False
    no_loop_guard: bool = False
    metrics: str | None = None
    ctl: str | None = None
    ctl_secret_key: str | None = None
    ctl_clients: str | None = None
    no_server: bool = False
    host: str = ""
    port: int | None = None
    path: str = "/"
    sslkey: str | None = None
    sslcert: str | None = None
    htpasswd: str | None = None
    token_key: str | None = None
    max_peers: int = DEFAULT_MAX_PEERS
    max_message: int = MAX_FRAME
    isolate: bool = False
    no_offload: bool = False
    no_zygote: bool = False
    origin: tuple[str, ...] = ()
    ping_interval_s: float = DEFAULT_PING_S
    ping_timeout_s: float = DEFAULT_PING_S
    logfile: str | None = None
    logconf: str | None = None
    syslog: bool = False
    debug: bool = False

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


# --- the command line -----------------------------------------------------------------
def _arg_type(opt: Option) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return opt.kind(text) if opt.kind in (int, float) else text
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"not {'an integer' if opt.kind is int else 'a number'}: {text!r}") from None
    return convert


def add_option(parser: Any, opt: Option, child: bool = False) -> None:
    """Add one option to an argparse parser or group. For the supervisor (``child``
    False) a value not given is None, so a file's value can stand; a child gets the
    default. Ranges are checked after parsing (``validate``, ``check_child``): one line
    for the user, or the child's log, rather than argparse's usage text."""
    if opt.kind is bool:
        parser.add_argument(opt.flag, dest=opt.attr, action="store_true",
                            default=False if child else None, help=opt.help)
    elif opt.kind is tuple:
        parser.add_argument(opt.flag, dest=opt.attr, action="append", metavar=opt.metavar,
                            help=opt.help, default=[] if child else None)
    else:
        parser.add_argument(opt.flag, dest=opt.attr, type=_arg_type(opt),
                            metavar=opt.metavar,
                            help=opt.help, default=opt.default if child else None)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every option of ``etherws-supervisor start``, in its group."""
    server = parser.add_argument_group("WebSocket server (on unless --no-server)")
    for opt in OPTIONS:
        if opt.children is not _CHILD_LOG:
            add_option(server if opt.section == "server" else parser, opt)
    add_log_arguments(parser, child=False)


def add_child_arguments(parser: argparse.ArgumentParser, child: str) -> None:
    """The options ``child`` takes from the supervisor, but the log options (every
    process's common parser has those: ``add_log_arguments``)."""
    for opt in OPTIONS:
        if child in opt.children and opt.children is not _CHILD_LOG:
            add_option(parser, opt, child=True)


def add_log_arguments(parser: argparse.ArgumentParser, child: bool = True) -> None:
    """``--logfile``, ``--logconf``, ``--syslog`` (one of them) and ``--debug``."""
    group = parser.add_mutually_exclusive_group()
    for opt in OPTIONS:
        if opt.children is _CHILD_LOG:
            add_option(group if opt.section == "log" else parser, opt, child)


def _flags(opt: Option, value: Any) -> list[str]:
    if opt.kind is bool:
        return [opt.flag] if value else []
    if opt.kind is tuple:
        return [arg for item in value for arg in (opt.flag, str(item))]
    return [] if value is None else [opt.flag, repr(value) if opt.kind is float else
                                     str(value)]


def to_args(cfg: Config, base: Config | None = None) -> list[str]:
    """Command-line arguments that turn ``base`` (default: the defaults; for a restart,
    what the configuration file says) into ``cfg``: the options that differ."""
    base = base or Config()
    out: list[str] = []
    for opt in OPTIONS:
        value = getattr(cfg, opt.attr)
        if value != getattr(base, opt.attr):
            out += _flags(opt, value)
    return out


def child_args(cfg: Config, child: str, log: bool = True, **override: Any) -> list[str]:
    """The arguments that give process ``child`` its options from ``cfg`` (``log``: the
    log options too; ``override``: values of the child's own, e.g. the htpasswd
    snapshot instead of the file)."""
    out: list[str] = []
    for opt in OPTIONS:
        if child in opt.children and (log or opt.children is not _CHILD_LOG):
            out += _flags(opt, override.get(opt.attr, getattr(cfg, opt.attr)))
    return out


def check_child(args: argparse.Namespace, child: str) -> None:
    """ConfigError for a value of ``child``'s options out of the range the supervisor
    allows (the same checks, so a worker never runs with what a switch refuses)."""
    for opt in OPTIONS:
        value = getattr(args, opt.attr, None)
        if child in opt.children and opt.check is not None and value is not None:
            opt.check(opt.flag, value)


# --- the file ---------------------------------------------------------------------------
def parse_toml(text: str, base_dir: str = "/") -> dict[str, Any]:
    """Read a TOML configuration into option values (by Config attribute); paths are made
    absolute against ``base_dir``, the file's directory. Raises ConfigError. The
    ``ports`` tables are etherws.portconfig's to read."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file: {exc}") from None
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key == "ports":
            continue
        opt = BY_KEY.get(key)
        if opt is None:
            raise ConfigError(f"configuration file: unknown key {key!r}")
        out[opt.attr] = _file_value(opt, value, base_dir)
    return out


def _file_value(opt: Option, value: Any, base_dir: str) -> Any:
    wrong = ConfigError(f"configuration file: {opt.key!r} has the wrong type "
                        f"(expected {_kind_name(opt.kind)})")
    if opt.kind is tuple:
        if not isinstance(value, list):
            raise wrong
        if not all(isinstance(o, str) for o in value):
            raise ConfigError(f"configuration file: {opt.key!r} must be a list of strings")
        return tuple(value)
    ok = isinstance(value, bool) if opt.kind is bool else (
        not isinstance(value, bool) and isinstance(value, (int, float) if opt.kind is float
                                                   else opt.kind))
    if not ok:
        raise wrong
    if opt.path:
        return posixpath.normpath(posixpath.join(base_dir, value))
    return float(value) if opt.kind is float else value


def _kind_name(kind: type) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            tuple: "a list of strings"}[kind]


def metrics_address(value: str) -> tuple[str, int]:
    """``(host, port)`` of ``--metrics [ADDR:]PORT``; ConfigError for anything else."""
    host, colon, port = value.rpartition(":")
    host = host.strip("[]") if colon else "127.0.0.1"
    if not port.isdigit() or not 1 <= int(port) <= 65535 or (colon and not host):
        raise ConfigError(f"--metrics takes [ADDR:]PORT, not {value!r}")
    return host, int(port)


def in_file(err: ConfigError, path: str) -> str:
    """``err``'s message naming the file ``path`` instead of "configuration file"."""
    return str(err).replace("configuration file", path, 1)


def build(file_values: Mapping[str, Any], cli_values: Mapping[str, Any]) -> Config:
    """Merge file and command-line values (None or False on the command line = not
    given); check the result."""
    merged: dict[str, Any] = dict(file_values)
    known = {f.name for f in fields(Config)}
    for key, value in cli_values.items():
        if key in known and value is not None and value is not False:
            merged[key] = tuple(value) if isinstance(value, list) else value
    cfg = Config(**merged)
    validate(cfg)
    return cfg


def parse_args(argv: Sequence[str]) -> Config:
    """``build`` from command-line arguments alone (what ``to_args`` writes)."""
    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    add_arguments(parser)
    return build({}, vars(parser.parse_args(list(argv))))


def validate(cfg: Config) -> None:
    """Raise ConfigError for values out of range or combinations that cannot work."""
    for opt in OPTIONS:
        value = getattr(cfg, opt.attr)
        if opt.check is not None and value is not None:
            opt.check(opt.flag, value)
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
    check_tls_pair(cfg.sslkey, cfg.sslcert)
    longest = RunDir(cfg.rundir).session_sock  # the longest socket path in the run directory
    if len(longest.encode()) > MAX_SOCKET_PATH:
        raise ConfigError(f"--rundir is too long: socket paths in it must fit in "
                          f"{MAX_SOCKET_PATH} bytes")


def option_names(options: Iterable[Option] = OPTIONS) -> list[str]:
    """The Config attributes, in table order."""
    return [o.attr for o in options]

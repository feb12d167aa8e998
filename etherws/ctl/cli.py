"""etherws-ctl: control a running switch from the command line.

Each command is one JSON-RPC request to the supervisor (etherws.control) and, unless
``--json`` is given, one renderer from etherws.ctl.render. Exit codes::

    0  done
    1  the supervisor said no (the error reply's message and [reason] on stderr)
    2  usage error
    3  supervisor unreachable: no socket, not root, or no reply within --timeout

Every failure is one line on stderr; tracebacks only with ``--debug``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from typing import Any, Callable, NoReturn, Sequence

from etherws import __version__, paths, probe
from etherws.control import BY_VERB, Command, RpcError
from etherws.ctl import eventstream, render, secrets, setport, top
from etherws.portconfig import valid_port_name
from etherws.runtime import curvekeys
from etherws.runtime.ctlclient import (
    ControlClient,
    ControlSetupError,
    PermissionDenied,
    Unreachable,
)

PROG = "etherws-ctl"
EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
CLIENT_TIMEOUT_S = 50.0
"""addport client waits for the first connection: the supervisor answers within 40 s."""
PROBE_TIMEOUT_S = 15.0
"""probe waits for the probe: the supervisor answers within 10 s
(``supervisor.probing.DEADLINE_S``)."""

Params = Callable[[argparse.Namespace], dict[str, Any]]
Renderer = Callable[[dict[str, Any]], str]


_UsageError = secrets.UsageError


class _ParserExit(Exception):
    """argparse wants to exit (help, version, usage error): main returns the status."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that returns from main instead of calling sys.exit."""

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise _ParserExit(status)

    def error(self, message: str) -> NoReturn:
        # Usage first, the one-line error last: the line a user (or a script) reads.
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: {message}\n")


# --- argument types ------------------------------------------------------------------
def _positive_int(value: str, what: str, hint: str = "") -> int:
    try:
        n = int(value, 10)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"not {what}: {value!r}{hint}")
    return n


def port_ref(value: str) -> int | str:
    """PORT: a port number, or a port's name (which starts with a letter)."""
    if valid_port_name(value):
        return value
    return _positive_int(value, "a port number or name", " (ports start at 1; names "
                         "start with a letter)")


def positive_int(value: str) -> int:
    """A positive integer (an MTU)."""
    return _positive_int(value, "a positive integer")


def seconds(value: str) -> float:
    """A positive number of seconds."""
    try:
        s = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if not 0 < s < 86400:
        raise argparse.ArgumentTypeError(f"not a sensible timeout: {value!r}")
    return s


def probe_size(value: str) -> int:
    """``--size N`` of probe: etherws.probe's MIN_SIZE..MAX_SIZE bytes (checked here for
    a usage error; the supervisor checks again)."""
    try:
        n = int(value, 10)
    except ValueError:
        n = 0
    if not probe.MIN_SIZE <= n <= probe.MAX_SIZE:
        raise argparse.ArgumentTypeError(
            f"--size must be {probe.MIN_SIZE}..{probe.MAX_SIZE} bytes, not {value!r}")
    return n


def lifetime(value: str) -> float:
    """A token's lifetime: a positive number of seconds (the supervisor bounds it)."""
    try:
        s = float(value)
    except ValueError:
        s = 0.0
    if not s > 0:
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {value!r}")
    return s


def _token_params(args: argparse.Namespace) -> dict[str, Any]:
    params = {"ttl": args.ttl, "vlan": args.vlan, "max_macs": args.max_macs}
    return {k: v for k, v in params.items() if v is not None}


def shut_flag(value: str) -> bool:
    """``--shut 0|1``."""
    if value not in ("0", "1"):
        raise argparse.ArgumentTypeError(f"--shut takes 0 or 1, not {value!r}")
    return value == "1"


# --- commands ------------------------------------------------------------------------
def _command(sub: "argparse._SubParsersAction[Any]", verb: str, help_: str,
             params: Params, command: Command | None = None) -> argparse.ArgumentParser:
    """Add a command: its parser, the request it sends (``control.BY_VERB``, or
    ``command`` for a subcommand of a verb) and the view that shows its result."""
    cmd = command or BY_VERB[verb]
    p: argparse.ArgumentParser = sub.add_parser(verb, help=help_, description=help_)
    renderer = render.VIEWS[cmd.view] if cmd.view is not None else None
    p.set_defaults(method=cmd.method, params=params, renderer=renderer, command_parser=p)
    return p


def _add_addport(sub: "argparse._SubParsersAction[Any]") -> None:
    p = sub.add_parser("addport", help="add a port", description="Add a port to the switch.")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    # Each port kind is its own subcommand, so "addport client URL [options]" slots in
    # beside these without touching them.
    add = BY_VERB["addport"]
    tap = _command(kinds, "tap", "a TAP device (created if it does not exist)",
                   lambda a: _named(a, {"type": "tap", "target": a.tap, "bridge": a.bridge}),
                   add)
    tap.add_argument("tap", metavar="NAME", help="TAP device name, e.g. ethws0")
    tap.add_argument("--bridge", metavar="BR", help="the TAP joins this bridge")
    netdev = _command(kinds, "netdev", "an existing network interface (AF_PACKET)",
                      lambda a: _named(a, {"type": "netdev", "target": a.ifname}), add)
    netdev.add_argument("ifname", metavar="IFNAME", help="interface name, e.g. eth1")
    client = _command(kinds, "client", "an outgoing WebSocket tunnel to another switch",
                      _client_params, add)
    client.add_argument("--user", metavar="U", help="HTTP Basic auth user")
    client.add_argument("--passwd", metavar="P", help="its password: visible to other "
                        "local users while the command runs; prefer --passwd-file, or "
                        "nothing: it is asked for on the terminal, or read from stdin")
    client.add_argument("--passwd-file", metavar="F", help="read the password from the "
                        "first line of F")
    client.add_argument("--cacerts", metavar="F", help="CA certificates (PEM) that "
                        "verify the wss:// server (default: the system's)")
    client.add_argument("--insecure", action="store_true",
                        help="do not verify the wss:// server's certificate")
    client.add_argument("--proxy", metavar="URL", help="HTTP proxy, http://HOST:PORT "
                        "(default: http_proxy/https_proxy/no_proxy of this environment)")
    client.add_argument("--proxy-auth-file", metavar="F", help="the proxy's user:password, "
                        "from the first line of F")
    client.add_argument("--retry", action="store_true", help="keep the port and keep "
                        "trying when the first connection fails")
    client.add_argument("--no-offload", action="store_true", help="do not offer the "
                        "server super-frames (etherws.gso.1): one wire frame per message")
    client.add_argument("url", metavar="URL", help="ws://HOST[:PORT]/PATH or wss://...")
    for p in (tap, netdev, client):
        p.add_argument("--name", metavar="N", help="a name for the port, unique; "
                       "port commands accept it instead of the number")


def _named(args: argparse.Namespace, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with the port's name, and without options left unset."""
    return {k: v for k, v in {**params, "name": args.name}.items() if v is not None}


def _client_params(args: argparse.Namespace) -> dict[str, Any]:
    """addPort client's params: secrets from files, the prompt and this environment."""
    return secrets.client_params(args, _named(args, {"type": "client", "target": args.url}))


def _setif_params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {"port": args.port}
    for key in ("address", "netmask", "mtu"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    return params


def _port_only(args: argparse.Namespace) -> dict[str, Any]:
    return {"port": args.port}


def _no_params(args: argparse.Namespace) -> dict[str, Any]:
    return {}


KEYGEN = "keygen"
"""A verb that is not a request: it writes a key pair locally."""
LIVE_VERBS = ("top", "events")
"""Verbs that are not one request: their runner takes the connection and stays."""
_KEYGEN_HELP = ("write a CURVE key pair for remote control: FILE.key (public) and "
                "FILE.key_secret")


def _add_commands(sub: "argparse._SubParsersAction[Any]") -> None:
    _add_addport(sub)
    p = _command(sub, "setport", "shut or open a port; set its VLANs, storm control and "
                 "rate limit", setport.params)
    p.add_argument("port", metavar="PORT", type=port_ref)
    p.add_argument("--shut", metavar="0|1", type=shut_flag,
                   help="1: drop the port's traffic, 0: forward it again")
    setport.add_options(p)
    p = _command(sub, "delport", "delete a port", _port_only)
    p.add_argument("port", metavar="PORT", type=port_ref)
    p = _command(sub, "restartport", "restart a port's worker (also clears FATAL)",
                 _port_only)
    p.add_argument("port", metavar="PORT", type=port_ref)
    _command(sub, "listport", "list ports with state and counters", _no_params)
    p = _command(sub, "setif", "set a port interface's address, netmask or MTU",
                 _setif_params)
    p.add_argument("port", metavar="PORT", type=port_ref)
    p.add_argument("--address", metavar="A", help="IPv4 or IPv6 address (A or A/PREFIX)")
    p.add_argument("--netmask", metavar="M", help="netmask, dotted or prefix length")
    p.add_argument("--mtu", metavar="N", type=positive_int, help="MTU in bytes")
    _command(sub, "listif", "list port interfaces with addresses and MTU", _no_params)
    _command(sub, "listfdb", "list learned addresses", _no_params)
    p = _command(sub, "flushfdb", "forget learned addresses (of one port, or all)",
                 lambda a: {} if a.port is None else {"port": a.port})
    p.add_argument("port", metavar="PORT", type=port_ref, nargs="?")
    _command(sub, "status", "show the supervisor, broker and FDB state", _no_params)
    p = _command(sub, "probe", "round trip and largest frame across a tunnel port (the "
                 "far etherws switch answers probes)",
                 lambda a: {"port": a.port, "size": a.size})
    p.add_argument("port", metavar="PORT", type=port_ref)
    p.add_argument("--size", metavar="N", type=probe_size, default=probe.DEFAULT_SIZE,
                   help=f"the largest frame to try, {probe.MIN_SIZE}..{probe.MAX_SIZE} bytes "
                        f"(default {probe.DEFAULT_SIZE}: a full frame of MTU 1500)")
    _command(sub, "save", "write the running ports into the configuration file",
             _no_params)
    p = _command(sub, "token", "mint a token for a peer that cannot send a password (a "
                 "browser VM): ws://HOST/PATH?token=T, or subprotocol etherws.token.T; "
                 "the token alone on the last line", _token_params)
    p.add_argument("--ttl", metavar="S", type=lifetime,
                   help="seconds it is good for (default 3600, at most 30 days)")
    p.add_argument("--vlan", metavar="VID", type=positive_int,
                   help="bind the peer to this VLAN (an access port of it, unless "
                        "setport gave the port VLANs of its own)")
    p.add_argument("--max-macs", metavar="N", type=positive_int,
                   help="most source MACs the peer may use (default 4)")
    p = top.add_parser(sub, interval=seconds, count=positive_int)
    p.set_defaults(method=None, params=_no_params, renderer=None, command_parser=p,
                   runner=top.run)
    p = eventstream.add_parser(sub, count=positive_int)
    p.set_defaults(method=None, params=_no_params, renderer=None, command_parser=p,
                   runner=eventstream.run)
    p = sub.add_parser(KEYGEN, help=_KEYGEN_HELP, description=_KEYGEN_HELP)
    p.set_defaults(method=None, params=_no_params, renderer=None, command_parser=p)
    p.add_argument("file", metavar="FILE")


def build_parser() -> argparse.ArgumentParser:
    """The etherws-ctl argument parser."""
    parser = _Parser(prog=PROG, description="Control a running etherws switch.",
                     epilog="exit status: 0 done, 1 refused by the supervisor, 2 usage error, "
                            "3 supervisor unreachable")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--rundir", metavar="DIR",
                       help=f"the switch's run directory (default {paths.DEFAULT_RUNDIR})")
    where.add_argument("--ctl", metavar="ENDPOINT",
                       help="control endpoint, ipc://PATH or tcp://HOST:PORT")
    parser.add_argument("--ctl-key", metavar="F", help="this client's CURVE key file (tcp://)")
    parser.add_argument("--ctl-server-key", metavar="F",
                        help="the supervisor's CURVE public key file (tcp://)")
    parser.add_argument("--json", action="store_true", help="print the JSON result")
    parser.add_argument("--timeout", metavar="S", type=seconds, default=5.0,
                        help="give up after S seconds (default 5)")
    parser.add_argument("--debug", action="store_true", help="tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_commands(sub)
    return parser


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage rules argparse cannot express."""
    if args.method == "setInterface" and args.address is None and args.netmask is None \
            and args.mtu is None:
        args.command_parser.error("give at least one of --address, --netmask, --mtu")
    keys = (args.ctl_key, args.ctl_server_key)
    if any(keys) and not (args.ctl or "").startswith("tcp://"):
        parser.error("--ctl-key and --ctl-server-key go with --ctl tcp://...")
    if any(keys) and not all(keys):
        parser.error("--ctl-key and --ctl-server-key go together")
    if args.ctl and not args.ctl.startswith(("ipc://", "tcp://")):
        parser.error(f"--ctl: not a control endpoint: {args.ctl!r} (ipc://PATH or tcp://...)")


# --- running -------------------------------------------------------------------------
def _hint(args: argparse.Namespace) -> str:
    where = f"--ctl {args.ctl}" if args.ctl else f"--rundir {args.rundir}"
    if args.ctl and args.ctl.startswith("tcp://"):
        return (f"(key not accepted by the supervisor at {args.ctl}, or it is unreachable; "
                "its --ctl-clients directory must hold this key's .key file)")
    return f"(is etherws-supervisor running? try: etherws-supervisor start {where})"


def _fail(args: argparse.Namespace, message: str, status: int) -> int:
    if args.debug:
        traceback.print_exc()
    print(f"{PROG}: {message}", file=sys.stderr)
    return status


def _output(args: argparse.Namespace, result: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(result))
    elif args.renderer is not None:
        print(args.renderer(result))
    sys.stdout.flush()  # a closed pipe shows here, where main can handle it


def _keygen(args: argparse.Namespace) -> int:
    try:
        public, secret = curvekeys.generate(args.file)
    except curvekeys.KeyFileError as err:
        return _fail(args, str(err), EXIT_REFUSED)
    print(f"public key: {public}\nsecret key: {secret}")
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    """Send the request ``args`` describes and print the result; returns the exit status."""
    if args.command == KEYGEN:
        return _keygen(args)
    curve = (args.ctl_key, args.ctl_server_key) if args.ctl_key else None
    endpoint = args.ctl or paths.RunDir(args.rundir).ctl_endpoint
    timeout = args.timeout
    if args.command == "addport" and args.kind == "client":
        timeout = max(timeout, CLIENT_TIMEOUT_S)
    if args.command == "probe":
        timeout = max(timeout, PROBE_TIMEOUT_S)
    try:
        params = args.params(args)  # may ask for a password: before any connection
        client = ControlClient(endpoint, timeout_s=timeout, curve=curve)
    except _UsageError as err:
        return _fail(args, str(err), EXIT_USAGE)
    except (ControlSetupError, curvekeys.KeyFileError) as err:  # the endpoint or its keys
        return _fail(args, str(err), EXIT_USAGE)
    try:
        with client:
            if args.command in LIVE_VERBS:
                return int(args.runner(args, client))
            result = client.call(args.method, params)
    except RpcError as err:
        return _fail(args, f"{err.message} [{err.reason}]", EXIT_REFUSED)
    except PermissionDenied as err:
        return _fail(args, str(err), EXIT_UNREACHABLE)
    except Unreachable as err:
        return _fail(args, f"{err} {_hint(args)}", EXIT_UNREACHABLE)
    _output(args, result)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run etherws-ctl with ``argv`` (default: the process arguments); returns the exit status."""
    if argv is None:  # our own command line: nothing secret stays in ps
        secrets.hide(sys.argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.rundir is None:
            args.rundir = paths.DEFAULT_RUNDIR
        _check_args(parser, args)
    except _ParserExit as done:
        return done.status
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # stdout closed early (| head): nothing more to say, and nowhere to say it;
        # point stdout at /dev/null so the interpreter's final flush does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # a bug: one line, the traceback on request
        if args.debug:
            raise
        print(f"{PROG}: internal error: {type(exc).__name__}: {exc} "
              "(--debug shows the traceback)", file=sys.stderr)
        return EXIT_REFUSED


def console_main() -> None:
    """The ``etherws-ctl`` console script."""
    sys.exit(main())


if __name__ == "__main__":
    console_main()

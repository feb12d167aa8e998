"""``etherws-supervisor start|stop|status|reload``: the command line of the supervisor (I/O).

``start`` without ``--foreground`` does not fork (no process holding a ZeroMQ context
may fork): it runs ``start --foreground`` again as a new session, detached, and waits on
a pipe until that process says READY (control socket bound, broker spawned) or ERROR.
"""

from __future__ import annotations

import argparse
import configparser
import dataclasses
import os
import select
import subprocess
import sys
import time
from typing import Any

from etherws import __version__, config
from etherws.config import ConfigError
from etherws.control import RpcError
from etherws.paths import DEFAULT_RUNDIR, RunDir
from etherws.portconfig import PortConfigError, ports_of
from etherws.runtime import configfile, logsetup
from etherws.runtime.configfile import ConfigFileError
from etherws.runtime.ctlclient import ControlClient, ControlSetupError, Unreachable
from etherws.runtime.curvekeys import KeyFileError
from etherws.supervisor import unit

PROG = "etherws-supervisor"
START_TIMEOUT_S = 20.0
DEFAULT_LOGFILE = "/var/log/etherws.log"
"""Where a detached switch logs when it is told nothing and there is no syslog."""
STOP_TIMEOUT_S = 15.0
EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Run an etherws switch.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("start", help="start the switch")
    s.add_argument("--config", metavar="FILE", help="TOML file with the same options and "
                   f"the ports ([[ports]] tables; default {configfile.DEFAULT_PATH} when it "
                   "exists)")
    config.add_arguments(s)
    s.add_argument("--notify-fd", type=int, help=argparse.SUPPRESS)
    for name, text in (("stop", "stop the switch and remove what it created"),
                       ("status", "show the supervisor's state"),
                       ("reload", "apply the configuration file's ports (as SIGHUP does)")):
        c = sub.add_parser(name, help=text)
        g = c.add_mutually_exclusive_group()
        g.add_argument("--rundir", default=DEFAULT_RUNDIR, help="run directory")
        g.add_argument("--ctl", metavar="ENDPOINT", help="control endpoint")
        c.add_argument("--ctl-key", metavar="F", help="client CURVE key (tcp://)")
        c.add_argument("--ctl-server-key", metavar="F", help="supervisor public key (tcp://)")
        c.add_argument("--timeout", dest="timeout_s", metavar="TIMEOUT", type=float,
                       default=5.0, help="seconds to wait for a reply")
    u = sub.add_parser("unit", help="print a systemd unit for this installation")
    u.add_argument("--config", metavar="FILE", help="the configuration file it starts with")
    return p


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return code


def _load_config(args: argparse.Namespace) -> config.Config:
    """The configuration; its file's ports are checked too (and their secret files), so
    a file that cannot work stops ``start`` here, before anything runs."""
    file_values: dict[str, Any] = {}
    if args.config is None and os.path.exists(configfile.DEFAULT_PATH):
        args.config = configfile.DEFAULT_PATH
    if args.config:
        args.config = os.path.abspath(args.config)
        try:
            text = configfile.read(args.config)
            base = os.path.dirname(args.config)
            specs = ports_of(text, base, args.config)
            try:
                file_values = config.parse_toml(text, base)
            except ConfigError as exc:
                raise ConfigError(config.in_file(exc, args.config)) from None
            for spec in specs:
                for path, what in ((spec.passwd_file, "password file"),
                                   (spec.proxy_auth_file, "proxy-auth file")):
                    if path:
                        try:
                            configfile.read_secret(path, what)
                        except ConfigFileError as exc:
                            raise ConfigError(f"{args.config}: port {spec.number} "
                                              f"({spec.label}): {exc}") from None
        except (ConfigFileError, PortConfigError) as exc:
            raise ConfigError(str(exc)) from None
    cli = {k: v for k, v in vars(args).items() if k not in ("command", "config", "notify_fd")}
    for opt in config.OPTIONS:  # command-line paths are relative to where we are
        value = cli.get(opt.attr)
        if opt.path and opt.attr != "rundir" and isinstance(value, str):
            cli[opt.attr] = os.path.abspath(value)
    args.file_config = config.Config(**file_values)  # what a restart reads from the file
    return config.build(file_values, cli)


def _start(args: argparse.Namespace) -> int:
    try:
        cfg = _load_config(args)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    if os.geteuid() != 0:
        return _fail("must run as root (it creates TAP devices and raw sockets)", EXIT_REFUSED)
    problem = _check_log_target(cfg)
    if problem:
        return _fail(problem, EXIT_USAGE)
    if cfg.foreground:
        return _run_foreground(cfg, args.notify_fd, args.config)
    if not (cfg.logfile or cfg.logconf or cfg.syslog):
        # Detached, it must log somewhere: syslog where there is one, else a file.
        if os.path.exists(logsetup.SYSLOG_SOCKET):
            cfg = dataclasses.replace(cfg, syslog=True)
        else:
            cfg = dataclasses.replace(cfg, logfile=DEFAULT_LOGFILE)
            problem = _check_log_target(cfg)
            if problem:
                return _fail(f"no syslog socket at {logsetup.SYSLOG_SOCKET} and {problem}: "
                             "give --logfile FILE or --logconf FILE", EXIT_USAGE)
            print(f"{PROG}: no syslog socket at {logsetup.SYSLOG_SOCKET}: logging to "
                  f"{DEFAULT_LOGFILE}", file=sys.stderr)
    return _start_detached(args, cfg)


def _check_log_target(cfg: config.Config) -> str:
    """Why the log file, the logging configuration or syslog cannot be used, or ""."""
    if cfg.syslog and not os.path.exists(logsetup.SYSLOG_SOCKET):
        return f"--syslog: there is no syslog socket at {logsetup.SYSLOG_SOCKET}"
    if cfg.logfile:
        try:
            logsetup.open_log_file(cfg.logfile).close()
        except OSError as exc:
            return f"cannot write the log file {cfg.logfile}: {exc.strerror}"
    if cfg.logconf and not os.access(cfg.logconf, os.R_OK):
        return f"cannot read the logging configuration {cfg.logconf}"
    return ""


def _run_foreground(cfg: config.Config, notify_fd: int | None, config_path: str | None) -> int:
    from etherws.supervisor.service import serve  # zmq and pyroute2 load only here

    try:
        logsetup.configure(cfg, "supervisor")  # type: ignore[arg-type]
    except (OSError, ValueError, KeyError, configparser.Error) as exc:  # a bad --logconf
        return _fail(f"cannot configure logging: {exc}", EXIT_USAGE)

    def notify(message: str) -> None:
        if message.startswith("ERROR "):
            print(f"{PROG}: {message[6:]}", file=sys.stderr)
        if notify_fd is not None:
            try:
                os.write(notify_fd, message.encode() + b"\n")
                os.close(notify_fd)
            except OSError:
                pass  # the starter gave up waiting; we run on regardless

    return serve(cfg, notify, config_path)


def _start_detached(args: argparse.Namespace, cfg: config.Config) -> int:
    argv = [sys.executable, "-m", "etherws.supervisor", "start"]
    if args.config:  # the file again, for its ports; the options from it are in to_args
        argv += ["--config", args.config]
    argv += config.to_args(dataclasses.replace(cfg, foreground=True), args.file_config)
    r, w = os.pipe()
    out = logsetup.open_log_file(cfg.logfile) if cfg.logfile else subprocess.DEVNULL
    try:
        child = subprocess.Popen(argv + ["--notify-fd", str(w)], stdin=subprocess.DEVNULL,
                                 stdout=out, stderr=out, pass_fds=(w,),
                                 start_new_session=True, cwd="/")
    finally:
        os.close(w)
        if out is not subprocess.DEVNULL:
            out.close()  # type: ignore[union-attr]
    try:
        message = _read_notify(r, START_TIMEOUT_S)
    finally:
        os.close(r)
    if message == "READY":
        print(f"{PROG}: started (pid {child.pid}, run directory {cfg.rundir}"
              + (f", configuration {args.config})" if args.config else ")"))
        return EXIT_OK
    if message.startswith("ERROR "):
        return _fail(message[6:], EXIT_REFUSED)
    if message == "":
        try:
            rc = child.wait(timeout=5)
            return _fail(f"the supervisor exited during start-up (status {rc}); "
                         "see its log", EXIT_REFUSED)
        except subprocess.TimeoutExpired:
            pass
    child.kill()
    child.wait()
    return _fail(f"the supervisor did not become ready within {START_TIMEOUT_S:g}s",
                 EXIT_REFUSED)


def _read_notify(fd: int, timeout_s: float) -> str:
    """The first line written to ``fd``; "" on EOF, "TIMEOUT" when nothing came in time."""
    data = b""
    end = time.monotonic() + timeout_s
    while b"\n" not in data:
        left = end - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return "TIMEOUT"
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").partition("\n")[0].strip()


def _endpoint(args: argparse.Namespace) -> str:
    return args.ctl or RunDir(args.rundir).ctl_endpoint


def _call(args: argparse.Namespace, method: str, refused: str = ""
          ) -> dict[str, Any] | int:
    """One control request to the switch ``args`` names: its result, or the exit status
    after one line on stderr."""
    curve = (args.ctl_key, args.ctl_server_key) if args.ctl_key else None
    try:
        with ControlClient(_endpoint(args), timeout_s=args.timeout_s, curve=curve) as client:
            return client.call(method, {})
    except Unreachable as exc:
        return _fail(str(exc), EXIT_UNREACHABLE)
    except RpcError as exc:
        return _fail(f"{refused}{exc.message} [{exc.reason}]", EXIT_REFUSED)
    except (ControlSetupError, KeyFileError) as exc:  # an endpoint or key that cannot work
        return _fail(str(exc), EXIT_USAGE)


def _stop(args: argparse.Namespace) -> int:
    result = _call(args, "shutdown")
    if isinstance(result, int):
        return result
    pid = result["entries"][0]["pid"]
    if args.ctl_key:
        return EXIT_OK  # a remote supervisor's pid means nothing on this host
    end = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return EXIT_OK
        time.sleep(0.05)  # waiting on another process's exit: no fd to poll for it
    return _fail(f"supervisor pid {pid} did not exit within {STOP_TIMEOUT_S:g}s", EXIT_REFUSED)


def _reload(args: argparse.Namespace) -> int:
    result = _call(args, "reloadConfig", "reload refused: ")
    if isinstance(result, int):
        return result
    entries = result["entries"]
    for entry in entries:
        print(entry.get("change", ""))
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    # etherws-ctl renders the status; running it (not importing it) keeps the process
    # packages apart, and exec hands over its output and exit code unchanged.
    target = ["--ctl", args.ctl] if args.ctl else ["--rundir", args.rundir]
    if args.ctl_key:
        target += ["--ctl-key", args.ctl_key]
    if args.ctl_server_key:
        target += ["--ctl-server-key", args.ctl_server_key]
    argv = [sys.executable, "-m", "etherws.ctl", *target, "--timeout", str(args.timeout_s),
            "status"]
    sys.stdout.flush()
    os.execv(sys.executable, argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = _parser().parse_args(argv)
    if args.command == "start":
        return _start(args)
    if args.command == "stop":
        return _stop(args)
    if args.command == "reload":
        return _reload(args)
    if args.command == "unit":
        sys.stdout.write(unit.render(sys.executable, args.config and os.path.abspath(args.config)))
        return EXIT_OK
    return _status(args)


def console_main() -> None:
    """The ``etherws-supervisor`` console script."""
    sys.exit(main())

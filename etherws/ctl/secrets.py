"""``addport client``'s secrets: from files, the prompt or argv, hidden from ps (I/O).

A password given as ``--passwd P`` (or a proxy's, inside ``--proxy http://u:p@h``) is
readable by every local user in /proc/PID/cmdline for as long as the command runs, and
``addport client`` may wait 50 s. ``--passwd-file F`` and ``--proxy-auth-file F`` keep
it off the command line (``runtime.configfile.read_secret`` reads them, as the
supervisor reads the configuration file's); when it is there anyway, the process title
is rewritten at once without it (as MySQL's client masks ``-p``) and a warning says so.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Sequence
from typing import Any

import setproctitle

from etherws.errors import EtherwsError
from etherws.runtime import configfile
from etherws.wsurl import proxy_with_auth, take_proxy_env

MASK = "***"


class UsageError(EtherwsError):
    """A usage problem found while building a request (after parsing)."""


def masked(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``argv`` with secret values replaced by MASK, and the options that held one."""
    out: list[str] = []
    found: list[str] = []
    mask_next: str | None = None
    for arg in argv:
        if mask_next is not None:
            out.append(_mask(mask_next, arg))
            if out[-1] != arg:
                found.append(mask_next)
            mask_next = None
            continue
        flag, eq, value = arg.partition("=")
        if flag in ("--passwd", "--proxy") and eq:
            out.append(f"{flag}={_mask(flag, value)}")
            if out[-1] != arg:
                found.append(flag)
        else:
            out.append(arg)
            if arg in ("--passwd", "--proxy"):
                mask_next = arg
    return out, found


def _mask(flag: str, value: str) -> str:
    if flag == "--passwd":
        return MASK
    scheme, sep, rest = value.rpartition("://")
    auth, at, host = rest.rpartition("@")
    return f"{scheme}{sep}{MASK}@{host}" if at else value


def hide(argv: Sequence[str]) -> None:
    """Rewrite this process's title without the secrets in ``argv``, and warn."""
    shown, found = masked(argv)
    if not found:
        return
    setproctitle.setproctitle(" ".join(shown))
    for flag in dict.fromkeys(found):
        better = "--passwd-file F or the prompt" if flag == "--passwd" else \
            "--proxy-auth-file F"
        print(f"etherws-ctl: warning: {flag} on the command line is visible to other "
              f"local users while it runs; use {better}", file=sys.stderr)


def client_params(args: argparse.Namespace, params: dict[str, Any]) -> dict[str, Any]:
    """addPort client's ``params`` completed: the password from --passwd-file, --passwd
    or the prompt, the proxy with --proxy-auth-file's credentials, and the proxy
    variables of this environment. UsageError for a file or a combination that cannot
    work."""
    params = dict(params)
    passwd = args.passwd
    if args.passwd_file is not None:
        if passwd is not None:
            raise UsageError("choose --passwd or --passwd-file, not both")
        passwd = _secret_file(args.passwd_file, "password file")
    if args.user is not None:
        params["user"] = args.user
        params["passwd"] = passwd if passwd is not None else _ask_password(args.user)
    elif passwd is not None:
        params["passwd"] = passwd  # the supervisor refuses it with a clear reason
    if args.cacerts:
        params["cacerts"] = os.path.abspath(args.cacerts)
    for flag in ("insecure", "retry", "no_offload"):
        if getattr(args, flag):
            params[flag] = True
    if args.proxy:
        params["proxy"] = args.proxy
    if args.proxy_auth_file is not None:
        if not args.proxy:
            raise UsageError("--proxy-auth-file goes with --proxy")
        auth = _secret_file(args.proxy_auth_file, "proxy-auth file")
        if ":" not in auth or "@" in args.proxy.rpartition("://")[2]:
            raise UsageError("--proxy-auth-file holds user:password, for a --proxy URL "
                             "without them")
        params["proxy"] = proxy_with_auth(args.proxy, auth)
    # The proxy of whoever asks, as etherws 1.3 used its caller's environment; the
    # supervisor's own environment is usually not the user's.
    params["proxy_env"] = take_proxy_env(dict(os.environ))
    return params


def _secret_file(path: str, what: str) -> str:
    try:
        return configfile.read_secret(path, what)
    except configfile.ConfigFileError as exc:
        raise UsageError(str(exc)) from None


def _ask_password(user: str) -> str:
    """The password from the terminal (not echoed), or one line of a piped stdin."""
    if sys.stdin.isatty():
        return getpass.getpass(f"password for {user}: ")
    line = sys.stdin.readline()
    if not line:
        raise UsageError("--user without --passwd: no terminal to ask on and "
                          "nothing on stdin")
    return line.rstrip("\r\n")

"""Secrets on etherws-ctl's command line, hidden from ps (I/O).

A password given as ``--passwd P`` (or a proxy's, inside ``--proxy http://u:p@h``) is
readable by every local user in /proc/PID/cmdline for as long as the command runs, and
``addport client`` may wait 50 s. ``--passwd-file F`` and ``--proxy-auth-file F`` keep
it off the command line (``runtime.configfile.read_secret`` reads them, as the
supervisor reads the configuration file's); when it is there anyway, the process title
is rewritten at once without it (as MySQL's client masks ``-p``) and a warning says so.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import setproctitle

MASK = "***"


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

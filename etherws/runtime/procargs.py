"""Command-line arguments every child of the supervisor takes (I/O-free argparse glue)."""

from __future__ import annotations

import argparse

from etherws.config import add_log_arguments

EXIT_CONFIG = 78
"""A child's exit status for "cannot work with this configuration" (EX_CONFIG), e.g. a
missing interface: still counted as a crash by the restart policy, but logged as such."""
EXIT_AUTH_FAILED = 3
"""A peer worker's exit status after it answered 401: the supervisor counts a failed
login for the peer's address (and refuses it for a while after too many)."""


def child_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A parser with ``--rundir``, ``--parent-pid`` and the logging options."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--rundir", required=True, help="the switch's run directory")
    p.add_argument("--parent-pid", type=int, default=0,
                   help="the supervisor's pid: exit at once if it is not our parent")
    add_log_arguments(p)
    return p


def port_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A child parser plus ``--port N --slot S``, for port workers."""
    p = child_parser(prog, description)
    p.add_argument("--port", type=int, required=True, help="port number")
    p.add_argument("--slot", type=int, required=True, help="slot in the port table")
    return p

"""``etherws-ctl top``: a live per-port view, refreshed every ``--interval`` seconds (I/O).

It only sends listPort requests, so it works wherever etherws-ctl does (the local socket or
remote control). On a terminal it draws with rich's Live on the alternate screen and reads
single keys (``q`` quits); otherwise (a pipe, a file, a script) it prints the same table
again at each refresh, flushed, and ``--count N`` stops it after N refreshes. Rates need
two snapshots, so the first refresh comes one interval after the start (on a terminal,
the ports show at once, their rates as ``-``). ``--json`` (not on a terminal) prints one
JSON object a refresh: listPort's entries, each with its ``rates``.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from etherws import rates
from etherws.control import BY_VERB
from etherws.ctl import topview
from etherws.runtime.ctlclient import ControlClient

QUIT_KEYS = b"qQ"


def add_parser(sub: argparse._SubParsersAction[Any], interval: Callable[[str], float],
               count: Callable[[str], int]) -> argparse.ArgumentParser:
    """The ``top`` subcommand (its runner is ``run``)."""
    help_ = "a live per-port view: rates, drops, cpu, rss, state (q quits)"
    p: argparse.ArgumentParser = sub.add_parser("top", help=help_, description=help_)
    p.add_argument("--interval", metavar="S", type=interval, default=1.0,
                   help="seconds between refreshes (default 1)")
    p.add_argument("--count", metavar="N", type=count,
                   help="stop after N refreshes (default: until q or Ctrl-C)")
    return p


def _sample(client: ControlClient) -> rates.Snapshot:
    result = client.call(BY_VERB["listport"].method, {})
    entries = result.get("entries")
    return rates.Snapshot(time.monotonic(), entries if isinstance(entries, list) else [])


def _snapshots(client: ControlClient, interval_s: float,
               wait: Callable[[float], bool]) -> Iterator[tuple[rates.Snapshot | None,
                                                              rates.Snapshot]]:
    """(previous, latest) pairs, one per refresh; the first has no previous. ``wait(s)``
    sleeps up to s seconds and returns False to stop."""
    prev: rates.Snapshot | None = None
    due = time.monotonic()
    while True:
        cur = _sample(client)
        yield prev, cur
        prev = cur
        due += interval_s
        now = time.monotonic()
        due = max(due, now)  # after a slow reply: keep the pace rather than catch up
        if not wait(due - now):
            return


def _clock() -> str:
    return time.strftime("%H:%M:%S")


def run(args: argparse.Namespace, client: ControlClient) -> int:
    """Show the live view until q, Ctrl-C or ``--count`` refreshes; the exit status."""
    try:
        if sys.stdout.isatty():
            return _live(args, client)
        return _plain(args, client)
    except KeyboardInterrupt:
        return 0  # Ctrl-C is how one leaves top


def _plain(args: argparse.Namespace, client: ControlClient) -> int:
    shown = 0
    for prev, cur in _snapshots(client, args.interval, _sleep):
        if prev is None:
            continue  # no rates yet: nothing worth printing to a script
        rows = rates.rows(prev, cur)
        if args.json:  # one object a line: each entry with its rates (null: not known)
            sys.stdout.write(json.dumps({"entries": [
                {**r.entry, "rates": None if r.rates is None else asdict(r.rates)}
                for r in rows]}) + "\n")
        else:
            sys.stdout.write(topview.plain(rows, rates.total(rows), _clock()) + "\n\n")
        sys.stdout.flush()
        shown += 1
        if args.count is not None and shown >= args.count:
            break
    return 0


def _sleep(seconds: float) -> bool:
    time.sleep(max(0.0, seconds))
    return True


def _live(args: argparse.Namespace, client: ControlClient) -> int:
    console = Console()
    with _keys() as key_wait, Live(console=console, screen=True, auto_refresh=False) as live:
        shown = 0
        for prev, cur in _snapshots(client, args.interval, key_wait):
            rows = rates.rows(prev, cur)
            live.update(_rich(rows, rates.total(rows)), refresh=True)
            if prev is not None:
                shown += 1
            if args.count is not None and shown >= args.count:
                break
    return 0


@contextmanager
def _keys() -> Iterator[Callable[[float], bool]]:
    """A wait that returns early, False, when q is typed on the terminal (stdin in cbreak
    mode meanwhile, restored after); without a terminal on stdin, a plain sleep."""
    fd = sys.stdin.fileno() if sys.stdin is not None else -1
    if fd < 0 or not os.isatty(fd):
        yield _sleep
        return
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def wait(seconds: float) -> bool:
        end = time.monotonic() + max(0.0, seconds)
        while True:
            left = end - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(0.0, left))
            if not ready:
                return True
            typed = os.read(fd, 64)
            if not typed or any(k in typed for k in QUIT_KEYS):
                return False  # q, or the terminal went away
    try:
        yield wait
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _rich(rows: list[rates.Row], sum_: rates.Rates) -> Group:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, expand=False)
    for col in topview.COLUMNS:
        table.add_column(col.title, justify="right" if col.numeric else "left",
                         no_wrap=True, overflow="ellipsis",
                         max_width=32 if col.title == "TARGET" else None)
    for row in rows:
        state = str(row.entry.get("state") or "")
        style = "" if state == "up" else "red" if state in ("fatal", "failed") else "yellow"
        table.add_row(*topview.cells(row), style=style)
    head = Text(topview.summary(rows, sum_, _clock()) + "   (q quits)", style="bold")
    return Group(head, table)

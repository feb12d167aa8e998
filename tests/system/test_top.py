"""etherws-ctl top against a real switch: in a real pty (rows, rates that move under
traffic, q quits with 0) and without a terminal (plain tables, --json, --count)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import select
import struct
import subprocess
import termios
import time
from collections.abc import Iterator

from tests.support import PYTHON, SCALE, kill_process, wait_until
from tests.system.harness import Host, Switch, two_hosts

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>78]")
RX_RATE = 6  # the RX/s column (PORT NAME TYPE TARGET STATE LINK RX/s ...)


@contextlib.contextmanager
def pings(a: Host, address: str, seconds: float = 30) -> Iterator[None]:
    """A steady ping (100 a second) from ``a`` to ``address``, bounded in time and
    count, stopped on exit."""
    count = str(int(seconds * 100))
    proc = subprocess.Popen(["ip", "netns", "exec", a.ns, "ping", "-q", "-n", "-i", "0.01",
                             "-c", count, "-w", str(int(seconds)), address],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        kill_process(proc)


def row_tokens(screen: str, port: int) -> list[list[str]]:
    """The rows of ``port`` in ``screen`` text, split into cells."""
    return [line.split() for line in screen.splitlines()
            if line.split()[:1] == [str(port)] and len(line.split()) >= 15]


def moving(screen: str, port: int) -> bool:
    """True when some row of ``port`` shows frames per second above zero."""
    return any(t[RX_RATE] not in ("0", "-") for t in row_tokens(screen, port))


class Pty:
    """etherws-ctl top on the slave side of a pty 200x40; the test reads the master."""

    def __init__(self, sw: Switch, *args: str) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))
        env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "200", "LINES": "40"}
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "etherws.ctl.cli", "--rundir", sw.rundir, "top", *args],
            stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
        os.close(slave)
        self.seen = b""

    def read(self) -> str:
        """Everything shown so far, escape sequences removed."""
        while select.select([self.master], [], [], 0.05)[0]:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: the slave side is closed
                break
            if not chunk:
                break
            self.seen += chunk
        return ANSI.sub(b"", self.seen).decode(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            kill_process(self.proc)
        os.close(self.master)


def test_top_in_a_pty_shows_rows_rates_move_and_q_quits(switch: Switch) -> None:
    with two_hosts(switch, "203.0.113.1", "203.0.113.2") as pair:
        top = Pty(switch, "--interval", "0.5")
        try:
            wait_until(lambda: row_tokens(top.read(), pair.tap_port) and
                       row_tokens(top.read(), pair.net_port), 15 * SCALE,
                       "top to show both ports")
            assert "(q quits)" in top.read()
            with pings(pair.a, pair.b.address):
                wait_until(lambda: moving(top.read(), pair.net_port) and
                           moving(top.read(), pair.tap_port), 20 * SCALE,
                           f"rates to move in top:\n{top.read()[-3000:]}")
            os.write(top.master, b"q")
            assert top.proc.wait(timeout=10 * SCALE) == 0
            top.read()
            # the terminal is left as it was found: the alternate screen is closed again
            assert top.seen.count(b"\x1b[?1049h") == top.seen.count(b"\x1b[?1049l") == 1
            lflag = termios.tcgetattr(top.master)[3]  # cbreak mode is undone
            assert lflag & termios.ICANON and lflag & termios.ECHO
        finally:
            top.close()


def test_top_without_a_terminal_prints_tables_and_json_and_stops_after_count(
        switch: Switch) -> None:
    with two_hosts(switch, "203.0.113.1", "203.0.113.2") as pair, \
            pings(pair.a, pair.b.address):
        wait_until(lambda: pair.a.ping(pair.b.address), 10 * SCALE, "the path to work")
        started = time.monotonic()
        res = switch.ctl("top", "--interval", "0.5", "--count", "3", timeout_s=20)
        tables = [t for t in res.stdout.split("\n\n") if t.strip()]
        assert len(tables) == 3, res.stdout
        assert time.monotonic() - started >= 1.5  # three refreshes after a first sample
        for t in tables:
            head, columns, *_ = t.splitlines()
            assert re.match(r"\d\d:\d\d:\d\d  2 ports  rx ", head), head
            assert columns.split()[:2] == ["PORT", "NAME"]
        assert any(moving(t, pair.net_port) for t in tables), res.stdout
        out = switch.ctl("--json", "top", "--interval", "0.3", "--count", "2").stdout
        lines = [json.loads(line) for line in out.splitlines()]
        assert len(lines) == 2
        by_port = {e["port"]: e for e in lines[-1]["entries"]}
        assert set(by_port) == {pair.tap_port, pair.net_port}
        assert by_port[pair.net_port]["rates"]["rx_fps"] > 0

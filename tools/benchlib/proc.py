"""Commands with timeouts, background processes that die with the bench, deadlines.

Every process the bench starts in the background goes through ``Background``: it runs
under ``setpriv --pdeathsig KILL`` (util-linux), so even a bench killed with SIGKILL
leaves no iperf3 or openvpn behind, and ``stop`` ends it by its PID (SIGTERM, then
SIGKILL), never by name.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any, Callable, TypeVar

T = TypeVar("T")


class BenchError(RuntimeError):
    """Something the bench needs did not happen; the message says what."""


def in_ns(ns: str | None, *cmd: str) -> list[str]:
    """``cmd`` run inside network namespace ``ns`` (or as is for None)."""
    return ["ip", "netns", "exec", ns, *cmd] if ns else list(cmd)


def run(*cmd: str, timeout_s: float = 30, check: bool = True,
        input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` to its end within ``timeout_s``; text output captured.

    Raises BenchError with the command's stderr when it fails and ``check`` is set.
    """
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                             input=input_text, check=False)
    except subprocess.TimeoutExpired:
        raise BenchError(f"timed out after {timeout_s:g}s: {' '.join(cmd)}") from None
    if check and res.returncode != 0:
        detail = (res.stderr or res.stdout).strip().splitlines()
        raise BenchError(f"failed (exit {res.returncode}): {' '.join(cmd)}"
                         + (f": {detail[-1]}" if detail else ""))
    return res


def wait_until(predicate: Callable[[], T], timeout_s: float, what: str,
               interval_s: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something truthy; BenchError at the deadline."""
    end = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise BenchError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(interval_s)


class Background:
    """A process running in the background until ``stop``; its output goes to a file."""

    def __init__(self, cmd: list[str], log: Path) -> None:
        self.cmd = cmd
        self.log = log
        # setpriv then exec()s the command (``ip netns exec`` too), so the PID we hold is
        # the real process and its parent-death signal points at us.
        out: IO[bytes]
        with open(log, "ab") as out:
            self.popen = subprocess.Popen(
                ["setpriv", "--pdeathsig", "KILL", "--", *cmd], stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        """The process id (the command itself: every wrapper exec()s)."""
        return self.popen.pid

    def alive(self) -> bool:
        """True while the process runs."""
        return self.popen.poll() is None

    def tail(self, lines: int = 5) -> str:
        """The last lines of its output, for error messages."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self, timeout_s: float = 5) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``; reaps the process."""
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()
            self.popen.wait(timeout=timeout_s)


def ctl(rundir: str, *args: str) -> dict[str, Any]:
    """``etherws-ctl --json ARGS`` against the switch of ``rundir``; its decoded reply."""
    out = subprocess.run([sys.executable, "-m", "etherws.ctl.cli", "--rundir", rundir,
                          "--json", *args], check=True, capture_output=True, text=True)
    reply: dict[str, Any] = json.loads(out.stdout) if out.stdout.strip() else {}
    return reply


def free_port() -> int:
    """A TCP port of 127.0.0.1 nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

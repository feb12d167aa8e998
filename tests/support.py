"""Helpers shared by the test layers: deadlines, unique names, namespaces, processes.

Every wait here has a deadline; nothing sleeps for correctness. ETHERWS_TEST_TIMEOUT_SCALE
multiplies every deadline (a slow CI machine sets it to 2 or 3).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
SCALE = float(os.environ.get("ETHERWS_TEST_TIMEOUT_SCALE", "1"))
PYTHON = sys.executable


def deadline(seconds: float) -> float:
    """A monotonic deadline ``seconds`` (scaled) from now."""
    return time.monotonic() + seconds * SCALE


def wait_until(predicate: Callable[[], T], timeout_s: float, what: str,
               interval_s: float = 0.02) -> T:
    """Poll ``predicate`` until it returns something truthy; fail the test at the deadline."""
    end = deadline(timeout_s)
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout_s * SCALE:.1f}s waiting for {what}")
        time.sleep(interval_s)


def unique(prefix: str = "etw") -> str:
    """A short unique name, fit for an interface (at most 15 characters with a suffix)."""
    return prefix + secrets.token_hex(3)


def run(*cmd: str, check: bool = True, timeout_s: float = 30, **kw) -> subprocess.CompletedProcess:
    """Run a command with a timeout, capturing text output."""
    return subprocess.run(cmd, check=check, timeout=timeout_s * SCALE, text=True,
                          capture_output=True, **kw)


def kill_process(proc: subprocess.Popen, timeout_s: float = 5) -> None:
    """Stop a process this test started: SIGTERM, then SIGKILL after the timeout."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s * SCALE)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=timeout_s * SCALE)


@contextlib.contextmanager
def netns(name: str) -> Iterator[str]:
    """A network namespace that is removed afterwards, also when the test fails."""
    run("ip", "netns", "add", name)
    try:
        run("ip", "-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        run("ip", "netns", "del", name, check=False)


def link_exists(name: str, ns: str | None = None) -> bool:
    """True when interface ``name`` exists (in netns ``ns``)."""
    cmd = ["ip"] + (["-n", ns] if ns else []) + ["link", "show", "dev", name]
    return run(*cmd, check=False).returncode == 0


def delete_link(name: str, ns: str | None = None) -> None:
    """Delete interface ``name`` if it exists."""
    if link_exists(name, ns):
        cmd = ["ip"] + (["-n", ns] if ns else []) + ["link", "del", "dev", name]
        run(*cmd, check=False)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TERM_TIMEOUT_S = 5.0


def term_context(ctx: Any, what: str, timeout_s: float = TERM_TIMEOUT_S) -> None:
    """Terminate a ZeroMQ context, failing fast (as pyzmq's own tests do) when a socket
    was left open: ``term`` would block until pytest's 120 s timeout, naming nothing."""
    done = threading.Thread(target=ctx.term, name=f"term {what}", daemon=True)
    done.start()
    done.join(timeout_s * SCALE)
    if done.is_alive():
        raise AssertionError(f"{what}: the ZeroMQ context did not terminate within "
                             f"{timeout_s * SCALE:g} s: a socket was left open "
                             f"({_open_sockets(ctx)})")


def _open_sockets(ctx: Any) -> str:
    """The context's sockets not closed yet, by type: what to look for in the test."""
    # pyzmq keeps a WeakSet of the sockets a context made (private: hence the default);
    # a socket's type is cached at creation: naming it sends nothing to its thread.
    names = sorted(str(s.type.name) for s in list(getattr(ctx, "_sockets", ()))
                   if not s.closed)
    return ", ".join(names) or "not named by this pyzmq"

"""Supervised child processes: spawn, reap, stop, measure (I/O).

Children are started with fork+exec (``subprocess``) from the supervisor's main thread:
PR_SET_PDEATHSIG, which every child sets, fires when the *thread* that forked it ends,
and no process holding a ZeroMQ context may fork without exec. Each child gets its own
process group so a Ctrl-C on the supervisor's terminal reaches only the supervisor,
which then stops the children in order.

A peer worker may instead come from the zygote (``workers/zygote.py``): forked there and
reparented to the supervisor, which is a child subreaper. ``Adopted`` gives such a
process the part of ``Popen``'s interface used here, so both are supervised alike.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from typing import Callable, Protocol

import psutil

from etherws.runtime.procargs import EXIT_CONFIG
from etherws.supervisor.policy import Lifecycle, RestartPolicy


def exit_reason(returncode: int) -> str:
    """A returncode as listport shows it."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    if returncode == EXIT_CONFIG:
        return "configuration error (see the log)"
    return f"exited with status {returncode}"


class Process(Protocol):
    """What the supervisor uses of a running child: ``subprocess.Popen`` or Adopted."""

    pid: int

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def send_signal(self, sig: int) -> None: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...


class Adopted:
    """A child the supervisor did not spawn itself but reaps: one the zygote forked."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """The returncode once the process has ended (then it is reaped), else None."""
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # not ours after all: nothing to reap, ever
                self.returncode = -signal.SIGKILL
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """The returncode; subprocess.TimeoutExpired after ``timeout`` seconds."""
        end = None if timeout is None else time.monotonic() + timeout
        delay = 0.0005
        while (rc := self.poll()) is None:
            if end is not None and time.monotonic() >= end:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0.0)
            time.sleep(delay)  # no pidfd wait in the standard library for a timeout
            delay = min(delay * 2, 0.05)
        return rc

    def send_signal(self, sig: int) -> None:
        """Signal the process, unless it has already been reaped (its pid may be reused)."""
        if self.returncode is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        """SIGTERM."""
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL."""
        self.send_signal(signal.SIGKILL)


Launcher = Callable[[list[str], tuple[int, ...]], Process | None]
"""Starts a child some other way than fork+exec (argv, pass_fds), or returns None to
let it be spawned as usual; OSError when it cannot be started at all."""


class Child:
    """One supervised process: its command line, its Popen and its Lifecycle."""

    def __init__(self, argv: list[str], policy: RestartPolicy | None = None,
                 stdin_data: bytes | None = None, pass_fds: tuple[int, ...] = (),
                 launcher: Launcher | None = None) -> None:
        self.argv = argv
        self.restart_argv = argv
        """The command line of restarts (a client port keeps retrying after a restart)."""
        self.stdin_data = stdin_data
        """Written to the process's stdin at every start (secrets: never in argv)."""
        self.pass_fds = pass_fds
        """Descriptors every start inherits (the listener's socket, a peer's connection)."""
        self.launcher = launcher
        """Tried first at every start (the zygote, for peer workers)."""
        self.life = Lifecycle(policy or RestartPolicy())
        self.kill_reason = ""
        """Why the supervisor killed it (hung), until its exit is handled."""
        self.popen: Process | None = None
        self.spawned_ns = 0
        self._ps: psutil.Process | None = None

    @property
    def pid(self) -> int | None:
        """The running process's pid, or None."""
        return self.popen.pid if self.popen is not None else None

    def spawn(self, now: float, restart: bool = False) -> None:
        """Start the process; ``restart`` counts it as a restart of the same port."""
        self.spawned_ns = time.monotonic_ns()
        argv = self.restart_argv if restart else self.argv
        self.popen = self.launcher(argv, self.pass_fds) if self.launcher else None
        if self.popen is None:
            self.popen = self._exec(argv)
        try:
            self._ps = psutil.Process(self.popen.pid)
            self._ps.cpu_percent(None)  # the first call only primes the measurement
        except psutil.Error:
            self._ps = None
        if restart:
            self.life.restarted(now)
        else:
            self.life.spawned(now)

    def _exec(self, argv: list[str]) -> subprocess.Popen[bytes]:
        stdin = subprocess.DEVNULL if self.stdin_data is None else subprocess.PIPE
        popen = subprocess.Popen(argv, stdin=stdin, close_fds=True, process_group=0,
                                 pass_fds=self.pass_fds)
        if popen.stdin is not None:
            # A few hundred bytes: they fit in the pipe buffer, so this never blocks
            # even if the child is slow to read; a child that died at once is its
            # restart policy's business, not a supervisor error.
            with contextlib.suppress(BrokenPipeError):
                popen.stdin.write(self.stdin_data or b"")
            with contextlib.suppress(BrokenPipeError):
                popen.stdin.close()
        return popen

    def poll(self) -> int | None:
        """The returncode if the process has ended since the last poll (it is reaped)."""
        if self.popen is None:
            return None
        rc = self.popen.poll()
        if rc is not None:
            self.popen = None
            self._ps = None
        return rc

    def kill(self) -> None:
        """SIGKILL the process (it is reaped by the next poll)."""
        if self.popen is not None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop on purpose: SIGTERM, SIGKILL after ``timeout_s``, reap; no restart follows."""
        stop_children([self], timeout_s)

    def stats(self) -> tuple[float | None, int | None]:
        """CPU % since the previous call (100 = one core) and RSS bytes, or Nones."""
        if self._ps is None:
            return None, None
        try:
            return self._ps.cpu_percent(None), self._ps.memory_info().rss
        except psutil.Error:
            return None, None

    def usage(self) -> tuple[float, int] | None:
        """CPU seconds used (user + system) and RSS bytes of the running process, or
        None. Unlike ``stats`` it keeps no state, so a metrics scrape does not disturb
        listport's CPU %."""
        ps = self._ps
        if ps is None:
            return None
        try:
            with ps.oneshot():  # one read of /proc/PID/stat for both
                times = ps.cpu_times()
                return times.user + times.system, ps.memory_info().rss
        except psutil.Error:
            return None

    def runnable(self) -> bool:
        """True when the process is running or waiting for a CPU (state R): silent
        because it is busy or starved, not because it is blocked or stopped."""
        if self._ps is None:
            return False
        try:
            return bool(self._ps.status() == psutil.STATUS_RUNNING)
        except psutil.Error:
            return False

    def uptime(self, now: float) -> float | None:
        """Seconds since the current process started, or None when none runs."""
        return now - self.life.started_at if self.life.started_at is not None \
            and self.popen is not None else None


def stop_children(children: list[Child], timeout_s: float) -> None:
    """SIGTERM them all, wait on one shared deadline, SIGKILL the rest; no restarts follow.

    A child stuck in uninterruptible sleep even after SIGKILL is left to the kernel
    (and to PR_SET_PDEATHSIG) rather than hanging the supervisor's stop.
    """
    running = [c for c in children if c.popen is not None]
    for c in running:
        with contextlib.suppress(ProcessLookupError):
            c.popen.terminate()  # type: ignore[union-attr]
    end = time.monotonic() + timeout_s
    for c in running:
        p = c.popen
        assert p is not None
        try:
            p.wait(timeout=max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=1.0)
    for c in children:
        c.popen = None
        c._ps = None
        c.life.stopped()


def reap_strays(known: set[int], limit: int = 16) -> list[int]:
    """Reap ended children that no Child knows (a subreaper adopts every orphan below
    it: a worker whose zygote died before it could report it); their pids.

    ``waitid(WNOWAIT)`` looks without reaping, so a known child's status is left for its
    own poll(); only the first ended child is visible that way, so the sweep stops at a
    known one (its poll comes first in the same tick, and the next sweep sees past it).
    """
    reaped = []
    for _ in range(limit):
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            break
        if info is None or info.si_pid in known:
            break
        with contextlib.suppress(ChildProcessError):
            os.waitpid(info.si_pid, 0)
        reaped.append(info.si_pid)
    return reaped

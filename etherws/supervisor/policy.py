"""Restart policy: the life of one supervised process (pure).

States follow supervisord's (STARTING, UP/RUNNING, BACKOFF, FATAL), and the policy
tells a crash loop from a healthy process that was killed, as supervisord's startsecs
and systemd's start limits do:

- a process is STARTING from spawn until its first heartbeat, then UP;
- a process that ends after it was UP for ``min_run_s`` (0.5 s) ran fine: whatever
  ended it (kill -9, the OOM killer, a bug hit by traffic), it is restarted at once,
  every time, and the end is not a crash; only ``max_quick_restarts`` (30) such
  restarts within 60 s are allowed before they count as crashes, so a process that
  always dies a second after it starts cannot burn the machine;
- any other end is a crash: restarted at once the first time, then after 0.5 s
  doubling up to 30 s (``max_delay_s``; BACKOFF in between); the run of consecutive
  crashes is forgotten once the process has stayed up for 60 s;
- 5 crashes within 60 s make it FATAL: no more restarts until an operator asks (the
  broker's policy has a short cap and, FATAL, stops the supervisor: see ports.py);
- a process that stops sending heartbeats (hung, not dead) is killed and counted as a
  crash; one that is runnable but starved of CPU is given ``starved_timeout_s``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum


class State(Enum):
    """Where a supervised process is in its life; values are listport's state texts."""

    STARTING = "starting"
    UP = "up"
    BACKOFF = "backoff"
    FATAL = "fatal"
    STOPPED = "stopped"


@dataclass(frozen=True)
class RestartPolicy:
    """The numbers of the policy; the defaults are the project's contract."""

    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    crash_window_s: float = 60.0
    max_crashes: int | None = 5
    """Crashes within ``crash_window_s`` that make a process FATAL; None: never FATAL."""
    healthy_after_s: float = 60.0
    start_timeout_s: float = 10.0
    heartbeat_timeout_s: float = 5.0
    min_run_s: float = 0.5
    """Up (heartbeat seen) this long and then ended: it ran fine, restart at once."""
    max_quick_restarts: int = 30
    """Restarts of processes that ran fine, within ``crash_window_s``, before the next
    ones count as crashes."""
    starved_timeout_s: float = 30.0
    """Heartbeat silence allowed to a process that is runnable (busy, or waiting for a
    CPU on a loaded machine) rather than blocked or stopped."""

    def __post_init__(self) -> None:
        # None is the one spelling of "never FATAL": 0 reads as that too, but would
        # make the first crash FATAL, so it is refused rather than guessed.
        if self.max_crashes is not None and self.max_crashes < 1:
            raise ValueError("max_crashes is None (never FATAL) or at least 1")

    def delay(self, consecutive: int) -> float:
        """Seconds before restart number ``consecutive`` (1 = the first) of a crash run."""
        if consecutive <= 1:
            return 0.0
        return min(self.base_delay_s * 2.0 ** (consecutive - 2), self.max_delay_s)


@dataclass
class Lifecycle:
    """State machine of one supervised process; every method takes ``now`` (seconds)."""

    policy: RestartPolicy = field(default_factory=RestartPolicy)
    state: State = State.STOPPED
    restarts: int = 0
    reason: str = ""
    reason_at: float | None = None
    """When ``reason`` was set (the process's last end)."""
    started_at: float | None = None
    up_since: float | None = None
    next_start_at: float | None = None
    _consecutive: int = 0
    _crashes: deque[float] = field(default_factory=deque)
    _quick: deque[float] = field(default_factory=deque)

    def spawned(self, now: float) -> None:
        """The process was just started."""
        self.state = State.STARTING
        self.started_at = now
        self.up_since = None
        self.next_start_at = None

    def heartbeat(self, now: float) -> None:
        """The process showed it is alive and working."""
        if self.state is State.STARTING:
            self.state = State.UP
            self.up_since = now
        if (self.state is State.UP and self.up_since is not None
                and now - self.up_since >= self.policy.healthy_after_s):
            self._consecutive = 0

    def exited(self, now: float, reason: str, counted: bool = False) -> State:
        """The process ended unexpectedly: decide BACKOFF (with a restart time) or FATAL.

        ``counted``: the end is a crash whatever came before (the supervisor killed it
        as hung)."""
        ran_fine = self.state is State.UP and self.up_since is not None \
            and now - self.up_since >= self.policy.min_run_s and not counted
        if self.state is State.UP and self.up_since is not None \
                and now - self.up_since >= self.policy.healthy_after_s:
            self._consecutive = 0
        self.reason = reason
        self.reason_at = now
        self.started_at = self.up_since = None
        if ran_fine:
            _forget_before(self._quick, now - self.policy.crash_window_s)
            if len(self._quick) < self.policy.max_quick_restarts:
                self._quick.append(now)
                self.state = State.BACKOFF
                self.next_start_at = now
                return self.state
        self._crashes.append(now)
        _forget_before(self._crashes, now - self.policy.crash_window_s)
        limit = self.policy.max_crashes
        if limit is not None and len(self._crashes) >= limit:
            self.state = State.FATAL
            self.next_start_at = None
            self.reason = f"{reason}; {len(self._crashes)} crashes within " \
                          f"{self.policy.crash_window_s:g}s"
            return self.state
        self._consecutive += 1
        self.state = State.BACKOFF
        self.next_start_at = now + self.policy.delay(self._consecutive)
        return self.state

    def shown_reason(self, now: float) -> str:
        """The reason listport shows: cleared once the process has been up for
        ``healthy_after_s`` again (it is history then, kept as ``reason``)."""
        if self.state is State.UP and self.up_since is not None \
                and now - self.up_since >= self.policy.healthy_after_s:
            return ""
        return self.reason

    def due(self, now: float) -> bool:
        """True when a restart is due now; the caller spawns and then calls restarted()."""
        return self.state is State.BACKOFF and self.next_start_at is not None \
            and now >= self.next_start_at

    def restarted(self, now: float) -> None:
        """A restart (automatic or by the operator) happened."""
        self.restarts += 1
        self.spawned(now)

    def reset(self) -> None:
        """Forget the crash history (``restartport``): the next crash starts a new run."""
        self._crashes.clear()
        self._quick.clear()
        self._consecutive = 0
        self.reason = ""

    def stopped(self) -> None:
        """The process was stopped on purpose and will not be restarted."""
        self.state = State.STOPPED
        self.started_at = self.up_since = self.next_start_at = None

    def hung(self, now: float, last_heartbeat: float | None,
             runnable: bool = False) -> str | None:
        """Why the process should be killed as hung, or None.

        ``last_heartbeat`` is the time of its latest heartbeat (None: none since spawn);
        ``runnable``: the process is running or waiting for a CPU (not blocked, not
        stopped), so its silence may be starvation: it gets ``starved_timeout_s``.
        """
        if self.state is State.STARTING and self.started_at is not None \
                and last_heartbeat is None \
                and now - self.started_at > self.policy.start_timeout_s:
            return f"not ready within {self.policy.start_timeout_s:g}s"
        limit = max(self.policy.heartbeat_timeout_s,
                    self.policy.starved_timeout_s if runnable else 0.0)
        if self.state is State.UP and last_heartbeat is not None \
                and now - last_heartbeat > limit:
            return f"no heartbeat for {now - last_heartbeat:.1f}s"
        return None


def _forget_before(times: deque[float], cutoff: float) -> None:
    while times and times[0] < cutoff:
        times.popleft()

"""Telling the service manager how the switch is: ready, status, watchdog (I/O shell).

READY=1 goes out once the configured ports exist and the control socket answers;
STATUS= carries a one-line summary whenever it changes; WATCHDOG=1 at half the interval
systemd asks for, and only while the supervisor's loop runs (it calls ``tick``) and the
broker's heartbeat is fresh: a wedged broker that the supervisor cannot bring back makes
systemd restart the whole tree. STOPPING=1 and RELOADING=1 say what they say.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

from etherws.runtime.sdnotify import Notifier

BROKER_STALE_S = 2.0
"""A broker heartbeat older than this (it beats every 0.25 s) holds the watchdog back."""
STATUS_EVERY_S = 5.0


def status_line(port_states: Iterable[str], addresses: int) -> str:
    """``4 ports: 3 up, 1 backoff; 12 addresses`` (states in order of first appearance)."""
    states = Counter(port_states)
    count = sum(states.values())
    parts = ", ".join(f"{n} {state}" for state, n in states.items())
    ports = f"{count} port{'' if count == 1 else 's'}" + (f": {parts}" if parts else "")
    return f"{ports}; {addresses} address{'' if addresses == 1 else 'es'}"


class Watchdog:
    """The supervisor's side of the service manager protocol."""

    def __init__(self, notifier: Notifier | None = None) -> None:
        self.notifier = notifier or Notifier()
        self._next_ping = 0.0
        self._next_status = 0.0
        self._status = ""

    def started(self, status: str) -> None:
        """Everything configured is up: READY=1."""
        self._status = status
        self.notifier.ready(status)

    def tick(self, now: float, broker_silent_s: float, status: Callable[[], str]) -> None:
        """Called every round of the supervisor's loop; ``status`` is asked for only when
        a summary is due (it reads every tunnel port's status file)."""
        if not self.notifier.enabled:
            return
        interval = self.notifier.watchdog_s
        if interval is not None and now >= self._next_ping and \
                broker_silent_s < BROKER_STALE_S:
            self.notifier.send("WATCHDOG=1")
            self._next_ping = now + interval / 2
        if now >= self._next_status:
            line = status()
            if line != self._status:
                self.notifier.send(f"STATUS={line}")
                self._status = line
            self._next_status = now + STATUS_EVERY_S

    def reloading(self) -> None:
        """A reload begins."""
        self.notifier.reloading()

    def reloaded(self, status: str) -> None:
        """A reload is over (applied or refused): READY=1 again."""
        self._status = status
        self.notifier.ready(status)

    def stopping(self) -> None:
        """The switch is stopping."""
        self.notifier.send("STOPPING=1")
        self.notifier.close()

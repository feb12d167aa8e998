"""What the supervisor tells the service manager, and when (a fake notifier)."""

from __future__ import annotations

from etherws.runtime.sdnotify import Notifier
from etherws.supervisor.watchdog import BROKER_STALE_S, Watchdog, status_line


class Recorder(Notifier):
    def __init__(self, watchdog_s: float | None) -> None:
        super().__init__({"NOTIFY_SOCKET": "/nonexistent"})
        self.watchdog_s = watchdog_s
        self.sent: list[tuple[str, ...]] = []

    def send(self, *lines: str) -> bool:
        self.sent.append(lines)
        return True


def test_status_line() -> None:
    assert status_line(["up", "up", "backoff", "up"], 12) == \
        "4 ports: 3 up, 1 backoff; 12 addresses"
    assert status_line([], 1) == "0 ports; 1 address"
    assert status_line(["fatal"], 0) == "1 port: 1 fatal; 0 addresses"


def test_the_watchdog_pings_at_half_the_interval_while_the_broker_beats() -> None:
    rec = Recorder(watchdog_s=2.0)
    wd = Watchdog(rec)
    wd.started("0 ports; 0 addresses")
    pings = []
    for i in range(50):  # 5 s of 0.1 s rounds
        now = i * 0.1
        broker_silent = 0.1 if now < 3.0 else BROKER_STALE_S + 0.5  # wedged at 3 s
        before = len(rec.sent)
        wd.tick(now, broker_silent, lambda: "0 ports; 0 addresses")
        if rec.sent[before:] == [("WATCHDOG=1",)]:
            pings.append(round(now, 1))
    assert pings == [0.0, 1.0, 2.0]  # every 1 s, and none once the broker is silent


def test_no_watchdog_without_an_interval_and_status_on_change() -> None:
    rec = Recorder(watchdog_s=None)
    wd = Watchdog(rec)
    wd.started("a")
    wd.tick(0.0, 0.0, lambda: "a")  # the same as READY's: not sent again
    wd.tick(1.0, 0.0, lambda: "b")  # within STATUS_EVERY_S of the last look: later
    wd.tick(5.5, 0.0, lambda: "c")
    assert rec.sent == [("READY=1", "STATUS=a"), ("STATUS=c",)]


def test_reload_and_stop() -> None:
    rec = Recorder(watchdog_s=None)
    wd = Watchdog(rec)
    wd.reloading()
    wd.reloaded("s")
    wd.stopping()
    assert [lines[0] for lines in rec.sent] == ["RELOADING=1", "READY=1", "STOPPING=1"]
    assert rec.sent[0][1].startswith("MONOTONIC_USEC=")


def test_the_notifier_reads_the_environment() -> None:
    n = Notifier({"NOTIFY_SOCKET": "@abstract", "WATCHDOG_USEC": "3000000"})
    assert n.enabled and n.address == "\0abstract" and n.watchdog_s == 3.0
    assert Notifier({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "5",
                     "WATCHDOG_PID": "1"}).watchdog_s is None  # another process's
    off = Notifier({})
    assert not off.enabled and not off.send("READY=1")

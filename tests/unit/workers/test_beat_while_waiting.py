"""The waits outside PortLoop (a peer opening, a client between attempts): a fake clock
that a quiet poll advances by its timeout, so every case is exact and instant."""

from __future__ import annotations

from etherws.runtime.signals import StopSignal
from etherws.workers.link import beat_while_waiting

MS = 1_000_000
START = 10**12


class Scene:
    """A clock, a poll that reports on given calls, the heartbeats written."""

    def __init__(self, ready_on: int | None = None) -> None:
        self.now = START
        self.ready_on = ready_on  # the poll call (0-based) that reports something
        self.timeouts: list[int] = []
        self.beats: list[int] = []
        self.stop = StopSignal(wake=False)  # never installed: request() is enough here

    def clock(self) -> int:
        return self.now

    def heartbeat(self, now_ns: int) -> None:
        self.beats.append(now_ns)

    def poll(self, timeout_ms: int) -> object:
        self.timeouts.append(timeout_ms)
        if len(self.timeouts) - 1 == self.ready_on:
            self.now += MS // 2
            return [(3, 1)]
        self.now += timeout_ms * MS
        return []

    def wait(self, until_ns: int, slice_ms: int = 200, done: object = None) -> bool:
        return beat_while_waiting(self, self.stop, until_ns, self.poll,  # type: ignore[arg-type]
                                  slice_ms, done, clock=self.clock)  # type: ignore[arg-type]


def test_the_wait_is_sliced_and_beats_before_each_slice() -> None:
    s = Scene()
    assert not s.wait(START + 500 * MS)
    assert s.timeouts == [200, 200, 100]  # the last slice ends on the deadline
    assert s.beats == [START, START + 200 * MS, START + 400 * MS, START + 500 * MS]


def test_something_to_read_ends_the_wait_with_true() -> None:
    s = Scene(ready_on=1)
    assert s.wait(START + 10_000 * MS)
    assert s.timeouts == [200, 200] and len(s.beats) == 2


def test_a_deadline_already_passed_beats_once_and_does_not_poll() -> None:
    s = Scene()
    assert not s.wait(START - 1)
    assert s.timeouts == [] and s.beats == [START]


def test_a_deadline_closer_than_a_millisecond_still_polls_one() -> None:
    s = Scene()
    assert not s.wait(START + MS // 3)
    assert s.timeouts == [1]


def test_a_stop_request_ends_the_wait_at_the_next_slice() -> None:
    s = Scene()
    polls = s.poll

    def poll_then_stop(timeout_ms: int) -> object:
        s.stop.request()  # as the SIGTERM handler does while the poll sleeps
        return polls(timeout_ms)

    assert not beat_while_waiting(s, s.stop, START + 10_000 * MS,  # type: ignore[arg-type]
                                  poll_then_stop, 200, clock=s.clock)
    assert s.timeouts == [200] and len(s.beats) == 2


def test_done_ends_the_wait_without_polling_again() -> None:
    s = Scene()
    calls = iter([False, False, True])
    assert not s.wait(START + 10_000 * MS, done=lambda: next(calls))
    assert s.timeouts == [200, 200] and len(s.beats) == 3

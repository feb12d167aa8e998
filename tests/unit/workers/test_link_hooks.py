"""PortLoop's optional medium hooks (flush, tick), with fakes (no sockets)."""

from __future__ import annotations

from etherws import probe
from etherws.runtime.signals import StopSignal
from etherws.tables import PortKind, PortTable, SlotView
from etherws.workers.link import Medium, PortLoop
from tests.unit.workers.test_link_counters import FakeBroker

FRAME = bytes(range(60))


class BufferingMedium(Medium):
    """Queues writes until flush; records ticks."""

    def __init__(self) -> None:
        self.queued: list[bytes] = []
        self.flushed: list[list[bytes]] = []
        self.ticks: list[int] = []

    def fileno(self) -> int:
        return -1

    def read_batch(self, max_frames: int) -> list[bytes]:
        return []

    def write(self, frame: bytes | memoryview) -> bool:
        self.queued.append(bytes(frame))
        return True

    def take_counts(self) -> tuple[int, int]:
        return 0, 0

    def close(self) -> None:
        pass

    def flush(self) -> None:
        self.flushed.append(self.queued)
        self.queued = []

    def tick(self, now_ns: int) -> None:
        self.ticks.append(now_ns)


def make_loop(medium: BufferingMedium, frames: list[bytes]) -> tuple[PortLoop, PortTable]:
    table = PortTable.format(bytearray(PortTable.size(2)), 2)
    table.claim(1, 3, PortKind.CLIENT)
    broker = FakeBroker()
    broker.put(frames)
    loop = PortLoop(medium, broker.link(), SlotView(table, 1), StopSignal(wake=False))
    return loop, table


def test_the_frames_of_one_wakeup_are_flushed_together() -> None:
    medium = BufferingMedium()
    loop, table = make_loop(medium, [FRAME] * 4)
    loop.downstream()
    assert medium.flushed == [[FRAME] * 4]  # one send for the wake-up, not one per frame
    assert table.read(1).tx == 4


def test_tick_runs_the_medium_timers_after_the_heartbeat() -> None:
    medium = BufferingMedium()
    loop, table = make_loop(medium, [])
    loop.tick(42)
    assert medium.ticks == [42] and table.read(1).heartbeat_ns == 42


def test_media_without_hooks_get_no_op_defaults() -> None:
    class Plain(Medium):
        def fileno(self) -> int:
            return -1

    plain = Plain()
    assert not plain.pending_input() and not plain.pending_output() and plain.has_room()
    plain.flush()
    plain.tick(1)
    assert not plain.start_probe(1514, 1) and plain.probe_tick(1) is None


class ProbingMedium(BufferingMedium):
    """Probes that end after ``rounds`` ticks with a fixed result."""

    def __init__(self, rounds: int) -> None:
        super().__init__()
        self.rounds = rounds
        self.started: list[int] = []
        self.left = 0

    def start_probe(self, size: int, now_ns: int) -> bool:
        self.started.append(size)
        self.left = self.rounds
        return True

    def probe_tick(self, now_ns: int) -> probe.Result | None:
        self.left -= 1
        if self.left > 0:
            return None
        return probe.Result(probe.Code.ANSWERED, self.started[-1], 0.001, 0.001,
                            self.started[-1], (), 9014)


def test_a_probe_request_is_served_on_the_tick_and_published() -> None:
    medium = ProbingMedium(rounds=2)
    loop, table = make_loop(medium, [])
    loop.tick(1)
    assert medium.started == []
    ticket = table.request_probe(1, 1514)
    loop.tick(2)  # starts
    assert medium.started == [1514] and table.probe(1).done != ticket
    loop.tick(3)
    assert table.probe(1).done != ticket
    loop.tick(4)
    words = table.probe(1)
    assert words.done == ticket
    result = probe.from_words(1514, words.rtt, words.largest, words.flags)
    assert result is not None and result.largest == 1514 and result.far_max == 9014
    loop.tick(5)
    assert medium.started == [1514]  # served once


def test_a_newer_request_replaces_the_running_probe() -> None:
    medium = ProbingMedium(rounds=3)
    loop, table = make_loop(medium, [])
    table.request_probe(1, 1514)
    loop.tick(1)
    ticket = table.request_probe(1, 9014)
    loop.tick(2)
    assert medium.started == [1514, 9014]
    for now in (3, 4, 5):
        loop.tick(now)
    assert table.probe(1).done == ticket and table.probe(1).largest == 9014


def test_a_medium_that_cannot_probe_answers_unsupported() -> None:
    medium = BufferingMedium()
    loop, table = make_loop(medium, [])
    ticket = table.request_probe(1, 1514)
    loop.tick(1)
    words = table.probe(1)
    assert words.done == ticket
    result = probe.from_words(1514, words.rtt, words.largest, words.flags)
    assert result is not None and result.code is probe.Code.UNSUPPORTED

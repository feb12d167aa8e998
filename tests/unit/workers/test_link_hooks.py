"""PortLoop's optional medium hooks (flush, tick), with fakes (no sockets)."""

from __future__ import annotations

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

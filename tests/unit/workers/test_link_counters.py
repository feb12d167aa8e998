"""The worker loop's accounting, with a fake medium and a fake broker link (no sockets)."""

from __future__ import annotations

import pytest

from etherws import ipc
from etherws.runtime.signals import StopSignal
from etherws.tables import BrokerView, PortKind, PortTable, SlotView
from etherws.workers.coalesce import HOLD_S
from etherws.workers.link import (
    RECV_BATCHES_PER_WAKEUP,
    Medium,
    MediumClosed,
    PortLoop,
    split_valid,
)

FRAME = bytes(range(60))


class FakeMedium(Medium):
    """Frames to hand out, frames written, a write verdict, counts of its own."""

    def __init__(self, inbound: list[bytes], accept: bool = True) -> None:
        self.inbound = inbound
        self.written: list[bytes] = []
        self.accept = accept
        self.counts = (0, 0)
        self.slept: list[float] = []
        self.arriving: list[bytes] = []  # inbound once PortLoop has slept
        self.closed_after: int | None = None  # read_batch calls before MediumClosed

    def fileno(self) -> int:
        return -1

    def read_batch(self, max_frames: int) -> list[bytes]:
        if self.closed_after is not None:
            if self.closed_after == 0:
                raise MediumClosed("gone")
            self.closed_after -= 1
        batch, self.inbound = self.inbound[:max_frames], self.inbound[max_frames:]
        return batch

    def write(self, frame: bytes) -> bool:
        if self.accept:
            self.written.append(frame)
        return self.accept

    def take_counts(self) -> tuple[int, int]:
        counts, self.counts = self.counts, (0, 0)
        return counts

    def close(self) -> None:
        pass

    def sleep(self, seconds: float) -> None:
        """PortLoop's sleep while it holds a batch back: frames arrive meanwhile."""
        self.slept.append(seconds)
        self.inbound += self.arriving
        self.arriving = []


class FakeLink:
    """The broker side: messages sent, messages waiting, a send verdict."""

    def __init__(self, waiting: list[bytes] | None = None, accept: bool = True) -> None:
        self.sent: list[bytes] = []
        self.waiting = list(waiting or [])
        self.accept = accept

    def send(self, message: bytes) -> bool:
        if self.accept:
            self.sent.append(message)
        return self.accept

    def recv(self) -> bytes | None:
        return self.waiting.pop(0) if self.waiting else None


NOW_NS = 10**12
"""The clock of these tests stands still: "right after a send" holds by construction."""


def make_loop(medium: FakeMedium, link: FakeLink) -> tuple[PortLoop, PortTable]:
    table = PortTable.format(bytearray(PortTable.size(4)), 4)
    table.claim(2, 7, PortKind.TAP)
    loop = PortLoop(medium, link, SlotView(table, 2), StopSignal(wake=False),  # type: ignore[arg-type]
                    clock=lambda: NOW_NS, sleep=medium.sleep)
    return loop, table


def test_upstream_sends_one_bounded_batch_and_counts_it() -> None:
    medium = FakeMedium([FRAME] * (ipc.MAX_BATCH_FRAMES + 5))
    link = FakeLink()
    loop, table = make_loop(medium, link)
    loop.upstream()
    assert [ipc.unpack(m) for m in link.sent] == [[FRAME] * ipc.MAX_BATCH_FRAMES]
    s = table.read(2)
    assert (s.rx, s.rx_bytes) == (ipc.MAX_BATCH_FRAMES, ipc.MAX_BATCH_FRAMES * len(FRAME))
    loop.upstream()
    assert table.read(2).rx == ipc.MAX_BATCH_FRAMES + 5


def test_a_partial_batch_of_a_stream_waits_once_for_more() -> None:
    medium = FakeMedium([FRAME] * 2)
    link = FakeLink()
    loop, table = make_loop(medium, link)
    loop.upstream()  # the first batch: nothing flowing yet, sent at once
    assert medium.slept == [] and len(link.sent) == 1
    medium.inbound, medium.arriving = [FRAME], [FRAME] * 4
    loop.upstream()  # right after a send: held, then the 4 that came meanwhile join
    assert medium.slept == [HOLD_S]
    assert [len(ipc.unpack(m)) for m in link.sent] == [2, 5]
    assert table.read(2).rx == 7


def test_a_full_batch_is_never_held() -> None:
    medium = FakeMedium([FRAME] * (2 * ipc.MAX_BATCH_FRAMES))
    loop, _ = make_loop(medium, FakeLink())
    loop.upstream()
    loop.upstream()
    assert medium.slept == []


def test_frames_read_before_the_medium_ends_during_a_hold_still_go() -> None:
    medium = FakeMedium([FRAME])
    link = FakeLink()
    loop, table = make_loop(medium, link)
    loop.upstream()
    medium.inbound, medium.closed_after = [FRAME] * 3, 1  # the read after the hold fails
    with pytest.raises(MediumClosed):
        loop.upstream()
    assert medium.slept == [HOLD_S] and table.read(2).rx == 4
    assert [len(ipc.unpack(m)) for m in link.sent] == [1, 3]


def test_upstream_batch_refused_by_the_link_is_dropped() -> None:
    loop, table = make_loop(FakeMedium([FRAME] * 3), FakeLink(accept=False))
    loop.upstream()
    s = table.read(2)
    assert (s.rx, s.drops, s.errors) == (0, 3, 0)


def test_frames_the_data_plane_cannot_carry_are_errors() -> None:
    frames = [b"", b"x" * 13, b"x" * 14, b"x" * 65535, b"x" * 65536]
    assert split_valid(frames) == ([b"x" * 14, b"x" * 65535], 3)
    link = FakeLink()
    loop, table = make_loop(FakeMedium(frames), link)
    loop.upstream()
    s = table.read(2)
    assert (s.rx, s.rx_bytes, s.errors) == (2, 14 + 65535, 3)


def test_nothing_readable_sends_nothing() -> None:
    link = FakeLink()
    loop, table = make_loop(FakeMedium([]), link)
    loop.upstream()
    assert link.sent == [] and table.read(2).rx == 0


def test_downstream_writes_and_counts_tx_drops_and_errors() -> None:
    waiting = [ipc.pack([FRAME, FRAME[:20]]), b"\x09garbage", ipc.pack([FRAME])]
    medium, link = FakeMedium([]), FakeLink(waiting)
    loop, table = make_loop(medium, link)
    loop.downstream()
    assert medium.written == [FRAME, FRAME[:20], FRAME]
    s = table.read(2)
    assert (s.tx, s.tx_bytes, s.errors, s.drops) == (3, 2 * len(FRAME) + 20, 1, 0)
    medium.accept = False
    link.waiting.append(ipc.pack([FRAME] * 4))
    loop.downstream()
    assert (table.read(2).tx, table.read(2).drops) == (3, 4)


def test_downstream_reads_a_bounded_number_of_batches() -> None:
    link = FakeLink([ipc.pack([FRAME])] * (RECV_BATCHES_PER_WAKEUP + 2))
    loop, table = make_loop(FakeMedium([]), link)
    loop.downstream()
    assert table.read(2).tx == RECV_BATCHES_PER_WAKEUP and len(link.waiting) == 2


def test_downstream_leaves_batches_queued_while_the_medium_has_no_room() -> None:
    medium = FakeMedium([])
    room = iter([True, True, False])
    medium.has_room = lambda: next(room)  # type: ignore[attr-defined]
    link = FakeLink([ipc.pack([FRAME])] * 4)
    loop, table = make_loop(medium, link)
    loop.downstream()
    assert table.read(2).tx == 2 and len(link.waiting) == 2  # left for the broker to hold


def test_a_pause_from_the_broker_is_read_from_the_slot() -> None:
    loop, table = make_loop(FakeMedium([]), FakeLink())
    assert loop.counters.hold_ns(1_000) == 0
    BrokerView(table).hold(2, 5_000)
    assert loop.counters.hold_ns(1_000) == 4_000
    assert loop.counters.hold_ns(5_000) == loop.counters.hold_ns(9_000) == 0


def test_counters_continue_what_the_slot_holds() -> None:
    """A restarted worker adds to its predecessor's counts."""
    loop, table = make_loop(FakeMedium([FRAME]), FakeLink())
    loop.upstream()
    again, _ = make_loop(FakeMedium([FRAME] * 2), FakeLink())
    again.counters = SlotView(table, 2)
    again.upstream()
    assert (table.read(2).rx, table.read(2).rx_bytes) == (3, 3 * len(FRAME))


@pytest.mark.parametrize("counts", [(0, 0), (2, 0), (0, 5), (1, 9)])
def test_tick_writes_the_heartbeat_and_the_medium_counts(counts: tuple[int, int]) -> None:
    medium = FakeMedium([])
    medium.counts = counts
    loop, table = make_loop(medium, FakeLink())
    loop.tick(123_456)
    s = table.read(2)
    assert (s.heartbeat_ns, s.errors, s.drops) == (123_456, *counts)
    loop.tick(223_456)
    assert (table.read(2).heartbeat_ns, table.read(2).errors) == (223_456, counts[0])

"""The worker loop's accounting, with a fake medium and real rings in a bytearray."""

from __future__ import annotations

import struct

import pytest

from etherws import ring
from etherws.loopguard import probe_frame
from etherws.ring import RingFile
from etherws.runtime.signals import StopSignal
from etherws.tables import BrokerView, PortKind, PortTable, SlotView
from etherws.workers.coalesce import HOLD_S
from etherws.workers.link import (
    RECV_BYTES_PER_WAKEUP,
    RECV_FRAMES_PER_WAKEUP,
    SEND_FRAMES_PER_WAKEUP,
    Medium,
    MediumClosed,
    PortLoop,
    RingLink,
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

    def write(self, frame: bytes | memoryview) -> bool:
        if self.accept:
            self.written.append(bytes(frame))
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


class FakeBell:
    """A doorbell that counts its rings."""

    def __init__(self) -> None:
        self.rings = 0

    def fileno(self) -> int:
        return -1

    def ring(self) -> None:
        self.rings += 1

    def drain(self) -> None:
        pass

    def close(self) -> None:
        pass


class FakeBroker:
    """The broker's side of a port's rings, in a bytearray."""

    def __init__(self, capacity: int = ring.MIN_CAPACITY) -> None:
        self.buf = bytearray(ring.file_size(capacity))
        RingFile.format(self.buf, 7, 1, capacity)
        self.file = RingFile(self.buf)
        self.sent: list[list[bytes]] = []  # what each take found in the up ring

    def link(self) -> RingLink:
        """The worker's side."""
        return RingLink(RingFile(self.buf), FakeBell(), FakeBell())

    def take(self) -> list[bytes]:
        frames = [bytes(f) for f in self.file.up.take(10_000)]
        self.file.up.release()
        return frames

    def put(self, frames: list[bytes]) -> None:
        for f in frames:
            assert self.file.down.put(f)
        self.file.down.commit()

    def queued(self) -> int:
        """Frames in the down ring the worker has not taken."""
        peek = RingFile(self.buf).down
        peek._tail = peek.tail
        return len(peek.take(10_000))


NOW_NS = 10**12
"""The clock of these tests stands still: "right after a send" holds by construction."""


def make_loop(medium: FakeMedium, broker: FakeBroker) -> tuple[PortLoop, PortTable]:
    table = PortTable.format(bytearray(PortTable.size(4)), 4)
    table.claim(2, 7, PortKind.TAP)
    loop = PortLoop(medium, broker.link(), SlotView(table, 2), StopSignal(wake=False),
                    clock=lambda: NOW_NS, sleep=medium.sleep)
    return loop, table


def test_upstream_sends_one_bounded_batch_and_counts_it() -> None:
    medium = FakeMedium([FRAME] * (SEND_FRAMES_PER_WAKEUP + 5))
    broker = FakeBroker()
    loop, table = make_loop(medium, broker)
    loop.upstream()
    assert broker.take() == [FRAME] * SEND_FRAMES_PER_WAKEUP
    s = table.read(2)
    assert (s.rx, s.rx_bytes) == (SEND_FRAMES_PER_WAKEUP, SEND_FRAMES_PER_WAKEUP * len(FRAME))
    loop.upstream()
    assert table.read(2).rx == SEND_FRAMES_PER_WAKEUP + 5
    assert broker.take() == [FRAME] * 5


def test_the_broker_is_rung_only_while_it_sleeps() -> None:
    broker = FakeBroker()
    medium = FakeMedium([FRAME] * 3)
    loop, _ = make_loop(medium, broker)
    rung = loop.link.broker_bell
    assert isinstance(rung, FakeBell)
    loop.upstream()
    assert rung.rings == 0  # busy broker: no wake-up call
    broker.file.up.arm(True)
    medium.inbound = [FRAME]
    loop.upstream()
    assert rung.rings == 1


def test_a_full_up_ring_drops_and_counts_what_does_not_fit() -> None:
    broker = FakeBroker()
    big = bytes(60000)
    loop, table = make_loop(FakeMedium([big] * 6), broker)
    loop.upstream()
    fit = ring.MIN_CAPACITY // ring.record_size(len(big))
    s = table.read(2)
    assert (s.rx, s.drops) == (fit, 6 - fit)
    assert not loop.link.can_send()
    broker.take()
    assert loop.link.can_send()


def test_a_partial_batch_of_a_stream_waits_once_for_more() -> None:
    medium = FakeMedium([FRAME] * 2)
    broker = FakeBroker()
    loop, table = make_loop(medium, broker)
    loop.upstream()  # the first batch: nothing flowing yet, sent at once
    assert medium.slept == [] and len(broker.take()) == 2
    medium.inbound, medium.arriving = [FRAME], [FRAME] * 4
    loop.upstream()  # right after a send: held, then the 4 that came meanwhile join
    assert medium.slept == [HOLD_S]
    assert len(broker.take()) == 5
    assert table.read(2).rx == 7


def test_a_full_batch_is_never_held() -> None:
    medium = FakeMedium([FRAME] * (2 * SEND_FRAMES_PER_WAKEUP))
    loop, _ = make_loop(medium, FakeBroker())
    loop.upstream()
    loop.upstream()
    assert medium.slept == []


def test_frames_read_before_the_medium_ends_during_a_hold_still_go() -> None:
    medium = FakeMedium([FRAME])
    broker = FakeBroker()
    loop, table = make_loop(medium, broker)
    loop.upstream()
    assert len(broker.take()) == 1
    medium.inbound, medium.closed_after = [FRAME] * 3, 1  # the read after the hold fails
    with pytest.raises(MediumClosed):
        loop.upstream()
    assert medium.slept == [HOLD_S] and table.read(2).rx == 4
    assert len(broker.take()) == 3


def test_frames_the_data_plane_cannot_carry_are_errors() -> None:
    frames = [b"", b"x" * 13, b"x" * 14, b"x" * 65535, b"x" * 65536]
    assert split_valid(frames) == ([b"x" * 14, b"x" * 65535], 3)
    broker = FakeBroker()
    loop, table = make_loop(FakeMedium(frames), broker)
    loop.upstream()
    s = table.read(2)
    assert (s.rx, s.rx_bytes, s.errors) == (2, 14 + 65535, 3)
    assert broker.take() == [b"x" * 14, b"x" * 65535]


def test_nothing_readable_sends_nothing() -> None:
    broker = FakeBroker()
    loop, table = make_loop(FakeMedium([]), broker)
    loop.upstream()
    assert broker.take() == [] and table.read(2).rx == 0


def test_downstream_writes_and_counts_tx_and_drops() -> None:
    medium, broker = FakeMedium([]), FakeBroker()
    broker.put([FRAME, FRAME[:20], FRAME])
    loop, table = make_loop(medium, broker)
    loop.downstream()
    assert medium.written == [FRAME, FRAME[:20], FRAME]
    s = table.read(2)
    assert (s.tx, s.tx_bytes, s.errors, s.drops) == (3, 2 * len(FRAME) + 20, 0, 0)
    medium.accept = False
    broker.put([FRAME] * 4)
    loop.downstream()
    assert (table.read(2).tx, table.read(2).drops) == (3, 4)
    assert broker.queued() == 0


def test_a_broken_down_ring_is_one_error_and_is_dropped() -> None:
    medium, broker = FakeMedium([]), FakeBroker()
    broker.put([FRAME, FRAME])
    struct.pack_into("<I", broker.file.down.data, ring.record_size(len(FRAME)),
                     ring.MIN_CAPACITY)
    loop, table = make_loop(medium, broker)
    loop.downstream()  # the good frame before it
    loop.downstream()  # the broken record: counted, the ring emptied
    assert medium.written == [FRAME]
    assert (table.read(2).tx, table.read(2).errors) == (1, 1)
    assert not loop.link.down.readable()
    broker.file.down._head = broker.file.down.head
    broker.put([FRAME])
    loop.downstream()
    assert table.read(2).tx == 2


def test_downstream_takes_a_bounded_number_of_frames() -> None:
    broker = FakeBroker()
    broker.put([FRAME] * (RECV_FRAMES_PER_WAKEUP + 2))
    loop, table = make_loop(FakeMedium([]), broker)
    loop.downstream()
    assert table.read(2).tx == RECV_FRAMES_PER_WAKEUP and broker.queued() == 2


def test_downstream_takes_a_bounded_number_of_bytes() -> None:
    broker = FakeBroker(capacity=4 * RECV_BYTES_PER_WAKEUP)
    big = bytes(60000)
    n = RECV_BYTES_PER_WAKEUP // len(big)
    broker.put([big] * (n + 2))
    loop, table = make_loop(FakeMedium([]), broker)
    loop.downstream()
    assert table.read(2).tx == n and broker.queued() == 2


def test_a_pause_from_the_broker_is_read_from_the_slot() -> None:
    loop, table = make_loop(FakeMedium([]), FakeBroker())
    assert loop.counters.hold_ns(1_000) == 0
    BrokerView(table).hold(2, 5_000)
    assert loop.counters.hold_ns(1_000) == 4_000
    assert loop.counters.hold_ns(5_000) == loop.counters.hold_ns(9_000) == 0


def test_counters_continue_what_the_slot_holds() -> None:
    """A restarted worker adds to its predecessor's counts."""
    loop, table = make_loop(FakeMedium([FRAME]), FakeBroker())
    loop.upstream()
    again, _ = make_loop(FakeMedium([FRAME] * 2), FakeBroker())
    again.counters = SlotView(table, 2)
    again.upstream()
    assert (table.read(2).rx, table.read(2).rx_bytes) == (3, 3 * len(FRAME))


@pytest.mark.parametrize("counts", [(0, 0), (2, 0), (0, 5), (1, 9)])
def test_tick_writes_the_heartbeat_and_the_medium_counts(counts: tuple[int, int]) -> None:
    medium = FakeMedium([])
    medium.counts = counts
    loop, table = make_loop(medium, FakeBroker())
    loop.tick(123_456)
    s = table.read(2)
    assert (s.heartbeat_ns, s.errors, s.drops) == (123_456, *counts)
    loop.tick(223_456)
    assert (table.read(2).heartbeat_ns, table.read(2).errors) == (223_456, counts[0])


class InPlaceMedium(FakeMedium):
    """A medium that reads straight into the ring, as the TAP medium does."""

    def read_into(self, ring_: ring.Ring, max_frames: int) -> tuple[int, int, int] | None:
        frames = nbytes = errors = 0
        for f in self.read_batch(max_frames):
            view = ring_.reserve(65536)
            assert view is not None
            if 14 <= len(f) <= 65535:
                view[:len(f)] = f
                ring_.put_reserved(len(f))
                frames, nbytes = frames + 1, nbytes + len(f)
            else:
                errors += 1
        return frames, nbytes, errors


def test_a_medium_that_reads_into_the_ring_is_counted_the_same() -> None:
    medium = InPlaceMedium([FRAME, b"x" * 5, FRAME[:30]])
    broker = FakeBroker()
    loop, table = make_loop(medium, broker)
    loop.upstream()
    assert broker.take() == [FRAME, FRAME[:30]]
    s = table.read(2)
    assert (s.rx, s.rx_bytes, s.errors) == (2, len(FRAME) + 30, 1)
    medium.inbound, medium.arriving = [FRAME], [FRAME] * 4
    loop.upstream()  # a flowing stream: held once, the 4 that came meanwhile join
    assert medium.slept == [HOLD_S] and len(broker.take()) == 5


def test_frames_read_into_the_ring_before_the_medium_ends_still_go() -> None:
    medium = InPlaceMedium([FRAME])
    broker = FakeBroker()
    loop, table = make_loop(medium, broker)
    loop.upstream()
    medium.inbound, medium.closed_after = [FRAME] * 3, 1  # the read after the hold fails
    with pytest.raises(MediumClosed):
        loop.upstream()
    assert broker.take() == [FRAME] * 4 and table.read(2).rx == 4


# --- frames with a virtio-net header -----------------------------------------------------
class OffloadMedium(FakeMedium):
    """A medium that takes super-frames: what it writes, with the header beside."""

    offload = True

    def __init__(self, inbound: list[bytes]) -> None:
        super().__init__(inbound)
        self.with_header: list[tuple[bytes, bytes]] = []

    def write_vnet(self, header: bytes | memoryview, frame: bytes | memoryview) -> bool:
        self.with_header.append((bytes(header), bytes(frame)))
        return True


def super_frame(size: int = 4000, mss: int = 1000) -> tuple[bytes, bytes]:
    """An IPv4 TCP super-frame and its header (checksums left to do)."""
    from etherws import gso
    ip = bytearray(b"\x45\0" + (20 + 20 + size).to_bytes(2, "big") + b"\0\x01\x40\0\x40\x06"
                   + b"\0\0" + bytes([192, 0, 2, 1, 192, 0, 2, 2]))
    tcp = bytearray(b"\x9c\x40\x14\x51" + bytes(8) + b"\x50\x18\xff\xff" + bytes(4))
    frame = b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01\x08\x00" + bytes(ip) + bytes(tcp) + bytes(size)
    h = gso.VnetHeader(gso.NEEDS_CSUM, gso.GSO_TCPV4, 54, mss, 34, 16)
    return frame, h.pack()


def put_with_header(broker: FakeBroker, frame: bytes, header: bytes) -> None:
    assert broker.file.down.put(header + frame, vnet=len(header))
    broker.file.down.commit()


def test_a_medium_without_offload_gets_a_super_frames_segments() -> None:
    from etherws import gso
    frame, header = super_frame(4000, 1000)
    broker = FakeBroker()
    medium = FakeMedium([])
    loop, table = make_loop(medium, broker)
    put_with_header(broker, frame, header)
    broker.put([FRAME])
    loop.downstream()
    assert medium.written == gso.segment(frame, gso.parse(header)) + [FRAME]
    s = table.read(2)
    assert s.tx == 5 and s.tx_bytes == sum(map(len, medium.written)) and s.errors == 0


def test_a_header_that_does_not_fit_its_frame_is_an_error_not_a_write() -> None:
    frame, _ = super_frame()
    broker = FakeBroker()
    medium = FakeMedium([])
    loop, table = make_loop(medium, broker)
    put_with_header(broker, frame, b"\x01\x01\x36\x00\xe8\x03\xff\xff\x10\x00")  # csum at 65535
    loop.downstream()
    assert medium.written == [] and table.read(2).errors == 1


def test_an_offload_medium_gets_each_frame_with_its_header() -> None:
    frame, header = super_frame()
    broker = FakeBroker()
    medium = OffloadMedium([])
    loop, table = make_loop(medium, broker)
    put_with_header(broker, frame, header)
    broker.put([FRAME])
    loop.downstream()
    assert medium.with_header == [(header, frame)]
    assert medium.written == [FRAME]  # a plain frame: the medium adds its zero header
    assert (table.read(2).tx, table.read(2).tx_bytes) == (2, len(frame) + len(FRAME))


def test_an_offload_medium_reads_go_up_behind_their_header() -> None:
    frame, header = super_frame()
    short = bytes(10) + bytes(13)  # a header and less than an Ethernet header
    medium = OffloadMedium([header + frame, short])
    broker = FakeBroker()
    loop, table = make_loop(medium, broker)
    loop.upstream()
    frames = broker.file.up.take(10)
    assert [bytes(f) for f in frames] == [frame]
    assert [bytes(h) for h in broker.file.up.headers.values()] == [header]
    s = table.read(2)
    assert (s.rx, s.rx_bytes, s.errors) == (1, len(frame), 1)  # headers not counted


def test_a_header_the_kernel_refuses_is_done_in_software() -> None:
    from etherws import gso
    from etherws.workers.link import write_segments
    frame, header = super_frame(3000, 1000)
    written: list[bytes] = []

    def write(f: bytes | memoryview) -> bool:
        written.append(bytes(f))
        return True

    assert write_segments(write, header, frame)
    assert written == gso.segment(frame, gso.parse(header))
    written.clear()
    assert not write_segments(write, gso.ZERO_HEADER, frame)  # nothing to do: refused
    assert not write_segments(write, header[:6] + b"\xff\xff" + header[8:], frame)
    assert written == []
    assert not write_segments(lambda f: False, header, frame)  # a segment dropped


def test_discard_drops_what_the_broker_queued_and_counts_all_but_the_probes() -> None:
    broker = FakeBroker()
    link = broker.link()
    broker.put([FRAME, probe_frame(99, 7, 1, False), FRAME, probe_frame(99, 7, 2, True)])
    assert link.discard() == 2
    assert broker.queued() == 0 and link.discard() == 0

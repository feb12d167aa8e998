"""etherws.ring: record layout, wrap-around, validation, crash resumption (pure, bytearrays)."""

from __future__ import annotations

import random
import struct
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from etherws import ring
from etherws.errors import EtherwsError
from etherws.ring import MIN_CAPACITY, Ring, RingError, RingFile

CAP = MIN_CAPACITY


def new_file(capacity: int = CAP, port: int = 3, generation: int = 7) -> bytearray:
    buf = bytearray(ring.file_size(capacity))
    RingFile.format(buf, port, generation, capacity)
    return buf


def frame(i: int, size: int) -> bytes:
    """A frame whose bytes say which one it is."""
    return (i.to_bytes(4, "big") * (size // 4 + 1))[:size]


def test_a_new_file_carries_its_port_generation_and_capacity() -> None:
    f = RingFile(new_file(port=9, generation=0xABCDEF))
    assert (f.port, f.generation, f.capacity) == (9, 0xABCDEF, CAP)
    assert f.up.head == f.up.tail == 0 and not f.up.readable()
    assert not f.up.armed and not f.up.waiting


@pytest.mark.parametrize("capacity", [MIN_CAPACITY // 2, MIN_CAPACITY + 8, 3 * MIN_CAPACITY])
def test_a_capacity_that_is_not_a_large_power_of_two_is_refused(capacity: int) -> None:
    with pytest.raises(RingError, match="power of two"):
        RingFile.format(bytearray(ring.file_size(capacity)), 1, 1, capacity)


def test_a_buffer_that_is_not_a_ring_file_is_refused() -> None:
    with pytest.raises(RingError, match="too short"):
        RingFile(bytearray(100))
    with pytest.raises(RingError, match="version"):
        RingFile(bytearray(ring.file_size(CAP)))
    short = new_file()[:ring.file_size(CAP) - 8]
    with pytest.raises(RingError, match="shorter"):
        RingFile(short)
    with pytest.raises(RingError, match="non-zero"):
        RingFile.format(bytearray(ring.file_size(CAP)), 1, 0, CAP)
    assert issubclass(RingError, EtherwsError)


def test_the_up_and_down_rings_are_separate() -> None:
    f = RingFile(new_file())
    assert f.up.put(b"u" * 60)
    f.up.commit()
    assert not f.down.readable()
    assert [bytes(m) for m in f.up.take(10)] == [b"u" * 60]


def test_records_are_invisible_until_committed_and_kept_until_released() -> None:
    buf = new_file()
    producer, consumer = RingFile(buf).up, RingFile(buf).up  # two processes' views
    assert producer.put(b"a" * 64) and producer.put(b"b" * 65)
    assert producer.pending() and not consumer.readable()
    producer.commit()
    assert not producer.pending() and consumer.readable()
    assert [bytes(m) for m in consumer.take(1)] == [b"a" * 64]
    assert [bytes(m) for m in consumer.take(5)] == [b"b" * 65]
    assert producer.room() == CAP - ring.record_size(64) - ring.record_size(65)
    consumer.release()
    assert producer.room() == CAP


def test_records_are_eight_byte_aligned_with_their_length_in_the_header() -> None:
    buf = new_file()
    r = RingFile(buf).up
    r.put(b"x" * 61)
    r.put(b"y" * 14)
    r.commit()
    data = RingFile(buf).up.data
    assert struct.unpack_from("<IHH", data, 0) == (61, 0, 0)
    assert struct.unpack_from("<IHH", data, ring.record_size(61)) == (14, 0, 0)
    assert ring.record_size(61) == 72 and r.head == 72 + 24


def test_a_full_ring_refuses_and_takes_again_after_release() -> None:
    buf = new_file()
    producer, consumer = RingFile(buf).up, RingFile(buf).up
    size = 1500
    n = 0
    while producer.put(frame(n, size)):
        n += 1
    assert n == CAP // ring.record_size(size)
    producer.commit()
    got = consumer.take(n + 5)
    assert [bytes(g) for g in got] == [frame(i, size) for i in range(n)]
    assert not producer.put(frame(n, size))  # taken, not released: still no room
    consumer.release()
    assert producer.put(frame(n, size))


def test_a_record_that_does_not_fit_before_the_end_wraps_behind_padding() -> None:
    buf = new_file()
    producer, consumer = RingFile(buf).up, RingFile(buf).up
    big = 60000
    rs = ring.record_size(big)
    for i in range(5):  # the fifth cannot fit at the end: padding, then offset 0
        assert producer.put(frame(i, big))
        producer.commit()
        assert [bytes(m) for m in consumer.take(4)] == [frame(i, big)]
        consumer.release()
    assert producer.head == 4 * rs + (CAP - 4 * rs) + rs
    flags = struct.unpack_from("<IHH", consumer.data, 4 * rs)[1]
    assert flags == ring.PAD


def test_frames_larger_than_the_largest_payload_are_refused() -> None:
    r = RingFile(new_file()).up
    assert not r.put(b"z" * (ring.MAX_PAYLOAD + 1))
    assert r.put(b"z" * ring.MAX_PAYLOAD)


def test_room_for_counts_the_padding_a_wrap_needs() -> None:
    buf = new_file()
    producer, consumer = RingFile(buf).up, RingFile(buf).up
    for _ in range((CAP - 4096) // 1024):  # head 4096 bytes before the end
        assert producer.put(b"q" * (1024 - ring.HDR))
    producer.commit()
    consumer.take(10)
    consumer.release()  # 10 records free at the start
    assert producer.room() == 4096 + 10 * 1024
    assert producer.room_for(8192 - ring.HDR)  # pads the 4096, then 8192 of 10240
    assert not producer.room_for(10240)  # the room would take it, the padding not
    assert not producer.put(b"r" * 10240)
    assert producer.put(b"r" * (8192 - ring.HDR))


def test_a_hostile_tail_leaves_the_producer_no_room() -> None:
    buf = new_file()
    producer, consumer = RingFile(buf).down, RingFile(buf).down
    producer.put(b"f" * 100)
    producer.commit()
    consumer._tail = 10**9  # what a compromised worker could publish
    consumer.release()
    assert producer.room() == 0
    # Its cached view of the tail is all it uses: it fills at most the ring, never more.
    puts = 0
    while producer.put(b"g" * 100):
        puts += 1
    assert puts < CAP // ring.record_size(100)


def _corrupt(mutate: object) -> list[memoryview] | None:
    buf = new_file()
    producer = RingFile(buf).up
    producer.put(b"h" * 100)
    producer.put(b"i" * 100)
    producer.commit()
    assert callable(mutate)
    mutate(buf, producer)
    consumer = RingFile(buf).up
    return consumer.take(10)


@pytest.mark.parametrize("mutate, message", [
    (lambda buf, p: p._set(ring.HEAD, CAP + 1), "out of range"),
    (lambda buf, p: p._set(ring.HEAD, 2**64 - 8), "out of range"),
    (lambda buf, p: struct.pack_into("<I", buf, ring.DATA_OFFSET, CAP), "runs past"),
    (lambda buf, p: struct.pack_into("<I", buf, ring.DATA_OFFSET, 2000), "runs past"),
    (lambda buf, p: struct.pack_into("<HH", buf, ring.DATA_OFFSET + 4, 0, 200), "header"),
    (lambda buf, p: struct.pack_into("<HH", buf, ring.DATA_OFFSET + 4, ring.PAD, 0),
     "padding"),
])
def test_a_ring_holding_invalid_records_raises_instead_of_reading_past_them(
        mutate: object, message: str) -> None:
    with pytest.raises(RingError, match=message):
        _corrupt(mutate)


def test_resync_drops_everything_published() -> None:
    buf = new_file()
    producer, consumer = RingFile(buf).up, RingFile(buf).up
    producer.put(b"j" * 100)
    producer.commit()
    struct.pack_into("<I", buf, ring.DATA_OFFSET, CAP)
    with pytest.raises(RingError):
        consumer.take(5)
    assert consumer.resync() == ring.record_size(100)
    assert not consumer.readable() and producer.room() == CAP
    producer.put(b"k" * 50)
    producer.commit()
    assert [bytes(m) for m in consumer.take(5)] == [b"k" * 50]


@given(st.integers(0, 2**32), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
@settings(max_examples=300, deadline=None)
def test_any_bytes_and_indices_give_frames_inside_the_ring_or_ring_error(
        seed: int, head: int, tail: int) -> None:
    buf = new_file()
    noise = random.Random(seed)
    for off in range(ring.DATA_OFFSET, len(buf), 4096):  # headers with small lengths too
        buf[off:off + 4096] = noise.randbytes(4096)
        struct.pack_into("<I", buf, off + noise.randrange(0, 4096 - 8, 8),
                         noise.randrange(0, 3000))
    f = RingFile(buf)
    f.up._set(ring.HEAD, head)
    f.up._set(ring.TAIL, tail)
    consumer = RingFile(buf).up
    try:
        frames = consumer.take(64)
    except RingError:
        consumer.resync()
        assert not consumer.readable()
        return
    assert len(frames) <= 64
    for m in frames:
        assert len(m) <= ring.MAX_PAYLOAD + 8
        assert m.obj is not None  # a view into the ring, never past its data area


def test_arm_and_waiting_are_the_consumers_and_producers_words() -> None:
    buf = new_file()
    producer, consumer = RingFile(buf).down, RingFile(buf).down
    consumer.arm(True)
    producer.wait_for_room(True)
    assert producer.armed and consumer.waiting
    consumer.arm(False)
    producer.wait_for_room(False)
    assert not producer.armed and not consumer.waiting


class ProducerConsumer(RuleBasedStateMachine):
    """Any interleaving of puts, commits, takes, releases and crashes of either side."""

    def __init__(self) -> None:
        super().__init__()
        self.buf = new_file()
        self.producer: Ring = RingFile(self.buf).up
        self.consumer: Ring = RingFile(self.buf).up
        self.next = 0
        self.put_uncommitted: list[bytes] = []
        self.committed: deque[bytes] = deque()  # published, not released
        self.taken = 0  # how many of `committed` the consumer holds (not released)
        self.delivered: list[bytes] = []

    @rule(size=st.integers(4, 20000))
    def put(self, size: int) -> None:
        f = frame(self.next, size)
        if self.producer.put(f):
            self.put_uncommitted.append(f)
            self.next += 1

    @rule(size=st.integers(4, 20000), reserve=st.integers(0, 40000))
    def put_in_place(self, size: int, reserve: int) -> None:
        # a read straight into the ring: reserve the most a read may bring, fill less
        view = self.producer.reserve(max(size, reserve))
        if view is None:
            return
        f = frame(self.next, size)
        view[:size] = f
        self.producer.put_reserved(size)
        self.put_uncommitted.append(f)
        self.next += 1

    @rule(sizes=st.lists(st.integers(4, 30000), max_size=5))
    def put_many(self, sizes: list[int]) -> None:
        frames = [frame(self.next + i, size) for i, size in enumerate(sizes)]
        n = self.producer.put_many(frames)
        assert n == len(frames) or not self.producer.room_for(sizes[n])
        self.put_uncommitted += frames[:n]
        self.next += n

    @rule()
    def commit(self) -> None:
        self.producer.commit()
        self.committed.extend(self.put_uncommitted)
        self.put_uncommitted.clear()

    @rule(n=st.integers(1, 8))
    def take(self, n: int) -> None:
        got = [bytes(m) for m in self.consumer.take(n)]
        expect = list(self.committed)[self.taken:self.taken + n]
        assert got == expect
        self.taken += len(got)

    @rule()
    def release(self) -> None:
        self.consumer.release()
        for _ in range(self.taken):
            self.delivered.append(self.committed.popleft())
        self.taken = 0

    @rule()
    def producer_crashes(self) -> None:
        # Killed at any point: what was put but not committed is lost; nothing else.
        self.producer = RingFile(self.buf).up
        self.put_uncommitted.clear()

    @rule()
    def consumer_crashes(self) -> None:
        # Resumes at the published tail: what it took but had not released comes again.
        self.consumer = RingFile(self.buf).up
        self.taken = 0

    @invariant()
    def delivered_in_order_without_gaps(self) -> None:
        ids = [int.from_bytes(f[:4], "big") for f in self.delivered]
        assert ids == sorted(set(ids))

    @invariant()
    def room_matches_what_is_held(self) -> None:
        used = self.producer._head - self.consumer.tail
        assert 0 <= used <= CAP
        assert self.producer.room() == CAP - used


TestProducerConsumer = ProducerConsumer.TestCase
TestProducerConsumer.settings = settings(max_examples=200, stateful_step_count=60,
                                         deadline=None)


def test_good_records_before_a_broken_one_come_first_then_the_error() -> None:
    buf = new_file()
    producer, consumer = RingFile(buf).up, RingFile(buf).up
    producer.put(b"a" * 100)
    producer.put(b"b" * 100)
    producer.put(b"c" * 100)
    producer.commit()
    struct.pack_into("<I", buf, ring.DATA_OFFSET + 2 * ring.record_size(100), CAP)
    assert [bytes(m) for m in consumer.take(10)] == [b"a" * 100, b"b" * 100]
    with pytest.raises(RingError, match="runs past"):
        consumer.take(10)
    consumer.resync()
    assert not consumer.readable()


def test_take_stops_at_its_byte_budget_but_always_takes_one() -> None:
    buf = new_file()
    producer, consumer = RingFile(buf).up, RingFile(buf).up
    for i in range(5):
        producer.put(frame(i, 1000))
    producer.commit()
    assert len(consumer.take(10, max_bytes=2500)) == 2
    assert len(consumer.take(10, max_bytes=10)) == 1
    assert len(consumer.take(10)) == 2


def test_a_record_read_in_place_is_put_with_the_length_read() -> None:
    buf = new_file()
    producer, consumer = RingFile(buf).up, RingFile(buf).up
    view = producer.reserve(65536)
    assert view is not None and len(view) == 65536
    view[:100] = b"p" * 100
    producer.put_reserved(100)
    producer.commit()
    assert [bytes(m) for m in consumer.take(5)] == [b"p" * 100]
    assert producer.head == ring.record_size(100)


def test_reserve_pads_to_the_start_and_refuses_when_full() -> None:
    buf = new_file()
    producer, consumer = RingFile(buf).up, RingFile(buf).up
    for _ in range((CAP - 4096) // 1024):
        assert producer.put(b"q" * (1024 - ring.HDR))
    producer.commit()
    assert producer.reserve(65536) is None  # 4096 at the end, nothing released
    consumer.take(1000)
    consumer.release()
    view = producer.reserve(65536)  # the end padded, the record at offset 0
    assert view is not None
    view[:14] = b"w" * 14
    producer.put_reserved(14)
    producer.commit()
    assert [bytes(m) for m in consumer.take(5)] == [b"w" * 14]
    assert producer.head == CAP + ring.record_size(14)
    assert producer.reserve(ring.MAX_PAYLOAD + 1) is None


def test_put_many_puts_until_one_does_not_fit() -> None:
    buf = new_file()
    producer, consumer = RingFile(buf).up, RingFile(buf).up
    frames = [frame(i, 60000) for i in range(6)]
    n = producer.put_many(frames)
    assert n == CAP // ring.record_size(60000)
    producer.commit()
    assert [bytes(m) for m in consumer.take(10)] == frames[:n]
    consumer.release()
    assert producer.put_many(frames[n:]) == len(frames) - n  # wraps behind padding
    assert producer.put_many([bytes(ring.MAX_PAYLOAD + 1)]) == 0


# --- records with a virtio-net header ---------------------------------------------------
HDR10 = bytes(range(1, 11))


def test_a_record_with_a_header_hands_out_the_frame_and_the_header_beside_it() -> None:
    f = RingFile(new_file())
    assert f.up.put(HDR10 + frame(1, 100), vnet=10)
    assert f.up.put(frame(2, 60))
    f.up.commit()
    frames = f.up.take(8)
    assert [bytes(x) for x in frames] == [frame(1, 100), frame(2, 60)]
    assert {k: bytes(v) for k, v in f.up.headers.items()} == {id(frames[0]): HDR10}
    del frames
    f.up.release()
    assert f.up.headers == {}


def test_put_many_copies_each_frames_header_in_front_of_it() -> None:
    src, dst = RingFile(new_file()), RingFile(new_file())
    src.up.put(HDR10 + frame(1, 3000), vnet=10)
    src.up.put(frame(2, 70))
    src.up.put(bytes(10) + frame(3, 64), vnet=10)
    src.up.commit()
    frames = src.up.take(8)
    extra = b"a rewritten frame"  # bytes among the views: plain unless given a header
    assert dst.down.put_many(frames + [extra], src.up.headers) == 4
    dst.down.commit()
    got = dst.down.take(8)
    assert [bytes(x) for x in got] == [frame(1, 3000), frame(2, 70), frame(3, 64), extra]
    headers = {got.index(v): bytes(h) for v in got for k, h in dst.down.headers.items()
               if k == id(v)}
    assert headers == {0: HDR10, 2: bytes(10)}


def test_put_many_with_headers_stops_at_the_first_record_that_does_not_fit() -> None:
    f = RingFile(new_file())
    big = frame(9, 60000)
    views = [memoryview(big) for _ in range(6)]
    headers = {id(v): memoryview(HDR10) for v in views}
    assert f.down.put_many(views, headers) == 4  # 4 x 60018 of 262144 bytes
    f.down.commit()
    assert len(f.down.take(8)) == 4


def test_a_header_longer_than_its_record_is_refused_on_both_sides() -> None:
    f = RingFile(new_file())
    assert not f.up.put(b"short", vnet=10)
    buf = new_file()
    g = RingFile(buf)
    g.up.put(frame(1, 40))
    g.up.commit()
    struct.pack_into("<H", buf, ring.DATA_OFFSET + 6, 41)  # a worker lying about it
    with pytest.raises(RingError, match="header"):
        g.up.take(8)


def test_put_reserved_marks_the_header_read_in_front_of_the_frame() -> None:
    f = RingFile(new_file())
    view = f.up.reserve(2000)
    assert view is not None
    view[:10] = HDR10
    view[10:110] = frame(4, 100)
    del view
    f.up.put_reserved(110, vnet=10)
    f.up.commit()
    frames = f.up.take(1)
    assert bytes(frames[0]) == frame(4, 100)
    assert [bytes(h) for h in f.up.headers.values()] == [HDR10]

"""The coalescing policy: which batches wait for more frames, and for how long."""

from __future__ import annotations

import pytest

from etherws.workers.coalesce import FULL_ENOUGH, HOLD_S, STREAM_GAP_S, Coalescer


def test_defaults_hold_partial_batches_of_a_stream_briefly() -> None:
    c = Coalescer()
    c.sent(10.0)
    assert c.hold_s(1, 10.0 + STREAM_GAP_S / 2) == HOLD_S == 200e-6
    assert c.hold_s(FULL_ENOUGH, 10.0) == 0.0


def test_the_first_batch_is_never_held() -> None:
    assert Coalescer().hold_s(1, 0.0) == 0.0


@pytest.mark.parametrize(("frames", "since_sent", "held"), [
    (0, 0.0, False),       # nothing read: nothing to hold
    (1, 0.0, True),
    (3, 0.0009, True),     # just inside the stream gap
    (15, 0.0005, True),
    (16, 0.0005, False),   # full enough
    (64, 0.0, False),
    (1, 0.001, False),     # a pause as long as the gap: light traffic, no wait
    (1, 5.0, False),
])
def test_hold_depends_on_batch_size_and_the_last_send(frames: int, since_sent: float,
                                                     held: bool) -> None:
    c = Coalescer(hold_s=0.25, stream_gap_s=0.001, full_enough=16)
    c.sent(100.0)
    assert c.hold_s(frames, 100.0 + since_sent) == (0.25 if held else 0.0)


def test_each_send_restarts_the_stream_gap() -> None:
    c = Coalescer(hold_s=0.1, stream_gap_s=1.0, full_enough=4)
    c.sent(0.0)
    assert c.hold_s(1, 2.0) == 0.0
    c.sent(2.0)
    assert c.hold_s(1, 2.5) == 0.1


def test_a_batch_of_many_bytes_is_full_whatever_its_frame_count() -> None:
    from etherws.workers.coalesce import FULL_ENOUGH_BYTES
    c = Coalescer()
    c.sent(1.0)
    assert c.hold_s(1, 1.0001, 1514) == HOLD_S  # one wire frame of a stream: waits
    assert c.hold_s(1, 1.0001, 65000) == 0.0    # one super-frame: goes
    assert c.hold_s(2, 1.0001, FULL_ENOUGH_BYTES) == 0.0
    assert c.hold_s(2, 1.0001, FULL_ENOUGH_BYTES - 1) == HOLD_S

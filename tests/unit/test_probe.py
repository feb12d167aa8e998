"""The path probe's messages, plan and result (etherws.probe), with ``now`` passed in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etherws import probe
from etherws.frame import MAX_FRAME
from etherws.probe import Code, Prober, ProbeError, Reply, Result


# --- messages ------------------------------------------------------------------------
@pytest.mark.parametrize("size", [64, 65, 1514, 9014, MAX_FRAME])
def test_a_probe_is_exactly_its_size_and_parses_back(size: int) -> None:
    data = probe.encode_probe(7, size)
    assert len(data) == size
    assert data.startswith(b"etherws-probe/1 7 %d " % size)
    assert probe.parse_probe(data) == probe.Probe(7, size, size)


@pytest.mark.parametrize("size", [0, 63, MAX_FRAME + 1])
def test_a_probe_size_out_of_range_is_refused(size: int) -> None:
    with pytest.raises(ProbeError):
        probe.encode_probe(1, size)
    with pytest.raises(ProbeError):
        Prober(size, 0.0)


def test_a_probe_id_out_of_range_is_refused() -> None:
    with pytest.raises(ProbeError):
        probe.encode_probe(-1, 64)
    with pytest.raises(ProbeError):
        probe.encode_probe(10 ** 10, 64)
    assert probe.parse_probe(probe.encode_probe(10 ** 10 - 1, 64)) is not None


def test_a_cut_probe_says_what_arrived() -> None:
    data = probe.encode_probe(3, 1514)[:1000]
    assert probe.parse_probe(data) == probe.Probe(3, 1514, 1000)


@pytest.mark.parametrize("data", [
    b"", b"hello", b"etherws-probe/1", b"etherws-probe/1 ", b"etherws-probe/1 1",
    b"etherws-probe/2 1 64".ljust(64), b"etherws-probe/1  1 64".ljust(64),
    b"etherws-probe/1 x 64".ljust(64), b"etherws-probe/1 1 -64".ljust(64),
    b"etherws-probe/1 1 +64".ljust(64), b"etherws-probe/1 01 64".ljust(64),
    b"etherws-probe/1 1 64x".ljust(64), b"etherws-probe/1 1 64 junk".ljust(64),
    b"etherws-probe/1 1 64".ljust(63) + b"x", b"etherws-probe/1 1 64".ljust(64, b"\t"),
    b"etherws-probe/1 12345678901 64".ljust(64), b"etherws-probe/1 1 " + b"9" * 60,
    b"etherws-probe-reply/1 1 64 65535",
])
def test_other_text_is_not_a_probe(data: bytes) -> None:
    assert probe.parse_probe(data) is None
    assert probe.answer(data, 1514) is None


def test_the_far_side_answers_with_what_arrived_and_its_max() -> None:
    reply = probe.answer(probe.encode_probe(9, 2000), 1514)
    assert reply == b"etherws-probe-reply/1 9 2000 1514"
    assert probe.parse_reply(reply) == Reply(9, 2000, 1514)


@pytest.mark.parametrize("data", [
    b"", b"etherws-probe-reply/1", b"etherws-probe-reply/1 1 2", b"etherws-probe-reply/1 1 2 3 4",
    b"etherws-probe-reply/1 1 2 x", b"etherws-probe-reply/1 1  2 3", b"etherws-probe-reply/2 1 2 3",
    b"etherws-probe-reply/1 1 2 3 ", b"etherws-probe-reply/1 1 2 " + b"3" * 70,
    probe.encode_probe(1, 64),
])
def test_malformed_replies_are_not_replies(data: bytes) -> None:
    assert probe.parse_reply(data) is None


# --- the ladder ----------------------------------------------------------------------
@pytest.mark.parametrize("asked, far_max, sizes", [
    (64, MAX_FRAME, (64,)),
    (1000, MAX_FRAME, (1000,)),
    (1514, MAX_FRAME, (1514,)),
    (9014, MAX_FRAME, (1514, 4096, 9014)),
    (9014, 2000, (1514, 2000)),
    (9014, 1514, (1514,)),
    (9014, 1000, (1000,)),
    (MAX_FRAME, MAX_FRAME, (1514, 4096, 9014, 16384, 32768, MAX_FRAME)),
    (9014, 63, ()),
])
def test_the_ladder_stops_at_the_asked_size_and_the_far_max(asked: int, far_max: int,
                                                           sizes: tuple[int, ...]) -> None:
    assert probe.ladder(asked, far_max) == sizes


# --- the plan, driven by a clock ------------------------------------------------------
def answer_all(p: Prober, now: float, far_max: int = MAX_FRAME,
               drop: frozenset[int] = frozenset()) -> list[int]:
    """Play the far side for what ``p`` sends now: the sizes sent."""
    sizes = []
    for data in p.take():
        assert len(data) <= far_max, "a probe above the far side's max closes the tunnel"
        sizes.append(len(data))
        if len(data) not in drop:
            reply = probe.parse_reply(probe.answer(data, far_max) or b"")
            assert reply is not None
            p.received(reply, now)
    return sizes


def test_small_probes_then_the_ladder() -> None:
    p = Prober(9014, 100.0)
    assert answer_all(p, 100.002) == [64]
    assert answer_all(p, 100.003) == [64]  # the next small one goes when the reply comes
    assert answer_all(p, 100.0035) == [64]
    assert not p.done
    assert answer_all(p, 100.01) == [1514, 4096, 9014]
    assert p.done
    r = p.result()
    assert r == Result(Code.ANSWERED, 9014, pytest.approx(0.001), pytest.approx(0.0005),
                       9014, (), MAX_FRAME)
    assert r.answered and not r.limited


def test_the_far_max_learnt_from_the_first_reply_caps_the_ladder() -> None:
    p = Prober(9014, 0.0)
    t = 0.0
    while not p.done:
        t += 0.001
        answer_all(p, t, far_max=2000)
    r = p.result()
    assert (r.largest, r.lost, r.far_max, r.limited) == (2000, (), 2000, True)
    assert r.entry()["sizes"] == [1514, 2000]


def test_no_answer_to_the_first_small_probe_is_no_answer_after_the_timeout() -> None:
    p = Prober(1514, 10.0)
    assert len(p.take()) == 1
    p.tick(11.99)
    assert not p.done
    p.tick(12.0)
    assert p.done and p.take() == []
    assert p.result() == Result(Code.NO_ANSWER, 1514)
    assert not p.result().answered


def test_a_lost_small_probe_after_the_first_moves_on_to_the_ladder() -> None:
    p = Prober(1514, 0.0)
    answer_all(p, 0.001)
    assert len(p.take()) == 1  # the second small probe, never answered
    p.tick(2.0)
    assert not p.done
    p.tick(2.001)
    assert [len(m) for m in p.take()] == [1514]
    p.received(Reply(2, 64, MAX_FRAME), 2.1)  # the late reply to the second: ignored
    p.tick(4.0)
    assert not p.done
    p.tick(4.001)
    r = p.result()
    assert p.done and (r.rtt_s, r.largest, r.lost) == (pytest.approx(0.001), 0, (1514,))


def test_lost_and_cut_ladder_probes_are_lost() -> None:
    p = Prober(9014, 0.0)
    for _ in range(3):
        answer_all(p, 0.001)
    sent = p.take()
    assert [len(m) for m in sent] == [1514, 4096, 9014]
    p.received(Reply(4, 1514, MAX_FRAME), 0.01)
    p.received(Reply(5, 1000, MAX_FRAME), 0.01)  # 4096 sent, 1000 arrived
    p.received(Reply(99, 9014, MAX_FRAME), 0.01)  # no such probe
    assert not p.done
    p.tick(2.0 + 0.001)
    r = p.result()
    assert p.done and (r.largest, r.lost) == (1514, (4096, 9014))
    p.received(Reply(6, 9014, MAX_FRAME), 3.0)  # too late
    assert p.result() == r


def test_a_far_max_below_the_smallest_probe_ends_after_the_round_trip() -> None:
    p = Prober(1514, 0.0, rtt_probes=1)
    [small] = p.take()
    p.received(Reply(1, len(small), 40), 0.5)
    assert p.done and p.take() == []
    assert p.result().largest == 0 and p.result().far_max == 40


def test_the_median_and_the_minimum_round_trip() -> None:
    p = Prober(64, 0.0, rtt_probes=5)
    t = 0.0
    for rtt in (0.005, 0.001, 0.003, 0.002, 0.009):
        [m] = p.take()
        p.received(probe.parse_reply(probe.answer(m, MAX_FRAME) or b"") or Reply(0, 0, 0),
                   t + rtt)
        t += rtt
    r = p.result()
    assert (r.rtt_s, r.rtt_min_s) == (pytest.approx(0.003), pytest.approx(0.001))


# --- the slot words --------------------------------------------------------------------
@pytest.mark.parametrize("result", [
    Result(Code.ANSWERED, 9014, 0.00123, 0.0009, 4096, (9014,), MAX_FRAME),
    Result(Code.ANSWERED, 9014, 1.9, 0.5, 2000, (), 2000),
    Result(Code.ANSWERED, MAX_FRAME, 0.001, 0.001, 0, (1514, 4096, 9014, 16384, 32768,
                                                       MAX_FRAME), MAX_FRAME),
    Result(Code.NO_ANSWER, 1514),
    probe.unsupported(64),
])
def test_a_result_survives_the_slot_words(result: Result) -> None:
    back = probe.from_words(result.asked, *probe.to_words(result))
    assert back is not None
    assert back.entry() == result.entry()
    assert (back.code, back.lost, back.far_max, back.largest) == (
        result.code, result.lost, result.far_max, result.largest)


def test_words_without_a_result_code_are_no_result() -> None:
    assert probe.from_words(1514, 0, 0, 0) is None
    assert probe.from_words(1514, 0, 0, 0xFF) is None


def test_the_entry_has_the_fields_ctl_shows() -> None:
    entry = Result(Code.ANSWERED, 9014, 0.0012345, 0.001, 1514, (4096, 9014),
                   MAX_FRAME).entry()
    assert entry == {"answered": True, "asked": 9014, "rtt_ms": 1.234, "rtt_min_ms": 1.0,
                     "largest": 1514, "lost": [4096, 9014], "far_max_message": MAX_FRAME,
                     "sizes": [1514, 4096, 9014]}
    assert Result(Code.NO_ANSWER, 1514).entry()["largest"] is None


def test_a_far_max_above_the_largest_frame_counts_as_the_largest_frame() -> None:
    p = Prober(64, 0.0, rtt_probes=1)
    p.take()
    p.received(Reply(1, 64, 10 ** 10 - 1), 0.001)
    answer_all(p, 0.002)
    r = p.result()
    assert r.far_max == MAX_FRAME and r.largest == 64
    back = probe.from_words(64, *probe.to_words(r))
    assert back is not None and back.far_max == MAX_FRAME


@given(st.binary(max_size=200))
def test_no_text_makes_the_parsers_raise(data: bytes) -> None:
    probe.parse_probe(data)
    probe.parse_reply(data)
    probe.parse_probe(probe.PROBE_TAG + b" " + data)
    probe.parse_reply(probe.REPLY_TAG + b" " + data)


@given(st.integers(0, 10 ** 10 - 1), st.integers(probe.MIN_SIZE, 2000),
       st.integers(0, 10 ** 10 - 1))
def test_every_probe_and_reply_round_trips(probe_id: int, size: int, max_message: int) -> None:
    assert probe.parse_probe(probe.encode_probe(probe_id, size)) == probe.Probe(
        probe_id, size, size)
    reply = Reply(probe_id, size, max_message)
    assert probe.parse_reply(probe.encode_reply(reply)) == reply

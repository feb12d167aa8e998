"""WsMedium over a real socket pair: batching, control frames, bounded output, keepalive.

The far end is a plain socket in this test process, parsed with ``wsframe.Decoder`` in
the server role (which insists that the client masked every frame).
"""

from __future__ import annotations

import socket
from typing import Iterator

import pytest

from etherws import wsframe
from etherws.keepalive import Keepalive
from etherws.workers.link import RECV_BYTES_PER_WAKEUP, MediumClosed
from etherws.workers.wsmedium import OUT_LIMIT, PING_PAYLOAD, WsMedium
from etherws.wsframe import Opcode

Pair = tuple[WsMedium, socket.socket]


@pytest.fixture
def pair() -> Iterator[Pair]:
    """A client-role medium and the server's end of its connection."""
    a, b = socket.socketpair()
    medium = WsMedium(a, "client", keepalive=Keepalive(0.0, 1.0, 1.0))
    try:
        yield medium, b
    finally:
        medium.sock.close()
        b.close()


def server_reads(peer: socket.socket, decoder: wsframe.Decoder, messages: int) -> list[bytes]:
    """What the server end decodes until ``messages`` binary messages (or events) came."""
    peer.settimeout(5)
    got: list[bytes] = []
    while len(got) + len(decoder.events) < messages:
        data = peer.recv(1 << 20)
        assert data, "connection closed"
        got += decoder.feed(data)
    return got


def test_frames_are_masked_batched_and_arrive_intact(pair: Pair) -> None:
    medium, peer = pair
    frames = [bytes([i]) * (14 + i * 100) for i in range(50)]
    assert all(medium.write(f) for f in frames)
    medium.flush()
    assert not medium.pending_output()
    assert server_reads(peer, wsframe.Decoder("server", 1 << 20), 50) == frames


def test_input_is_handed_out_in_bounded_batches(pair: Pair) -> None:
    medium, peer = pair
    frames = [i.to_bytes(2, "big") * 30 for i in range(300)]
    peer.sendall(wsframe.binary_batch(frames))
    got: list[bytes] = []
    while len(got) < 300:
        batch = medium.read_batch(64)
        assert len(batch) <= 64
        got += batch
        assert medium.pending_input() == (len(got) < 300 and bool(medium._ready))
    assert got == frames and not medium.pending_input()
    assert medium.read_batch(64) == []  # nothing more: no error, no block


def test_ping_gets_a_pong_and_text_is_counted(pair: Pair) -> None:
    medium, peer = pair
    frame = bytes(range(60))
    peer.sendall(wsframe.frame(Opcode.TEXT, b"hello") + wsframe.frame(Opcode.PING, b"p1")
                 + wsframe.frame(Opcode.BINARY, frame))
    assert medium.read_batch(64) == [frame]
    assert medium.take_counts() == (1, 0) and medium.take_counts() == (0, 0)
    decoder = wsframe.Decoder("server", 1000)
    server_reads(peer, decoder, 1)
    assert decoder.events == [wsframe.Pong(b"p1")]


@pytest.mark.parametrize("close_payload, echoed", [
    (wsframe.close_payload(1000, "bye"), wsframe.Close(1000, "")),
    (b"", wsframe.Close(1005, "")),
])
def test_a_close_is_answered_and_ends_the_medium(pair: Pair, close_payload: bytes,
                                                 echoed: wsframe.Close) -> None:
    medium, peer = pair
    frame = bytes(60)
    peer.sendall(wsframe.frame(Opcode.BINARY, frame) + wsframe.frame(Opcode.CLOSE, close_payload))
    assert medium.read_batch(64) == [frame]  # what came before the Close is delivered
    with pytest.raises(MediumClosed, match="peer closed the connection"):
        medium.read_batch(64)
    decoder = wsframe.Decoder("server", 1000)
    server_reads(peer, decoder, 1)
    assert decoder.events == [echoed]
    assert not medium.write(frame)  # nothing after a Close (§5.5.1)


@pytest.mark.parametrize("data, code", [
    (b"\x82\x7f" + (70000).to_bytes(8, "big"), 1009),   # too big, refused from the header
    (b"\x82\x80\x00\x00\x00\x00", 1002),                 # masked frame from a server
    (wsframe.frame(Opcode.TEXT, b"\xff"), 1007),         # text that is not UTF-8
])
def test_a_protocol_error_sends_its_close_code(pair: Pair, data: bytes, code: int) -> None:
    medium, peer = pair
    peer.sendall(data)
    with pytest.raises(MediumClosed, match=f"closed with {code}"):
        while True:
            medium.read_batch(64)
    decoder = wsframe.Decoder("server", 1000)
    server_reads(peer, decoder, 1)
    assert isinstance(decoder.events[0], wsframe.Close) and decoder.events[0].code == code


def test_eof_ends_the_medium(pair: Pair) -> None:
    medium, peer = pair
    peer.shutdown(socket.SHUT_WR)
    with pytest.raises(MediumClosed, match="without a Close frame"):
        medium.read_batch(64)


def test_room_for_a_whole_down_ring_batch_is_announced_until_there_is_none(
        pair: Pair) -> None:
    medium, _peer = pair  # the peer reads nothing
    batch = [b"x" * 2000] * (RECV_BYTES_PER_WAKEUP // 2000)
    batches = 0
    while medium.has_room():
        # With room announced, a whole batch is always taken: the loop never reads
        # a batch from the down ring only to drop it here.
        assert all(medium.write(f) for f in batch)
        medium.flush()
        batches += 1
        assert batches < 10_000, "room never ran out"
    assert medium.pending_output() and len(medium._out) <= OUT_LIMIT


def test_output_is_bounded_and_drops_when_the_peer_does_not_read(pair: Pair) -> None:
    medium, peer = pair
    frame = b"x" * 65000
    accepted = 0
    while medium.write(frame):
        accepted += 1
        medium.flush()
        assert accepted < 10_000, "never refused"
    assert medium.pending_output() and len(medium._out) <= OUT_LIMIT
    # The peer reads again: everything accepted arrives, in order, nothing more.
    decoder = wsframe.Decoder("server", 1 << 20)
    got: list[bytes] = []
    peer.settimeout(5)
    while len(got) < accepted:
        medium.flush()
        got += decoder.feed(peer.recv(1 << 20))
    assert got == [frame] * accepted and not medium.pending_output()


def test_keepalive_pings_after_silence_and_gives_up(pair: Pair) -> None:
    medium, peer = pair
    medium.tick(500_000_000)
    medium.tick(1_000_000_000)  # 1 s of silence: a ping
    decoder = wsframe.Decoder("server", 1000)
    server_reads(peer, decoder, 1)
    assert decoder.events == [wsframe.Ping(PING_PAYLOAD)]
    with pytest.raises(MediumClosed, match="connection dead"):
        medium.tick(2_000_000_000)


def test_unread_bytes_count_as_life(pair: Pair) -> None:
    """While the loop holds off reading (broker busy), waiting bytes keep the peer alive."""
    medium, peer = pair
    medium.tick(1_000_000_000)
    peer.sendall(wsframe.frame(Opcode.PONG, PING_PAYLOAD))
    medium.tick(2_000_000_000)  # not read yet, but there: alive
    medium.tick(2_500_000_000)
    assert medium.read_batch(64) == []
    medium.tick(3_000_000_000)  # heard at 3.0 s (read): silence starts again
    medium.tick(3_900_000_000)


def test_close_says_going_away(pair: Pair) -> None:
    medium, peer = pair
    medium.close()
    decoder = wsframe.Decoder("server", 1000)
    server_reads(peer, decoder, 1)
    assert decoder.events == [wsframe.Close(1001, "")]


# --- the path probe (etherws.probe) -------------------------------------------------------
def pump(a: WsMedium, b: WsMedium, rounds: int = 50) -> list[bytes]:
    """Let both ends read and send a while; the binary messages ``a`` received."""
    got: list[bytes] = []
    for _ in range(rounds):
        got += a.read_batch(64)
        b.read_batch(64)
        a.flush()
        b.flush()
    return got


@pytest.mark.parametrize("far_max, asked, largest", [
    (65535, 9014, 9014), (2000, 9014, 2000), (65535, 64, 64)])
def test_a_probe_is_answered_by_the_far_medium_within_its_max_message(
        far_max: int, asked: int, largest: int) -> None:
    a, b = socket.socketpair()
    now = [10_000_000_000]

    def clock() -> int:  # every look at the clock takes 0.1 ms
        now[0] += 100_000
        return now[0]
    near = WsMedium(a, "client", clock=clock)
    far = WsMedium(b, "server", max_message=far_max)
    try:
        frame = bytes(range(60))
        assert far.write(frame)
        assert near.start_probe(asked, now[0])
        result = None
        for _ in range(20):
            now[0] += 1_000_000  # 1 ms a round
            got = pump(near, far, 5)
            assert got in ([], [frame])  # frames pass beside the probes
            result = near.probe_tick(now[0])
            if result is not None:
                break
        assert result is not None and result.answered
        assert (result.largest, result.lost, result.far_max) == (largest, (), far_max)
        assert result.rtt_s is not None and 0 < result.rtt_s < 0.01
        assert far.probes_answered == 3 + len(result.entry()["sizes"])  # type: ignore[arg-type]
        assert far.take_counts() == (0, 0) and near.take_counts() == (0, 0)
        assert not far.pending_input()  # no 1009: the far side is not failing
        assert near.probe_tick(now[0]) is None  # done and forgotten
    finally:
        near.sock.close()
        far.sock.close()


def test_a_far_side_that_ignores_text_is_no_answer(pair: Pair) -> None:
    medium, peer = pair
    medium.clock = lambda: 0
    assert medium.start_probe(1514, 0)
    decoder = wsframe.Decoder("server", 1 << 20, keep_text=True)
    server_reads(peer, decoder, 1)
    [text] = decoder.events
    assert isinstance(text, wsframe.Text) and text.data.startswith(b"etherws-probe/1 1 64 ")
    assert medium.probe_tick(1_999_000_000) is None
    result = medium.probe_tick(2_000_000_000)
    assert result is not None and not result.answered and result.largest == 0


def test_a_size_that_cannot_be_probed_is_refused(pair: Pair) -> None:
    medium, _ = pair
    assert not medium.start_probe(63, 0)
    assert medium.probe_tick(0) is None


def test_stray_replies_are_not_errors_other_text_is(pair: Pair) -> None:
    medium, peer = pair
    peer.sendall(wsframe.frame(Opcode.TEXT, b"etherws-probe-reply/1 1 64 1514")
                 + wsframe.frame(Opcode.TEXT, b"etherws-probe/1 x 64"))
    assert medium.read_batch(64) == []
    assert medium.take_counts() == (1, 0)

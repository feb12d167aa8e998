"""One side of a ring in a process of its own, for tests/component/runtime/test_rings.py.

``python -m tests.component.runtime.ringpeer produce RING ID COUNT``
    puts COUNT checksummed frames (producer ``ID``, sequence 0..COUNT-1) into the up ring,
    waiting for room on its doorbell, publishing in batches, ringing the consumer only
    when it is armed. Exit 0 when all are published.

``python -m tests.component.runtime.ringpeer consume RING LOG``
    takes frames from the up ring and checks each: its checksum (a torn or half-written
    record would fail it), and its place: per producer, sequence numbers follow each
    other, a new producer starts at 0, and after a restart of this consumer the first
    frame follows the last one it released (read from LOG, where every release is
    appended before the next take). Exit 3 with a message on stderr at the first
    violation; runs until killed.

``python -m tests.component.runtime.ringpeer pingpong RING N BROKEN``
    the consumer of N frames in short bursts (the sleep/kick race test): it arms and sleeps
    whenever the ring is empty, and says how often on stderr at the end; BROKEN=1 arms
    without looking at the ring again, which loses wake-ups.
"""

from __future__ import annotations

import os
import select
import struct
import sys
import time
import zlib

from etherws.ring import RingError
from etherws.runtime import rings

HEAD = struct.Struct("<QQ")  # producer id, sequence
BATCH = 32


def make(pid: int, seq: int) -> bytes:
    """A frame: id and sequence, a payload of a size that depends on them, a CRC32."""
    size = 60 + (seq * 7919 + pid) % 1400
    body = HEAD.pack(pid, seq) + os.urandom(size)
    return body + struct.pack("<I", zlib.crc32(body))


def check(frame: bytes | memoryview) -> tuple[int, int]:
    """(id, sequence) of an intact frame; ValueError for a corrupt one."""
    body, crc = frame[:-4], struct.unpack("<I", frame[-4:])[0]
    if zlib.crc32(body) != crc:
        raise ValueError(f"checksum mismatch in a frame of {len(frame)} bytes")
    pid, seq = HEAD.unpack_from(body)
    return int(pid), int(seq)


def _wait(bell: rings.Bell, timeout_ms: int) -> None:
    p = select.poll()
    p.register(bell.fileno(), select.POLLIN)
    p.poll(timeout_ms)
    bell.drain()


def produce(path: str, pid: int, count: int) -> int:
    m = rings.MappedRing(path)
    up = m.file.up
    mine, theirs = rings.Bell(path + ".p"), rings.Bell(path + ".c")
    seq = 0
    while seq < count:
        n = 0
        while seq < count and n < BATCH and up.put(make(pid, seq)):
            seq += 1
            n += 1
        if n:
            up.commit()
            rings.fence()
            if up.armed:
                theirs.ring()
            continue
        up.wait_for_room(True)  # full: sleep until the consumer releases
        rings.fence()
        if not up.room_for(2000):
            _wait(mine, 1000)
        up.wait_for_room(False)
    return 0


def _released(log: str) -> list[tuple[int, int]]:
    """The last two (id, sequence) this consumer's predecessors released."""
    try:
        with open(log, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    full = [ln for ln in data.split(b"\n")[:-1] if ln]  # a line cut by a kill is none
    return [(int(a), int(b)) for a, b in (ln.split() for ln in full[-2:])]


def consume(path: str, log: str) -> int:
    m = rings.MappedRing(path)
    up = m.file.up
    mine, theirs = rings.Bell(path + ".c"), rings.Bell(path + ".p")
    # A kill between logging a release and making it leaves the ring one batch behind
    # the log: the first frame follows the last release, or the one before it.
    starts = {(pid, seq + 1) for pid, seq in _released(log)}
    expect: dict[int, int] | None = None
    out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    while True:
        frames = up.take(256)
        if not frames:
            up.arm(True)
            rings.fence()
            if not up.readable():
                _wait(mine, 1000)
            up.arm(False)
            continue
        for f in frames:
            try:
                pid, seq = check(f)
            except ValueError as e:
                print(f"corrupt frame: {e}", file=sys.stderr)
                return 3
            if expect is None:  # the first frame of this consumer
                ok = (pid, seq) in starts or (seq == 0 and all(p != pid for p, _ in starts))
                want = sorted(starts)
            else:
                want = expect.get(pid, 0)
                ok = seq == want
            if not ok:
                print(f"producer {pid}: sequence {seq}, expected {want}", file=sys.stderr)
                return 3
            expect = {pid: seq + 1}
        del frames
        os.write(out, f"{pid} {seq}\n".encode())  # released from here on
        up.release()
        rings.fence()
        if up.waiting:
            theirs.ring()


def pingpong(path: str, count: int, broken: bool) -> int:
    """Take ``count`` frames one burst at a time, sleeping whenever the ring is empty."""
    m = rings.MappedRing(path)
    up = m.file.up
    mine = rings.Bell(path + ".c")
    p = select.poll()
    p.register(mine.fileno(), select.POLLIN)
    got = sleeps = 0
    while got < count:
        try:
            frames = up.take(64)
        except RingError as e:
            print(e, file=sys.stderr)
            return 3
        if frames:
            got += len(frames)
            del frames
            up.release()
            continue
        if broken:
            # Widen the window between "empty" and "armed" that the broken consumer never
            # looks into again: on a loaded machine the natural one (microseconds) went
            # 50 000 bursts without a hit, and this consumer is there to show that the
            # harness sees a lost wake-up when there is one, not to find the window.
            time.sleep(0.0005)
        up.arm(True)
        sleeps += 1
        if broken:
            p.poll(5000)  # no second look: a frame published meanwhile sleeps with us
        else:
            rings.fence()
            if not up.readable():
                p.poll(5000)
        up.arm(False)
        mine.drain()
    print(f"slept {sleeps}", file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    if argv[0] == "produce":
        return produce(argv[1], int(argv[2]), int(argv[3]))
    if argv[0] == "consume":
        return consume(argv[1], argv[2])
    return pingpong(argv[1], int(argv[2]), argv[3] == "1")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

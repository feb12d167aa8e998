"""Rings between real processes: checksummed frames through kill -9 of either side, and
the sleep/kick handshake under races (``ringpeer`` is the other process)."""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from etherws.runtime import rings
from tests import support
from tests.component.fakes import ROOT
from tests.component.runtime import ringpeer

FRAMES = int(os.environ.get("ETHERWS_RING_FRAMES", "1000000"))
RACES = int(os.environ.get("ETHERWS_RING_RACES", "100000"))
"""The suite's sizes; a longer run sets the variables (the figures in README come from
ETHERWS_RING_RACES=2000000)."""


@pytest.fixture
def ring(tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "ring-1-1")
    rings.create_ring(path, 1, 1)
    rings.make_bell(path + ".p")
    rings.make_bell(path + ".c")
    yield path


def peer(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tests.component.runtime.ringpeer", *args],
                            cwd=ROOT, stderr=subprocess.PIPE, text=True)


def test_the_checksum_and_sequence_checks_catch_a_torn_record() -> None:
    frame = bytearray(ringpeer.make(1, 5))
    assert ringpeer.check(frame) == (1, 5)
    frame[20] ^= 1
    with pytest.raises(ValueError, match="checksum"):
        ringpeer.check(frame)


def test_frames_survive_kill_9_of_either_side_without_a_gap_or_a_torn_record(
        ring: str, tmp_path: Path) -> None:
    log = str(tmp_path / "released")
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        p = peer(*args)
        procs.append(p)
        return p

    def released() -> int:
        with open(log, "rb") as f:
            return f.read().count(b"\n")

    try:
        consumer = start("consume", ring, log)
        producer = start("produce", ring, "1", str(FRAMES))
        last_id = 1
        chance = random.Random(7)
        for round_ in range(6):  # kill -9 mid-stream: the consumer 4 times, the producer twice
            before = released() if os.path.exists(log) else 0
            support.wait_until(lambda: os.path.exists(log) and released() > before + 50,
                               30, "frames flowing")
            time.sleep(chance.uniform(0, 0.05))  # a random point in the stream, not a wait
            if round_ in (1, 4):
                producer.kill()
                producer.wait(5)
                last_id = round_ + 2
                producer = start("produce", ring, str(last_id), str(FRAMES))
            else:
                consumer.kill()
                consumer.wait(5)
                assert consumer.returncode == -signal.SIGKILL, consumer.stderr.read()
                consumer = start("consume", ring, log)
        assert producer.wait(timeout=300 * support.SCALE) == 0, producer.stderr.read()
        last = f"{last_id} {FRAMES - 1}\n".encode()
        support.wait_until(lambda: open(log, "rb").read().endswith(last) or
                           consumer.poll() is not None, 60, "every frame of the last producer")
        assert consumer.poll() is None, consumer.stderr.read()
    finally:
        for p in procs:
            support.kill_process(p)


def _races(ring: str, broken: bool, count: int) -> tuple[int, float, int]:
    """Bursts of 1-3 frames, each waiting for the consumer to empty the ring: every burst
    races the consumer going to sleep. Returns (bursts, seconds until a lost wake-up or
    0 at the end, the consumer's sleeps); a burst left unread for 1 s is a lost wake-up."""
    m = rings.MappedRing(ring)
    up = m.file.up
    bell = rings.Bell(ring + ".c")
    consumer = peer("pingpong", ring, str(count), "1" if broken else "0")
    sent = bursts = 0
    t0 = time.monotonic()
    chance = random.Random(3)
    try:
        while sent < count:
            n = min(chance.randint(1, 3), count - sent)
            for _ in range(n):
                assert up.put(b"x" * 60)
            sent += n
            up.commit()
            rings.fence()
            if up.armed:
                bell.ring()
            bursts += 1
            end = time.monotonic() + 1.0
            while up.tail != up.head:  # the consumer takes the burst, or sleeps through it
                if time.monotonic() > end:
                    return bursts, time.monotonic() - t0, 0
                if chance.random() < 0.5:
                    select.select([], [], [], 0)  # let it go to sleep now and then
        assert consumer.stderr is not None
        assert consumer.wait(timeout=10 * support.SCALE) == 0, consumer.stderr.read()
        return bursts, 0.0, int(consumer.stderr.read().split()[-1])
    finally:
        support.kill_process(consumer)
        bell.close()
        m.close()


def test_no_wake_up_is_lost_in_many_sleep_kick_races(ring: str) -> None:
    bursts, lost_after, sleeps = _races(ring, broken=False, count=RACES)
    assert lost_after == 0.0, f"a wake-up was lost after {bursts} bursts"
    assert sleeps > bursts // 4, f"only {sleeps} of {bursts} bursts found the consumer asleep"
    print(f"{bursts} bursts, the consumer slept {sleeps} times, no wake-up lost")


def test_the_race_test_finds_the_lost_wake_up_of_a_consumer_that_does_not_look_again(
        ring: str) -> None:
    bursts, lost_after, _ = _races(ring, broken=True, count=RACES)
    assert lost_after > 0, f"{bursts} bursts and no lost wake-up: the test cannot fail"

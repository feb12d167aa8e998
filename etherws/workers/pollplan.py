"""What a port worker's loop waits for next (pure: the state comes in, a plan goes out).

Backpressure, both ways: the medium is read only while the up ring has room for a frame
and the broker has not asked for a pause; the down ring is taken from only while the
medium has room for a batch. Otherwise the fd is not polled for input, or the down ring
is left as it is, and the frames wait, or are dropped, where that costs nothing: in the
kernel's queue, or at the broker. A medium holding input that polling would not announce
(a WebSocket's decoded leftovers, TLS's buffer) is read without waiting, and so is a
down ring that holds frames.

When the loop sleeps it asks to be rung: by the broker when the down ring fills
(``sleep_down``), when the up ring empties (``sleep_room``, while reading waits for room).
"""

from __future__ import annotations

from dataclasses import dataclass

POLLIN = 1
POLLOUT = 4
"""select.POLLIN and select.POLLOUT (the loop polls with select.poll; a test checks)."""
POLL_TIMEOUT_MS = 200
"""Longest wait: the heartbeat and the stop flag are looked at least this often."""


@dataclass(frozen=True)
class Wait:
    """One round of the loop: what to poll the medium for, and how long."""

    fd_events: int
    """On the medium's fd: POLLIN to read it, POLLOUT to flush its queued output."""
    reading: bool
    """The medium may be read this round."""
    held: bool
    """The medium holds input already: read it without waiting for the fd."""
    timeout_ms: int
    sleep_down: bool
    """If the loop sleeps: ask the broker to ring when the down ring gets frames."""
    sleep_room: bool
    """If the loop sleeps: ask the broker to ring when the up ring gets room."""


def plan(can_send: bool, hold_ns: int, has_room: bool, pending_input: bool,
         pending_output: bool, down_ready: bool) -> Wait:
    """The next wait, from: the up ring has room for a frame (``can_send``), what is
    left of a pause the broker asked for (``hold_ns``), the medium has room for a batch
    (``has_room``), holds input (``pending_input``) or queued output
    (``pending_output``), the down ring holds frames (``down_ready``)."""
    reading = can_send and not hold_ns
    fd = (POLLIN if reading else 0) | (POLLOUT if pending_output else 0)
    held = reading and pending_input
    if held or (down_ready and has_room):
        timeout_ms = 0
    elif hold_ns:  # back when the pause ends
        timeout_ms = min(POLL_TIMEOUT_MS, hold_ns // 1_000_000 + 1)
    else:
        timeout_ms = POLL_TIMEOUT_MS
    return Wait(fd, reading, held, timeout_ms, sleep_down=has_room and not down_ready,
                sleep_room=not can_send)

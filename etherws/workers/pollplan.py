"""What a port worker's loop waits for next (pure: the state comes in, a plan goes out).

Backpressure, both ways: the medium is read only while the broker link can take a batch
and the broker has not asked for a pause; the broker's batches are taken only while the
medium has room for one. Otherwise the fd or the socket is not polled for input and the
frames wait, or are dropped, where that costs nothing: in the kernel's queue, or at the
broker. A medium holding input that polling would not announce (a WebSocket's decoded
leftovers, TLS's buffer) is read without waiting.
"""

from __future__ import annotations

from dataclasses import dataclass

POLLIN = 1
POLLOUT = 2
"""zmq.POLLIN and zmq.POLLOUT (the loop polls with zmq.Poller; a test checks the values)."""
POLL_TIMEOUT_MS = 200
"""Longest wait: the heartbeat and the stop flag are looked at least this often."""


@dataclass(frozen=True)
class Wait:
    """One round of the loop: what to poll for, and how long."""

    sock_events: int
    """On the broker socket: POLLIN to take batches, POLLOUT to learn it can take ours."""
    fd_events: int
    """On the medium's fd: POLLIN to read it, POLLOUT to flush its queued output."""
    reading: bool
    """The medium may be read this round."""
    held: bool
    """The medium holds input already: read it without waiting for the fd."""
    timeout_ms: int


def plan(writable: bool, hold_ns: int, has_room: bool, pending_input: bool,
         pending_output: bool) -> Wait:
    """The next wait, from: the broker link can take a batch (``writable``), what is
    left of a pause the broker asked for (``hold_ns``), the medium has room for a broker
    batch (``has_room``), holds input (``pending_input``) or queued output
    (``pending_output``)."""
    reading = writable and not hold_ns
    sock = (POLLIN if has_room else 0) | (0 if writable else POLLOUT)
    fd = (POLLIN if reading else 0) | (POLLOUT if pending_output else 0)
    held = reading and pending_input
    if held:
        timeout_ms = 0
    elif hold_ns:  # back when the pause ends
        timeout_ms = min(POLL_TIMEOUT_MS, hold_ns // 1_000_000 + 1)
    else:
        timeout_ms = POLL_TIMEOUT_MS
    return Wait(sock, fd, reading, held, timeout_ms)

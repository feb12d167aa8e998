"""What the worker loop waits for, as a table of cases."""

from __future__ import annotations

import pytest
import zmq

from etherws.workers.pollplan import POLL_TIMEOUT_MS, POLLIN, POLLOUT, Wait, plan


def test_the_flags_are_zmqs() -> None:
    assert (POLLIN, POLLOUT) == (zmq.POLLIN, zmq.POLLOUT)


#  writable, hold_ns, room, pending in, pending out -> sock, fd, reading, held, timeout
CASES = [
    # the steady state: read the medium, take the broker's batches
    ((True, 0, True, False, False), Wait(POLLIN, POLLIN, True, False, POLL_TIMEOUT_MS)),
    # the broker link is full: do not read the medium; learn when the link frees up
    ((False, 0, True, False, False),
     Wait(POLLIN | POLLOUT, 0, False, False, POLL_TIMEOUT_MS)),
    # the broker asked for a pause of 5.5 ms: no reading, back when it ends
    ((True, 5_500_000, True, False, False), Wait(POLLIN, 0, False, False, 6)),
    # a long pause is still looked at every POLL_TIMEOUT_MS
    ((True, 10**10, True, False, False), Wait(POLLIN, 0, False, False, POLL_TIMEOUT_MS)),
    # the medium has no room: leave the broker's batches queued
    ((True, 0, False, False, False), Wait(0, POLLIN, True, False, POLL_TIMEOUT_MS)),
    # input held in the medium: read it now, no waiting
    ((True, 0, True, True, False), Wait(POLLIN, POLLIN, True, True, 0)),
    # ... but not while reading is not allowed
    ((False, 0, True, True, False),
     Wait(POLLIN | POLLOUT, 0, False, False, POLL_TIMEOUT_MS)),
    ((True, 1, True, True, False), Wait(POLLIN, 0, False, False, 1)),
    # output queued: wait until the fd can take it
    ((True, 0, True, False, True), Wait(POLLIN, POLLIN | POLLOUT, True, False,
                                        POLL_TIMEOUT_MS)),
    ((False, 0, False, False, True), Wait(POLLOUT, POLLOUT, False, False, POLL_TIMEOUT_MS)),
]


@pytest.mark.parametrize("state, expected", CASES)
def test_plan(state: tuple[bool, int, bool, bool, bool], expected: Wait) -> None:
    assert plan(*state) == expected

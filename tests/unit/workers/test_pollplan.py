"""What the worker loop waits for, as a table of cases."""

from __future__ import annotations

import select

import pytest

from etherws.workers.pollplan import POLL_TIMEOUT_MS, POLLIN, POLLOUT, Wait, plan


def test_the_flags_are_selects() -> None:
    assert (POLLIN, POLLOUT) == (select.POLLIN, select.POLLOUT)


T = POLL_TIMEOUT_MS
#  can_send, hold_ns, room, pending in, pending out, down ready
#   -> fd, reading, held, timeout, sleep_down, sleep_room
CASES = [
    # the steady state, nothing waiting: read the medium, be rung for the down ring
    ((True, 0, True, False, False, False), Wait(POLLIN, True, False, T, True, False)),
    # frames in the down ring: no sleeping
    ((True, 0, True, False, False, True), Wait(POLLIN, True, False, 0, False, False)),
    # ... unless the medium has no room for them: they stay in the ring
    ((True, 0, False, False, False, True), Wait(POLLIN, True, False, T, False, False)),
    # the up ring is full: do not read the medium; be rung when it has room
    ((False, 0, True, False, False, False), Wait(0, False, False, T, True, True)),
    # the broker asked for a pause of 5.5 ms: no reading, back when it ends
    ((True, 5_500_000, True, False, False, False), Wait(0, False, False, 6, True, False)),
    # a long pause is still looked at every POLL_TIMEOUT_MS
    ((True, 10**10, True, False, False, False), Wait(0, False, False, T, True, False)),
    # the medium has no room: not rung for the down ring (POLLOUT on the fd wakes us)
    ((True, 0, False, False, True, False),
     Wait(POLLIN | POLLOUT, True, False, T, False, False)),
    # input held in the medium: read it now, no waiting
    ((True, 0, True, True, False, False), Wait(POLLIN, True, True, 0, True, False)),
    # ... but not while reading is not allowed
    ((False, 0, True, True, False, False), Wait(0, False, False, T, True, True)),
    ((True, 1, True, True, False, False), Wait(0, False, False, 1, True, False)),
    # output queued: wait until the fd can take it
    ((True, 0, True, False, True, False),
     Wait(POLLIN | POLLOUT, True, False, T, True, False)),
    ((False, 0, False, False, True, False), Wait(POLLOUT, False, False, T, False, True)),
]


@pytest.mark.parametrize("state, expected", CASES)
def test_plan(state: tuple[bool, int, bool, bool, bool, bool], expected: Wait) -> None:
    assert plan(*state) == expected

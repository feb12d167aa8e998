"""The test suite's own helpers fail fast and clearly."""

from __future__ import annotations

import time

import pytest
import zmq

from tests import support


def test_a_socket_left_open_fails_the_teardown_fast() -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PAIR)  # left open on purpose
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"a socket was left open \(PAIR\)"):
        support.term_context(ctx, "test", timeout_s=0.3)
    assert time.monotonic() - started < 5
    sock.close(linger=0)  # now the term that was waiting finishes
    support.wait_until(lambda: ctx.closed, 5, "the context to terminate")


def test_a_clean_context_terminates() -> None:
    ctx = zmq.Context()
    ctx.socket(zmq.PAIR).close(linger=0)
    support.term_context(ctx, "test")
    assert ctx.closed

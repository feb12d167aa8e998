"""StopSignal with real signals sent to this test process."""

from __future__ import annotations

import os
import select
import signal

import pytest

from etherws.runtime.signals import STOP_SIGNALS, StopSignal
from tests import support


@pytest.mark.parametrize("sig", STOP_SIGNALS)
def test_a_stop_signal_sets_the_flag_and_wakes_a_poll(sig: signal.Signals) -> None:
    with StopSignal() as stop:
        poller = select.poll()
        poller.register(stop.fileno(), select.POLLIN)
        assert not stop.requested and poller.poll(0) == []
        os.kill(os.getpid(), sig)
        assert poller.poll(int(5000 * support.SCALE)) == [(stop.fileno(), select.POLLIN)]
        support.wait_until(lambda: stop.requested, 5, "the handler to run")
        stop.drain()
        assert poller.poll(0) == []  # drained: the next poll waits again


def test_close_puts_the_previous_handlers_back() -> None:
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    wakeup_before = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup_before)
    stop = StopSignal().install()
    assert all(signal.getsignal(sig) != before[sig] for sig in STOP_SIGNALS)
    read = stop.fileno()
    stop.close()
    assert {sig: signal.getsignal(sig) for sig in STOP_SIGNALS} == before
    assert signal.set_wakeup_fd(wakeup_before) == wakeup_before
    assert stop.fileno() == -1
    with pytest.raises(OSError):
        os.fstat(read)


def test_without_wake_there_is_no_pipe_but_the_flag_still_works() -> None:
    with StopSignal(wake=False) as stop:
        assert stop.fileno() == -1
        stop.drain()  # nothing to drain, no error
        os.kill(os.getpid(), signal.SIGTERM)
        support.wait_until(lambda: stop.requested, 5, "the handler to run")


def test_request_stops_from_inside() -> None:
    stop = StopSignal(wake=False)
    stop.request()
    assert stop.requested
    stop.close()

"""The restart policy, driven by a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etherws.supervisor.policy import Lifecycle, RestartPolicy, State


@pytest.mark.parametrize("n, delay", [(1, 0.0), (2, 0.5), (3, 1.0), (4, 2.0), (5, 4.0),
                                      (7, 16.0), (8, 30.0), (30, 30.0)])
def test_delay_is_immediate_then_doubles_from_half_a_second_to_30(n: int, delay: float) -> None:
    assert RestartPolicy().delay(n) == delay


@given(st.integers(min_value=1, max_value=200))
def test_delay_never_exceeds_cap_and_never_shrinks(n: int) -> None:
    p = RestartPolicy()
    assert 0 <= p.delay(n) <= p.max_delay_s
    assert p.delay(n + 1) >= p.delay(n)


def test_starting_until_first_heartbeat_then_up() -> None:
    life = Lifecycle()
    life.spawned(100.0)
    assert life.state is State.STARTING
    life.heartbeat(100.2)
    assert life.state is State.UP and life.up_since == 100.2


def test_first_crash_restarts_at_once_then_backs_off() -> None:
    life = Lifecycle()
    life.spawned(0.7)
    life.heartbeat(0.8)  # up, but not for min_run_s: a crash
    assert life.exited(1.0, "exited with status 1") is State.BACKOFF
    assert life.next_start_at == 1.0 and life.due(1.0)
    life.restarted(1.0)
    assert life.restarts == 1 and life.state is State.STARTING
    assert life.exited(2.0, "killed by SIGKILL") is State.BACKOFF
    assert not life.due(2.4) and life.due(2.5)


def test_five_crashes_within_a_minute_are_fatal_and_stay_fatal() -> None:
    life = Lifecycle()
    life.spawned(0.0)
    t = 0.0
    for i in range(4):
        assert life.exited(t, "exited with status 1") is State.BACKOFF
        t = life.next_start_at
        life.restarted(t)
    assert life.exited(t, "exited with status 1") is State.FATAL
    assert "5 crashes" in life.reason and "exited with status 1" in life.reason
    assert not life.due(t + 3600)


def test_crashes_spread_over_more_than_the_window_are_not_fatal() -> None:
    life = Lifecycle()
    life.spawned(0.0)
    for i in range(20):
        t = i * 20.0  # one crash every 20 s: at most 3 in any 60 s window
        assert life.exited(t, "boom") is State.BACKOFF
        life.restarted(t + 1)


def test_sixty_healthy_seconds_reset_the_backoff() -> None:
    life = Lifecycle()
    life.spawned(0.0)
    for _ in range(3):
        life.exited(life.started_at or 0.0, "boom")
        life.restarted(life.next_start_at or 0.0)
    start = life.started_at or 0.0
    life.heartbeat(start + 0.1)
    life.heartbeat(start + 61)
    life.exited(start + 200, "boom")
    assert life.next_start_at == start + 200  # immediate again


def test_reset_clears_fatal_history() -> None:
    life = Lifecycle()
    life.spawned(0.0)
    for _ in range(5):
        life.exited(1.0, "boom")
    assert life.state is State.FATAL
    life.reset()
    life.restarted(2.0)
    assert life.state is State.STARTING and life.reason == ""
    assert life.exited(3.0, "boom") is State.BACKOFF


def test_hung_detection() -> None:
    p = RestartPolicy(start_timeout_s=10, heartbeat_timeout_s=5)
    life = Lifecycle(p)
    life.spawned(0.0)
    assert life.hung(9.0, None) is None
    assert "not ready" in (life.hung(10.5, None) or "")
    life.heartbeat(1.0)
    assert life.hung(5.9, 1.0) is None
    assert "no heartbeat" in (life.hung(6.5, 1.0) or "")


def test_stopped_is_never_due() -> None:
    life = Lifecycle()
    life.spawned(0.0)
    life.stopped()
    assert life.state is State.STOPPED and not life.due(100.0)
    assert life.hung(100.0, None) is None


def test_a_process_killed_after_running_fine_is_restarted_at_once_every_time() -> None:
    life = Lifecycle()
    t = 0.0
    life.spawned(t)
    for i in range(25):  # a kill storm: one kill -9 a second, for 25 s
        life.heartbeat(t + 0.3)
        assert life.exited(t + 1.0, "killed by SIGKILL") is State.BACKOFF
        assert life.next_start_at == t + 1.0, i
        t += 1.0
        life.restarted(t)
    assert life.restarts == 25 and "crashes" not in life.reason


def test_a_process_that_exits_soon_after_it_starts_is_a_crash_loop() -> None:
    life = Lifecycle()
    life.spawned(0.0)
    t = 0.0
    states = []
    for _ in range(5):
        life.heartbeat(t + 0.01)
        states.append(life.exited(t + 0.05, "exited with status 1"))
        t = (life.next_start_at or t) + 0.0
        life.restarted(t)
    assert states == [State.BACKOFF] * 4 + [State.FATAL]


def test_too_many_quick_restarts_become_crashes() -> None:
    p = RestartPolicy(max_quick_restarts=3)
    life = Lifecycle(p)
    t = 0.0
    life.spawned(t)
    delays = []
    for _ in range(6):
        life.heartbeat(t + 0.1)
        life.exited(t + 1.0, "killed by SIGKILL")
        delays.append((life.next_start_at or 0.0) - (t + 1.0))
        t = life.next_start_at or 0.0
        life.restarted(t)
    assert delays == [0.0, 0.0, 0.0, 0.0, 0.5, 1.0]


def test_a_hung_kill_is_a_crash_even_after_a_good_run() -> None:
    life = Lifecycle()
    life.spawned(0.0)
    life.heartbeat(0.1)
    life.exited(10.0, "killed", counted=True)
    life.restarted(10.0)
    life.heartbeat(10.1)
    life.exited(20.0, "killed", counted=True)
    assert life.next_start_at == 20.5  # the second crash in a run: backed off


def test_a_runnable_process_gets_longer_before_it_is_called_hung() -> None:
    p = RestartPolicy(heartbeat_timeout_s=5, starved_timeout_s=30)
    life = Lifecycle(p)
    life.spawned(0.0)
    life.heartbeat(1.0)
    assert life.hung(7.0, 1.0, runnable=True) is None
    assert "no heartbeat" in (life.hung(7.0, 1.0, runnable=False) or "")
    assert "no heartbeat for 30.5s" in (life.hung(31.5, 1.0, runnable=True) or "")


def test_never_fatal_is_spelled_none() -> None:
    life = Lifecycle(RestartPolicy(max_crashes=None, max_delay_s=1.0))
    life.spawned(0.0)
    t = 0.0
    for _ in range(100):  # a hundred crashes within a minute: still restarted
        assert life.exited(t, "exited with status 1") is State.BACKOFF
        assert life.next_start_at is not None and life.next_start_at - t <= 1.0
        t = life.next_start_at
        life.restarted(t)
    for zero in (0, -1):
        with pytest.raises(ValueError, match="never FATAL"):
            RestartPolicy(max_crashes=zero)


def test_the_shown_reason_clears_after_a_healthy_minute_and_stays_as_history() -> None:
    life = Lifecycle()
    life.spawned(0.0)
    life.heartbeat(0.1)
    life.exited(0.2, "killed by SIGKILL")
    assert (life.reason, life.reason_at) == ("killed by SIGKILL", 0.2)
    life.restarted(0.2)
    life.heartbeat(0.3)
    assert life.shown_reason(30.0) == "killed by SIGKILL"
    life.heartbeat(60.3)
    assert life.shown_reason(60.3) == "" and life.reason == "killed by SIGKILL"

"""The event stream's contract: endpoints, the wire, the diffs of ports and FDB, the cap."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etherws import events
from etherws.events import EventError, MacCap, PortFacts, ProcessFacts

TAP = PortFacts(name="lan", kind="tap", target="ethws0", state="up", restarts=0, reason="")
CLIENT = PortFacts(name=None, kind="client", target="ws://gw/", state="up", restarts=0,
                   reason="", link="connecting")


def test_endpoints() -> None:
    assert events.local_endpoint("/run/etherws/") == "ipc:///run/etherws/events.sock"
    assert events.remote_endpoint("tcp://192.0.2.1:5555") == "tcp://192.0.2.1:5556"
    assert events.remote_endpoint("tcp://[2001:db8::1]:7000") == "tcp://[2001:db8::1]:7001"
    for bad in ("tcp://host", "tcp://host:x", "tcp://host:65535", "ipc:///x:1", "tcp://h:0"):
        with pytest.raises(EventError):
            events.remote_endpoint(bad)


def test_encode_decode_round_trip() -> None:
    frames = events.encode({"type": "port", "event": "added", "port": 3}, 1700000000.12345)
    assert frames[0] == b"port"
    body = events.decode(frames)
    assert body == {"v": 1, "time": 1700000000.123, "type": "port", "event": "added",
                    "port": 3}


@pytest.mark.parametrize("frames", [
    [b"port"], [b"port", b"{", b"x"], [b"port", b"not json"], [b"port", b"\xff"],
    [b"port", b"[]"], [b"port", json.dumps({"v": 2, "type": "port", "event": "x",
                                            "time": 1}).encode()],
    [b"port", json.dumps({"v": 1, "type": "port", "time": 1}).encode()],
    [b"port", json.dumps({"v": 1, "type": "port", "event": "x", "time": "1"}).encode()],
    [b"port", b"[" * 100000],
])
def test_decode_refuses_what_is_not_an_event(frames: list[bytes]) -> None:
    with pytest.raises(EventError):
        events.decode(frames)


def test_ports_added_removed_and_their_states() -> None:
    starting = PortFacts("lan", "tap", "ethws0", "starting", 0, "")
    assert events.port_events({}, {1: starting}) == [
        {"type": "port", "event": "added", "port": 1, "name": "lan", "kind": "tap",
         "target": "ethws0"}]
    assert [e["event"] for e in events.port_events({}, {1: TAP})] == ["added", "up"]
    assert events.port_events({1: TAP}, {}) == [
        {"type": "port", "event": "removed", "port": 1, "name": "lan", "kind": "tap",
         "target": "ethws0"}]
    assert events.port_events({1: TAP}, {1: TAP}) == []
    fatal = PortFacts("lan", "tap", "ethws0", "fatal", 4, "exited with status 1; 5 crashes")
    backoff = PortFacts("lan", "tap", "ethws0", "backoff", 3, "exited with status 1")
    assert events.port_events({1: backoff}, {1: fatal}) == [
        {"type": "worker", "event": "restart", "port": 1, "reason": fatal.reason,
         "restarts": 4},
        {"type": "port", "event": "fatal", "port": 1, "name": "lan", "kind": "tap",
         "target": "ethws0", "reason": fatal.reason}]
    stopped = PortFacts("lan", "tap", "ethws0", "stopped", 0, "")
    assert [e["event"] for e in events.port_events({1: TAP}, {1: stopped})] == ["down"]
    assert "reason" not in events.port_events({1: TAP}, {1: stopped})[0]


def test_a_restart_within_one_tick_is_one_restart_event_with_its_reason() -> None:
    again = PortFacts("lan", "tap", "ethws0", "up", 1, "killed by SIGKILL")
    assert events.port_events({1: TAP}, {1: again}) == [
        {"type": "worker", "event": "restart", "port": 1, "reason": "killed by SIGKILL",
         "restarts": 1}]


def test_tunnel_links() -> None:
    up = PortFacts(None, "client", "ws://gw/", "up", 0, "", link="up")
    backoff = PortFacts(None, "client", "ws://gw/", "up", 0, "", link="backoff",
                        link_error="connection refused")
    assert [e["event"] for e in events.port_events({}, {2: CLIENT})] == \
        ["added", "up", "connecting"]
    assert events.port_events({2: CLIENT}, {2: up}) == [
        {"type": "link", "event": "up", "port": 2}]
    assert events.port_events({2: up}, {2: backoff}) == [
        {"type": "link", "event": "backoff", "port": 2, "error": "connection refused"}]
    gone = PortFacts(None, "client", "ws://gw/", "stopped", 0, "", link=None)
    assert [e["event"] for e in events.port_events({2: up}, {2: gone})] == ["down"]


def test_a_port_the_loop_guard_blocks_and_opens() -> None:
    looped = dataclasses.replace(CLIENT, loop=True)
    port = {"type": "port", "port": 4, "name": None, "kind": "client", "target": "ws://gw/"}
    assert events.port_events({4: CLIENT}, {4: looped}) == [{**port, "event": "loop"}]
    assert events.port_events({4: looped}, {4: looped}) == []
    assert events.port_events({4: looped}, {4: CLIENT}) == [{**port, "event": "forwarding"}]
    assert events.describe({**port, "event": "loop"}) == "port 4 (client ws://gw/): loop"


def test_events_come_in_port_order() -> None:
    out = events.port_events({5: TAP, 1: TAP}, {1: TAP, 3: TAP})
    assert [(e["port"], e["event"]) for e in out] == [(3, "added"), (3, "up"),
                                                      (5, "removed")]


def test_the_switchs_own_processes() -> None:
    up = ProcessFacts("up", 0, "")
    assert events.process_events("broker", None, up) == []
    again = ProcessFacts("up", 1, "killed by SIGKILL")
    assert events.process_events("broker", up, again) == [
        {"type": "worker", "event": "restart", "process": "broker",
         "reason": "killed by SIGKILL", "restarts": 1}]
    fatal = ProcessFacts("fatal", 1, "crash loop")
    assert events.process_events("listener", again, fatal) == [
        {"type": "worker", "event": "fatal", "process": "listener", "reason": "crash loop"}]
    assert events.process_events("broker", fatal, ProcessFacts("up", 1, "x")) == [
        {"type": "worker", "event": "up", "process": "broker"}]


A, B = (0, "02:00:00:00:00:0a"), (10, "02:00:00:00:00:0b")


def test_macs_learned_moved_aged_and_flushed() -> None:
    assert events.mac_events({}, {A: (1, 100.0)}, 101.0, 300.0) == [
        {"type": "mac", "event": "learned", "vid": 0, "mac": A[1], "port": 1}]
    assert events.mac_events({A: (1, 100.0)}, {A: (2, 150.0)}, 151.0, 300.0) == [
        {"type": "mac", "event": "moved", "vid": 0, "mac": A[1], "port": 2, "from": 1}]
    assert events.mac_events({A: (1, 100.0)}, {A: (1, 150.0)}, 151.0, 300.0) == []
    # gone near its age-out time: aged; gone early: flushed (flushfdb, a deleted port)
    assert events.mac_events({A: (1, 100.0)}, {}, 399.0, 300.0)[0]["event"] == "aged"
    assert events.mac_events({B: (3, 100.0)}, {}, 150.0, 300.0) == [
        {"type": "mac", "event": "flushed", "vid": 10, "mac": B[1], "port": 3}]


def test_mac_events_are_sorted_by_vlan_and_mac() -> None:
    out = events.mac_events({B: (1, 0.0)}, {A: (1, 0.0)}, 1.0, 300.0)
    assert [(e["vid"], e["event"]) for e in out] == [(0, "learned"), (10, "flushed")]


def test_the_cap_lets_through_per_second_then_one_more_event() -> None:
    cap = MacCap(per_s=3)
    burst = [{"type": "mac", "event": "learned", "n": i} for i in range(10)]
    assert [e["n"] for e in cap.admit(burst, 100.0)] == [0, 1, 2]
    assert cap.admit(burst[:2], 100.5) == []
    assert cap.due(100.9) == []
    assert cap.due(101.0) == [{"type": "mac", "event": "more", "count": 9}]
    assert cap.due(101.5) == []
    out = cap.admit(burst[:4], 102.0)
    assert [e.get("n") for e in out] == [0, 1, 2]
    assert cap.admit([], 103.2) == [{"type": "mac", "event": "more", "count": 1}]
    with pytest.raises(ValueError):
        MacCap(0)


@given(st.lists(st.tuples(st.floats(0, 20), st.integers(0, 30)), max_size=40))
def test_the_cap_never_loses_count_and_never_exceeds_its_rate(
        batches: list[tuple[float, int]]) -> None:
    cap = MacCap(per_s=5)
    given_n, shown, more = 0, 0, 0
    per_second: dict[int, int] = {}
    for now, n in sorted(batches):
        out = cap.admit([{"type": "mac", "event": "learned"}] * n, now)
        given_n += n
        for e in out:
            if e["event"] == "more":
                more += e["count"]
            else:
                shown += 1
                per_second[int(now)] = per_second.get(int(now), 0) + 1
    tail = cap.due(10**6)
    more += tail[0]["count"] if tail else 0
    assert shown + more == given_n
    assert all(v <= 5 for v in per_second.values())


@pytest.mark.parametrize("event, line", [
    ({"type": "port", "event": "fatal", "port": 3, "kind": "tap", "target": "ethws0",
      "reason": "crash loop"}, "port 3 (tap ethws0): fatal: crash loop"),
    ({"type": "link", "event": "backoff", "port": 4, "error": "refused"},
     "port 4: link backoff: refused"),
    ({"type": "worker", "event": "restart", "port": 1, "reason": "killed by SIGKILL",
      "restarts": 2}, "port 1: worker restarted (killed by SIGKILL), restart 2"),
    ({"type": "worker", "event": "fatal", "process": "broker", "reason": "x"},
     "broker: worker fatal: x"),
    ({"type": "mac", "event": "moved", "vid": 0, "mac": A[1], "port": 2, "from": 1},
     f"mac {A[1]} vlan 0: moved from port 1 to port 2"),
    ({"type": "mac", "event": "learned", "vid": 5, "mac": A[1], "port": 2},
     f"mac {A[1]} vlan 5: learned (port 2)"),
    ({"type": "mac", "event": "more", "count": 7}, "mac: 7 more events in the last second"),
    ({"type": "stream", "event": "hello", "pid": 10, "ports": 2},
     "events of etherws-supervisor pid 10 (2 ports)"),
    ({"type": "stream", "event": "bye"}, "the supervisor is stopping"),
    ({"type": "future", "event": "thing"}, "future: thing"),
])
def test_describe(event: dict[str, object], line: str) -> None:
    assert events.describe(event) == line

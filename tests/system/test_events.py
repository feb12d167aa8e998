"""etherws-ctl events --json against a real switch: a worker killed with SIGKILL comes
back as a restart event with its reason; a MAC seen behind another port is a move."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tests.support import PYTHON, SCALE, kill_process, run, wait_until
from tests.system.harness import Switch, sigkill, two_hosts

Event = dict[str, Any]


class Stream:
    """etherws-ctl events --json in the background; its lines, decoded, in a queue."""

    def __init__(self, sw: Switch, *args: str) -> None:
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "etherws.ctl.cli", "--rundir", sw.rundir, "--json", "events",
             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.seen: list[Event] = []
        self._q: queue.Queue[Event | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._q.put(json.loads(line))
        self._q.put(None)

    def poll(self, match: Callable[[Event], bool]) -> Event | None:
        """The first event received so far that ``match``es, or None."""
        while True:
            try:
                event = self._q.get_nowait()
            except queue.Empty:
                break
            if event is not None:
                self.seen.append(event)
        return next((e for e in self.seen if match(e)), None)

    def wait_for(self, match: Callable[[Event], bool], timeout_s: float, what: str) -> Event:
        """The first event (from now on, or already seen) that ``match``es."""
        return wait_until(lambda: self.poll(match), timeout_s, f"{what}; seen: {self.seen}")

    def close(self) -> None:
        kill_process(self.proc)
        self._reader.join(timeout=5)


@contextmanager
def stream(sw: Switch, *args: str) -> Iterator[Stream]:
    s = Stream(sw, *args)
    try:
        s.wait_for(lambda e: e["type"] == "stream" and e["event"] == "hello", 10,
                   "the greeting")
        yield s
    finally:
        s.close()


def test_a_killed_worker_and_a_moved_mac_are_events(switch: Switch) -> None:
    # subscribed first: every address of the hosts is learned after the stream's first look
    with stream(switch) as ev, two_hosts(switch, "203.0.113.1", "203.0.113.2") as pair:
        pid = switch.port(pair.net_port)["pid"]
        sigkill(pid)
        restart = ev.wait_for(lambda e: e["type"] == "worker" and e["event"] == "restart"
                              and e.get("port") == pair.net_port, 10, "the restart")
        assert restart["reason"] == "killed by SIGKILL" and restart["restarts"] == 1
        assert {"v", "time", "type", "event", "port", "reason", "restarts"} == set(restart)
        switch.wait_port(pair.net_port, "up")

        # host A's address is learned behind the TAP port ...
        mac = pair.a.mac()
        pair.a.wait_ping(pair.b.address, 10)
        ev.wait_for(lambda e: e["type"] == "mac" and e["event"] == "learned"
                    and e["mac"] == mac and e["port"] == pair.tap_port, 10, "A learned")
        # ... then A falls silent and the same MAC speaks behind the netdev port (host B
        # takes it), until the stream's next look at the FDB sees it there
        run("ip", "-n", pair.a.ns, "link", "set", "dev", pair.a.inner, "down")
        run("ip", "-n", pair.b.ns, "link", "set", "dev", pair.b.inner, "address", mac)

        def speak_and_look() -> Event | None:
            run("ip", "netns", "exec", pair.b.ns, "ping", "-c", "1", "-W", "0.2", "-b",
                "203.0.113.255", check=False)
            return ev.poll(lambda e: e["type"] == "mac" and e["event"] == "moved"
                           and e["mac"] == mac)
        moved = wait_until(speak_and_look, 10, "the move")
        assert moved["from"] == pair.tap_port and moved["port"] == pair.net_port
        assert moved["vid"] == 0


def test_ports_added_removed_and_the_stop_end_the_stream(switch: Switch) -> None:
    with stream(switch) as ev:
        tap = "etwev" + os.urandom(3).hex()
        port = switch.add("tap", tap)
        ev.wait_for(lambda e: e["type"] == "port" and e["event"] == "added"
                    and e["port"] == port and e["target"] == tap, 10, "added")
        ev.wait_for(lambda e: e["type"] == "port" and e["event"] == "up"
                    and e["port"] == port, 10, "up")
        switch.ctl("delport", str(port))
        ev.wait_for(lambda e: e["type"] == "port" and e["event"] == "removed"
                    and e["port"] == port, 10, "removed")
        switch.ctl("--json", "status")
        switch.proc.terminate()
        ev.wait_for(lambda e: e["type"] == "stream" and e["event"] == "bye", 15, "bye")
        assert ev.proc.wait(timeout=10 * SCALE) == 0


def test_events_without_a_supervisor_is_unreachable(tmp_path) -> None:
    res = run(PYTHON, "-m", "etherws.ctl.cli", "--rundir", str(tmp_path), "events",
              check=False)
    assert res.returncode == 3 and "does not exist" in res.stderr

"""The event stream: what ``etherws-ctl events`` receives, and how it is found (pure).

The supervisor publishes on a ZeroMQ XPUB socket beside the control socket: locally
``ipc://RUNDIR/events.sock`` (mode 0600, like ``ctl.sock``), and with remote control on
``tcp://HOST:PORT`` also on ``tcp://HOST:PORT+1`` with the same CURVE keys and the same
allowed clients. Each message has two frames::

    topic     b"port" | b"link" | b"worker" | b"mac" | b"stream"   (SUB prefix filters)
    payload   one JSON object, UTF-8:
              {"v": 1, "time": UNIX_SECONDS, "type": TOPIC, "event": WHAT, ...}

    type    event                                     other fields
    port    added removed up down backoff fatal       port name kind target [reason]
    port    loop forwarding                           port name kind target
                                                      (the loop guard blocked it; opened it)
    worker  restart                                   port|process reason restarts
    worker  up backoff fatal                          process [reason]  (broker, listener)
    link    connecting up backoff failed              port [error]       (tunnel ports)
    mac     learned moved aged flushed                vid mac port [from]
    mac     more                                      count  (events over the cap, per second)
    stream  hello bye                                 pid ports  (a new subscriber; a stop)

Nothing here is per frame: the supervisor compares what it sees of its ports and of the
shared FDB on its own tick (``port_events``, ``mac_events``), and MAC events are capped
per second (``MacCap``) with one ``more`` event for the rest. Decoding raises EventError.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from etherws.errors import EtherwsError

VERSION = 1
SOCKET_NAME = "events.sock"
TOPICS = ("port", "link", "worker", "mac", "stream")
MAC_EVENTS_PER_S = 50
"""At most this many MAC events a second; the rest are counted in one ``more`` event."""
AGE_SLACK_S = 2.0
"""An entry that vanished this close to its age-out time aged (rather than was flushed):
the broker expires entries on its own tick, and the supervisor looks on its own."""

Event = dict[str, Any]


class EventError(EtherwsError):
    """A message that is not an event of this version."""


# --- where ------------------------------------------------------------------------------
def local_endpoint(rundir: str) -> str:
    """The ipc:// endpoint of the run directory ``rundir``."""
    return f"ipc://{rundir.rstrip('/')}/{SOCKET_NAME}"


def remote_endpoint(ctl: str) -> str:
    """The tcp:// event endpoint beside the tcp:// control endpoint ``ctl``: the next
    port. EventError when ``ctl`` has no numeric port, or its port is the last one."""
    head, sep, port = ctl.rpartition(":")
    if not ctl.startswith("tcp://") or not sep or not port.isdigit() \
            or not 0 < int(port) < 65535:
        raise EventError(f"no event endpoint beside {ctl!r} (tcp://HOST:PORT, PORT < 65535)")
    return f"{head}:{int(port) + 1}"


# --- the wire ----------------------------------------------------------------------------
def encode(event: Mapping[str, Any], at_s: float) -> list[bytes]:
    """The two frames of ``event`` (which has ``type`` and ``event``) stamped ``at_s``."""
    body = {"v": VERSION, "time": round(at_s, 3), **event}
    return [str(event["type"]).encode(), json.dumps(body, sort_keys=True).encode()]


def decode(frames: list[bytes]) -> Event:
    """An event from its frames; EventError when it is not one of this version."""
    if len(frames) != 2:
        raise EventError(f"an event has 2 frames, not {len(frames)}")
    try:
        body = json.loads(frames[1])
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise EventError("an event's payload is not JSON") from None
    if not isinstance(body, dict) or body.get("v") != VERSION:
        raise EventError("not an event of version 1")
    if not isinstance(body.get("type"), str) or not isinstance(body.get("event"), str) \
            or not isinstance(body.get("time"), (int, float)):
        raise EventError("an event needs type, event and time")
    return body


def describe(event: Mapping[str, Any]) -> str:
    """One line for a person (without the time): ``port 3 (tap ethws0): fatal: ...``."""
    kind, what = event.get("type"), event.get("event")
    why = event.get("reason") or event.get("error")
    tail = f": {why}" if why else ""
    if kind == "port":
        return (f"port {event.get('port')} ({event.get('kind')} {event.get('target')}): "
                f"{what}{tail}")
    if kind == "link":
        return f"port {event.get('port')}: link {what}{tail}"
    if kind == "worker":
        who = f"port {event['port']}" if "port" in event else str(event.get("process"))
        if what == "restart":
            return (f"{who}: worker restarted ({why or 'no reason'}), "
                    f"restart {event.get('restarts')}")
        return f"{who}: worker {what}{tail}"
    if kind == "mac":
        if what == "more":
            return f"mac: {event.get('count')} more events in the last second"
        where = f"from port {event.get('from')} to port {event.get('port')}" \
            if what == "moved" else f"(port {event.get('port')})"
        return f"mac {event.get('mac')} vlan {event.get('vid')}: {what} {where}"
    if kind == "stream" and what == "hello":
        return (f"events of etherws-supervisor pid {event.get('pid')} "
                f"({event.get('ports')} ports)")
    if kind == "stream" and what == "bye":
        return "the supervisor is stopping"
    return f"{kind}: {what}"


# --- ports and processes ---------------------------------------------------------------
@dataclass(frozen=True)
class PortFacts:
    """What the event stream follows of one port."""

    name: str | None
    kind: str
    target: str
    state: str
    restarts: int
    reason: str
    link: str | None = None
    link_error: str = ""
    loop: bool = False
    """The loop guard blocks the port."""


STATE_EVENTS = {"up": "up", "backoff": "backoff", "fatal": "fatal", "stopped": "down"}
"""A port's process state -> its event ("starting" is told by the restart event)."""


def _port_event(number: int, facts: PortFacts, what: str) -> Event:
    event: Event = {"type": "port", "event": what, "port": number, "name": facts.name,
                    "kind": facts.kind, "target": facts.target}
    if what in ("backoff", "fatal", "down") and facts.reason:
        event["reason"] = facts.reason
    return event


def port_events(before: Mapping[int, PortFacts], after: Mapping[int, PortFacts]) -> list[Event]:
    """What happened to the ports between two looks, in port order."""
    out: list[Event] = []
    for number in sorted(set(before) | set(after)):
        old, new = before.get(number), after.get(number)
        if new is None:
            assert old is not None
            out.append(_port_event(number, old, "removed"))
            continue
        if old is None:
            out.append(_port_event(number, new, "added"))
            if new.state in ("up", "backoff", "fatal"):
                out.append(_port_event(number, new, STATE_EVENTS[new.state]))
            if new.link is not None:
                out.append(_link_event(number, new))
            continue
        if new.restarts > old.restarts:
            out.append({"type": "worker", "event": "restart", "port": number,
                        "reason": new.reason, "restarts": new.restarts})
        if new.state != old.state and new.state in STATE_EVENTS:
            out.append(_port_event(number, new, STATE_EVENTS[new.state]))
        if new.link != old.link and new.link is not None:
            out.append(_link_event(number, new))
        if new.loop != old.loop:
            out.append(_port_event(number, new, "loop" if new.loop else "forwarding"))
    return out


def _link_event(number: int, facts: PortFacts) -> Event:
    event: Event = {"type": "link", "event": facts.link, "port": number}
    if facts.link != "up" and facts.link_error:
        event["error"] = facts.link_error
    return event


@dataclass(frozen=True)
class ProcessFacts:
    """What the event stream follows of the broker and the listener."""

    state: str
    restarts: int
    reason: str


def process_events(name: str, old: ProcessFacts | None, new: ProcessFacts) -> list[Event]:
    """What happened to the switch's own process ``name`` (broker, listener)."""
    if old is None:
        return []
    out: list[Event] = []
    if new.restarts > old.restarts:
        out.append({"type": "worker", "event": "restart", "process": name,
                    "reason": new.reason, "restarts": new.restarts})
    if new.state != old.state and new.state in ("up", "backoff", "fatal"):
        event: Event = {"type": "worker", "event": new.state, "process": name}
        if new.state != "up" and new.reason:
            event["reason"] = new.reason
        out.append(event)
    return out


# --- learned addresses -------------------------------------------------------------------
FdbView = Mapping[tuple[int, str], tuple[int, float]]
"""(vid, MAC text) -> (port, last seen, monotonic seconds): the live entries of the FDB."""


def mac_events(before: FdbView, after: FdbView, now_s: float, ageout_s: float) -> list[Event]:
    """Addresses learned, moved to another port, aged out or flushed (deleted port,
    flushfdb) between two looks at the FDB, sorted by (vid, MAC)."""
    out: list[Event] = []
    for key in sorted(set(before) | set(after)):
        vid, mac = key
        old, new = before.get(key), after.get(key)
        if new is not None and old is None:
            out.append({"type": "mac", "event": "learned", "vid": vid, "mac": mac,
                        "port": new[0]})
        elif new is not None and old is not None and new[0] != old[0]:
            out.append({"type": "mac", "event": "moved", "vid": vid, "mac": mac,
                        "port": new[0], "from": old[0]})
        elif new is None and old is not None:
            what = "aged" if now_s - old[1] >= ageout_s - AGE_SLACK_S else "flushed"
            out.append({"type": "mac", "event": what, "vid": vid, "mac": mac,
                        "port": old[0]})
    return out


class MacCap:
    """At most ``per_s`` MAC events in each second; the rest become one ``more`` event,
    sent with the first admission of a later second (or by ``due`` when all is quiet)."""

    def __init__(self, per_s: int = MAC_EVENTS_PER_S) -> None:
        if per_s < 1:
            raise ValueError("per_s must be positive")
        self.per_s = per_s
        self._second: int | None = None
        self._sent = 0
        self._held = 0

    def due(self, now_s: float) -> list[Event]:
        """The ``more`` event of a past second, if any was held back."""
        second = int(now_s // 1)
        if second == self._second:
            return []
        self._second, self._sent = second, 0
        held, self._held = self._held, 0
        return [{"type": "mac", "event": "more", "count": held}] if held else []

    def admit(self, events: list[Event], now_s: float) -> list[Event]:
        """The events to publish now, the ``more`` of a past second first."""
        out = self.due(now_s)
        room = max(0, self.per_s - self._sent)
        out += events[:room]
        self._sent += min(room, len(events))
        self._held += max(0, len(events) - room)
        return out

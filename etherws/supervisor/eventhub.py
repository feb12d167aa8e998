"""The supervisor's event stream (I/O): XPUB sockets and the looks that feed them.

The events themselves (what changed, the wire format, the MAC cap) are ``etherws.events``.
This shell looks at the ports and the shared FDB on the supervisor's tick and publishes
the differences. It costs nothing while no one listens: XPUB tells when the first
subscriber comes and the last goes (XPUB_VERBOSER passes every subscribe and
unsubscribe, disconnects included), and without one nothing is looked at; the next
subscriber starts from a fresh look (and gets a ``hello``), not from stale history.
The FDB, a scan of every entry, is looked at once a second at most and only when
someone subscribed to ``mac``.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter

import zmq

from etherws import events
from etherws.events import FdbView, MacCap, PortFacts, ProcessFacts
from etherws.frame import mac_to_text
from etherws.supervisor.children import Child
from etherws.supervisor.ports import Port, PortManager
from etherws.tables import FdbTable, aged, split_key

log = logging.getLogger(__name__)

FDB_LOOK_S = 1.0
SUBSCRIBE, UNSUBSCRIBE = 1, 0


class EventHub:
    """The XPUB sockets (local, and remote beside tcp:// control) and the last look."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], rundir: str) -> None:
        self._ctx = ctx
        self.local = events.local_endpoint(rundir)
        self._socks: list[zmq.Socket[bytes]] = []
        self._subs: Counter[bytes] = Counter()
        self._ports: dict[int, PortFacts] | None = None
        self._procs: dict[str, ProcessFacts] = {}
        self._fdb: FdbView | None = None
        self._fdb_due = 0.0
        self._cap = MacCap()

    def _socket(self) -> zmq.Socket[bytes]:
        sock: zmq.Socket[bytes] = self._ctx.socket(zmq.XPUB)
        self._socks.append(sock)  # closed by close() whatever happens next
        sock.setsockopt(zmq.LINGER, 200)  # the "bye" of a stop gets out
        sock.setsockopt(zmq.XPUB_VERBOSER, 1)
        sock.setsockopt(zmq.SNDHWM, 10000)  # a slow subscriber loses events, never us
        sock.setsockopt(zmq.MAXMSGSIZE, 1024)  # subscriptions are short
        return sock

    def open(self, remote: tuple[str, bytes, bytes] | None = None) -> None:
        """Bind the local socket (0600), and ``remote`` = (tcp endpoint, CURVE public,
        secret key) if given; zmq.ZMQError when an address cannot be bound."""
        sock = self._socket()
        old = os.umask(0o077)
        try:
            sock.bind(self.local)
        finally:
            os.umask(old)
        os.chmod(self.local[len("ipc://"):], 0o600)
        if remote is not None:
            endpoint, public, secret = remote
            sock = self._socket()
            sock.curve_publickey, sock.curve_secretkey = public, secret
            sock.curve_server = True
            sock.setsockopt(zmq.HANDSHAKE_IVL, 5000)
            sock.bind(endpoint)
            log.info("events on %s (CURVE, the control socket's clients)", endpoint)

    def close(self, stopping: bool = True) -> None:
        """Say bye to subscribers (``stopping``) and close the sockets."""
        if stopping and self._subs:
            self._publish([{"type": "stream", "event": "bye", "pid": os.getpid()}])
        for sock in self._socks:
            sock.close()
        self._socks.clear()

    # --- the tick -------------------------------------------------------------------
    def tick(self, now: float, ports: PortManager, fdb: FdbTable, ageout_s: float) -> None:
        """Read subscriptions; when someone listens, publish what changed since the last
        look."""
        hello = self._read_subscriptions()
        if not self._subs:
            self._ports, self._fdb, self._procs = None, None, {}
            return
        facts = {n: _port_facts(ports, p) for n, p in ports.ports.items()}
        out = [] if self._ports is None else events.port_events(self._ports, facts)
        self._ports = facts
        for name, child in (("broker", ports.broker), ("listener", ports.listener)):
            if child is not None:
                new = _process_facts(child)
                out += events.process_events(name, self._procs.get(name), new)
                self._procs[name] = new
        if hello:
            out.append({"type": "stream", "event": "hello", "pid": os.getpid(),
                        "ports": len(facts)})
        if self._wants(b"mac"):
            out += self._look_at_fdb(now, ports, fdb, ageout_s)
        else:
            self._fdb = None
        self._publish(out)

    def _look_at_fdb(self, now: float, ports: PortManager, fdb: FdbTable,
                     ageout_s: float) -> list[events.Event]:
        if now < self._fdb_due:
            return self._cap.due(now)
        self._fdb_due = now + FDB_LOOK_S
        now_s = time.monotonic_ns() / 1e9  # the clock of the FDB's last-seen stamps
        view: dict[tuple[int, str], tuple[int, float]] = {}
        for _, key, port, seen_ns in fdb.entries():
            seen = seen_ns / 1e9
            if aged(now_s, seen, ageout_s) or port not in ports.ports:
                continue  # as listfdb: gone for the operator, whatever the broker did yet
            vid, mac = split_key(key)
            view[(vid, mac_to_text(mac))] = (port, seen)
        found = [] if self._fdb is None else events.mac_events(self._fdb, view, now_s,
                                                               ageout_s)
        self._fdb = view
        return self._cap.admit(found, now)

    def _wants(self, topic: bytes) -> bool:
        return any(topic.startswith(prefix) for prefix in self._subs)

    def _read_subscriptions(self) -> bool:
        """Apply pending (un)subscriptions; True when someone new subscribed."""
        new = False
        for sock in self._socks:
            while True:
                try:
                    msg = sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if msg[:1] == bytes([SUBSCRIBE]):
                    self._subs[msg[1:]] += 1
                    new = True
                elif msg[:1] == bytes([UNSUBSCRIBE]) and self._subs[msg[1:]] > 0:
                    self._subs[msg[1:]] -= 1
                    if not self._subs[msg[1:]]:
                        del self._subs[msg[1:]]
        return new

    def _publish(self, out: list[events.Event]) -> None:
        at = time.time()
        for event in out:
            frames = events.encode(event, at)
            for sock in self._socks:
                try:
                    sock.send_multipart(frames, zmq.NOBLOCK)
                except zmq.Again:  # XPUB drops for a slow subscriber; never blocks us
                    pass


def _port_facts(ports: PortManager, port: Port) -> PortFacts:
    link = ports.link(port)
    life = port.child.life
    return PortFacts(name=port.name, kind=port.kind.label, target=port.target,
                     state=life.state.value, restarts=life.restarts, reason=life.reason,
                     link=None if link is None else str(link["state"]),
                     link_error="" if link is None else str(link.get("error") or ""),
                     loop=bool(ports.table.read(port.slot).loop_since_ns))


def _process_facts(child: Child) -> ProcessFacts:
    life = child.life
    return ProcessFacts(state=life.state.value, restarts=life.restarts, reason=life.reason)

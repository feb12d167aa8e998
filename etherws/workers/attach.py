"""A port worker's session with the broker (I/O over ``etherws.session``).

A DEALER to the broker's session ROUTER. The worker attaches once its rings are mapped,
and again whenever the port table names a new broker (a restarted broker knows no
worker until it speaks); it detaches when it stops cleanly. Replies are read on the
loop's tick, never waited for: the rings work without the session, so a broker that is
restarting delays nothing. A refusal (another live worker has the port, or the ring is
from another life of the port) ends the worker.

ZeroMQ wakes its I/O thread only for these few messages, never per frame.
"""

from __future__ import annotations

import logging
import os

import zmq

from etherws import session
from etherws.errors import EtherwsError
from etherws.paths import RunDir
from etherws.tables import PortTable

log = logging.getLogger(__name__)


class PortRefused(EtherwsError):
    """The broker refused this worker its port (the reason is the message)."""


class BrokerSession:
    """Attach, re-attach after a broker restart, detach."""

    def __init__(self, rundir: str, port: int, generation: int, table: PortTable) -> None:
        self.port, self.generation, self.table = port, generation, table
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.MAXMSGSIZE, 1024)
        self.socket.connect(RunDir(rundir).session_endpoint)
        self._broker_pid = -1  # the broker last attached to (-1: none yet)
        self.attached_to = 0
        """The pid of the broker that said ATTACHED (0: none yet)."""

    def _send(self, kind: bytes) -> None:
        msg = session.Message(kind, self.port, self.generation, os.getpid())
        try:
            self.socket.send(session.encode(msg), zmq.NOBLOCK)
        except zmq.Again:  # the broker is away: the next tick asks again
            self._broker_pid = -1

    def tick(self) -> None:
        """Attach to a new broker; read the replies. Raises PortRefused."""
        broker = self.table.broker_pid()
        if broker != self._broker_pid:
            self._broker_pid = broker
            self._send(session.ATTACH)
        while True:
            try:
                data = self.socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                m = session.decode(data)
            except session.SessionError:
                log.warning("a malformed session message from the broker was dropped")
                continue
            if m.kind == session.REFUSED:
                raise PortRefused(f"the broker refused port {self.port}: {m.reason}")
            if m.kind == session.ATTACHED and m.pid != self.attached_to:
                self.attached_to = m.pid
                log.debug("attached to broker %d", m.pid)

    def close(self, detach: bool) -> None:
        """Detach (a clean stop) and close the socket and the context."""
        if detach:
            self._send(session.DETACH)
            self.socket.close(linger=100)  # a short linger: the DETACH may still go
        else:
            self.socket.close(linger=0)
        self.context.term()

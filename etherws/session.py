"""The session between a port worker and the broker around the rings (pure).

Transport: ZeroMQ over ``ipc://RUNDIR/session.sock`` (``RunDir.session_endpoint``); the
broker binds a ROUTER, every port worker connects a DEALER. Frames never travel here:
they are in the rings (``etherws.ring``). A message is one ZeroMQ frame::

    ATTACH    b"A" port u32, generation u64, pid u32       worker -> broker
    ATTACHED  b"K" port u32, generation u64, broker pid u32 broker -> worker
    REFUSED   b"R" port u32, the reason (UTF-8)             broker -> worker
    DETACH    b"D" port u32, generation u64, pid u32       worker -> broker

A worker attaches when it has mapped its rings, and again whenever the broker's pid in
the port table changes (a restarted broker knows no worker until it speaks). The broker
refuses a generation that is not the port's (a ring file from another life of the port)
and a second worker while the attached one is still alive (two producers would corrupt
an up ring); a refused worker exits. A worker that stops cleanly detaches. The rings
work without the session: frames queue in them while either side restarts.

Pauses are not messages: the broker writes them into the worker's slot of the port table
(``tables.BrokerView.hold``), where the worker reads them at no cost before every read.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from etherws.errors import EtherwsError

ATTACH, ATTACHED, REFUSED, DETACH = b"A", b"K", b"R", b"D"
_IDS = struct.Struct("<IQI")  # port, generation, pid
_PORT = struct.Struct("<I")
MAX_REASON = 200


class SessionError(EtherwsError):
    """A session message that does not follow this format (dropped and counted)."""


@dataclass(frozen=True)
class Message:
    """One session message; ``pid`` is the worker's (ATTACH, DETACH) or the broker's
    (ATTACHED); ``reason`` only for REFUSED."""

    kind: bytes
    port: int
    generation: int = 0
    pid: int = 0
    reason: str = ""


def encode(m: Message) -> bytes:
    """The wire form of ``m``."""
    if m.kind == REFUSED:
        return REFUSED + _PORT.pack(m.port) + m.reason.encode()[:MAX_REASON]
    if m.kind not in (ATTACH, ATTACHED, DETACH):
        raise SessionError(f"unknown session message kind {m.kind!r}")
    return m.kind + _IDS.pack(m.port, m.generation, m.pid)


def decode(data: bytes) -> Message:
    """The message in ``data``; SessionError for anything else."""
    kind = data[:1]
    if kind == REFUSED and _PORT.size < len(data) <= 1 + _PORT.size + MAX_REASON:
        (port,) = _PORT.unpack_from(data, 1)
        return Message(REFUSED, port, reason=data[1 + _PORT.size:].decode("utf-8", "replace"))
    if kind in (ATTACH, ATTACHED, DETACH) and len(data) == 1 + _IDS.size:
        port, generation, pid = _IDS.unpack_from(data, 1)
        return Message(kind, port, generation, pid)
    raise SessionError(f"not a session message ({len(data)} bytes)")


def check_attach(m: Message, port_generation: int | None, attached_pid: int | None,
                 attached_alive: bool) -> str:
    """Why the broker refuses the attach ``m`` ("" to accept it), given the port's ring
    generation in the port table (None: no such port) and the worker attached now."""
    if port_generation is None:
        return f"port {m.port} does not exist"
    if m.generation != port_generation:
        return (f"ring generation {m.generation:x} is not port {m.port}'s "
                f"({port_generation:x})")
    if attached_pid is not None and attached_pid != m.pid and attached_alive:
        return f"port {m.port} has a live worker already (pid {attached_pid})"
    return ""

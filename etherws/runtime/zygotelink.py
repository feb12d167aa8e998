"""The supervisor's link to the zygote, the process that forks peer workers (I/O).

A Unix ``SOCK_SEQPACKET`` socket pair, made anew for every zygote start (so a request a
dead zygote never answered cannot reach the next one). One message each way per fork:

- request, supervisor to zygote: ASCII JSON ``{"v": 1, "argv": [...]}`` (the peer
  worker's arguments, after ``python -m etherws.workers.peer``), at most MAX_REQUEST
  bytes, with exactly one descriptor (the accepted connection) in ``SCM_RIGHTS``;
- reply, zygote to supervisor: ``{"v": 1, "pid": N}`` (the worker, already a child of
  the supervisor) or ``{"v": 1, "error": "..."}``.

The zygote also sends ``{"v": 1, "beat": true}`` once it is ready and every BEAT_S
after, so the supervisor watches it like every other process. A malformed request is
dropped (its descriptors closed) and counted by the zygote; a malformed reply is the
zygote's bug and ends it.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from etherws.runtime import fdpass

VERSION = 1
MAX_REQUEST = 16384
MAX_REPLY = 512
BEAT_S = 1.0


def pair() -> tuple[socket.socket, socket.socket]:
    """(supervisor's end, zygote's end); the zygote's end is inheritable."""
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.set_inheritable(True)
    return mine, theirs


def _encode(message: dict[str, Any]) -> bytes:
    return json.dumps({"v": VERSION, **message}, separators=(",", ":")).encode("ascii")


def send_request(sock: socket.socket, argv: list[str], fd: int) -> None:
    """Ask for a worker with ``argv`` and the connection ``fd`` (the caller keeps its
    copy). OSError as ``sendmsg`` raises it; ValueError when ``argv`` is too long."""
    payload = _encode({"argv": argv})
    if len(payload) > MAX_REQUEST:
        raise ValueError(f"a fork request of {len(payload)} bytes (at most {MAX_REQUEST})")
    socket.send_fds(sock, [payload], [fd], socket.MSG_NOSIGNAL)


def recv_request(sock: socket.socket) -> tuple[list[str], int] | None:
    """One request: ``(argv, fd)``, the fd now the caller's; None when malformed (every
    descriptor that came with it closed). EOFError when the supervisor has gone."""
    data, fds = fdpass.recv_with_fds(sock, MAX_REQUEST)
    message = fdpass.decode(data, VERSION) if data is not None else None
    argv = message.get("argv") if message is not None else None
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv) \
            or len(fds) != 1:
        for fd in fds:
            os.close(fd)
        return None
    return argv, fds[0]


def send_reply(sock: socket.socket, **message: Any) -> None:
    """A reply or a beat (``pid=N``, ``error="..."``, ``beat=True``)."""
    sock.send(_encode(message), socket.MSG_NOSIGNAL)


def decode_reply(data: bytes) -> dict[str, Any] | None:
    """A reply or beat as a dict, or None when malformed."""
    return fdpass.decode(data, VERSION) if len(data) <= MAX_REPLY else None

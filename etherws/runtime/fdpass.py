"""Handing an accepted connection to another process (I/O).

The listener passes every accepted TCP socket to the supervisor, which gives it to a
new peer worker. The carrier is a Unix ``SOCK_SEQPACKET`` connection: one message per
connection, message boundaries kept, the descriptor in ``SCM_RIGHTS`` ancillary data
(unix(7)), so a message cannot be split from or merged with its fd.

Message format, version 1 (the contract; both ends use this module):

- payload: ASCII JSON ``{"v": 1, "peer": "<address>"}``, at most MAX_PAYLOAD bytes,
  ``<address>`` printable ASCII of at most MAX_PEER characters (``192.0.2.7:51234``,
  ``[2001:db8::7]:51234``) for the log and ``listport``;
- ancillary data: exactly one descriptor, a socket.

Anything else is malformed: :func:`recv_conn` closes every descriptor that came with
it and returns None, so a bad message costs the receiver nothing and leaks nothing.
SCM_RIGHTS passes the open file description, not a copy: O_NONBLOCK and socket
options are shared with the sender's copy, which the sender closes after sending.
"""

from __future__ import annotations

import array
import json
import os
import socket
import stat
from typing import Any

VERSION = 1
MAX_PAYLOAD = 256
MAX_PEER = 64
#: Room for more descriptors than allowed, so that a message with too many is seen and
#: all of them closed; beyond this the kernel drops the rest itself (MSG_CTRUNC).
_FD_ROOM = 4
_FD_BYTES = array.array("i").itemsize


def send_conn(sock: socket.socket, fd: int, peer: str) -> None:
    """Send ``fd`` (a connected socket) and its peer address as one message.

    Raises OSError as ``sendmsg`` does (EAGAIN on a non-blocking, full socket; EPIPE
    or ECONNRESET when the receiver has gone); ValueError for an unusable ``peer``.
    The caller keeps ``fd`` and closes its own copy afterwards.
    """
    if not _valid_peer(peer):
        raise ValueError(f"unusable peer address {peer!r}")
    payload = json.dumps({"v": VERSION, "peer": peer}, separators=(",", ":")).encode("ascii")
    # MSG_NOSIGNAL: a receiver that went away is an EPIPE error, never a SIGPIPE.
    socket.send_fds(sock, [payload], [fd], socket.MSG_NOSIGNAL)


def recv_conn(sock: socket.socket) -> tuple[int, str] | None:
    """One message: ``(fd, peer)``, the fd now owned by the caller; None if malformed.

    Raises EOFError when the sender has closed the connection (a zero-length read with
    no descriptor: version 1 never sends an empty message), and OSError as ``recvmsg``
    does (BlockingIOError when a non-blocking socket has nothing).
    """
    data, fds = recv_with_fds(sock, MAX_PAYLOAD)
    peer = _peer_of(data) if data is not None else None
    if peer is None or len(fds) != 1 or not _is_socket(fds[0]):
        for fd in fds:
            os.close(fd)
        return None
    return fds[0], peer


def recv_with_fds(sock: socket.socket, max_payload: int) -> tuple[bytes | None, list[int]]:
    """One message of at most ``max_payload`` bytes and the descriptors that came with it
    (now the caller's, close-on-exec); the bytes are None when the message or its
    descriptors were cut short. EOFError when the sender has closed the connection (a
    zero-length read with no descriptor: no message here is empty), OSError as
    ``recvmsg`` raises it (BlockingIOError when a non-blocking socket has nothing)."""
    # MSG_CMSG_CLOEXEC: a received fd must not leak into whatever this process spawns
    # next; the supervisor hands it on explicitly (pass_fds).
    data, ancdata, flags, _addr = sock.recvmsg(
        max_payload + 1, socket.CMSG_SPACE(_FD_ROOM * _FD_BYTES), socket.MSG_CMSG_CLOEXEC)
    fds = _fds_of(ancdata)
    if not data and not fds and not flags & socket.MSG_CTRUNC:
        raise EOFError("the sending side closed the connection")
    return (None if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) else data), fds


def _fds_of(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    """Every descriptor in SCM_RIGHTS messages; other control messages are ignored."""
    fds = array.array("i")
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            # A truncated control message may end in part of an int: only whole ones
            # are descriptors (the same care as socket.recv_fds).
            fds.frombytes(data[:len(data) - len(data) % _FD_BYTES])
    return list(fds)


def decode(data: bytes, version: int = VERSION) -> dict[str, Any] | None:
    """An ASCII JSON object whose ``"v"`` is ``version``, else None."""
    try:
        message = json.loads(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(message, dict) or message.get("v") != version:
        return None
    return message


def _peer_of(data: bytes) -> str | None:
    """The peer address of a well-formed version-1 payload, else None."""
    message = decode(data)
    if message is None:
        return None
    peer = message.get("peer")
    return peer if isinstance(peer, str) and _valid_peer(peer) else None


def _valid_peer(peer: str) -> bool:
    return 0 < len(peer) <= MAX_PEER and peer.isascii() and peer.isprintable()


def _is_socket(fd: int) -> bool:
    try:
        return stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:
        return False

"""The data-plane message format between port workers and the broker (pure).

Transport: ZeroMQ over ``ipc://RUNDIR/data.sock``. The broker binds a ROUTER; every
port worker connects a DEALER whose routing id is ``routing_id(port)``.

A message is **one** ZeroMQ frame (plus the routing-id frame the ROUTER adds or
consumes) holding a batch of Ethernet frames::

    offset 0   version           1 byte, VERSION
    offset 1   length of frame 1 2 bytes, big-endian, 1..65535
               frame 1           that many bytes
               length of frame 2 ...
               ...               up to MAX_BATCH_FRAMES frames

Batches, not multipart messages: pyzmq spends ~3 µs per part in Python whatever the
size, so packing frames into one part is what makes batching pay (the broker's cost
fell from 8-10 to 2.4-3.2 µs a frame, measured). Both directions use the same format.
"""

from __future__ import annotations

import struct
from typing import Iterator

from etherws.errors import EtherwsError

VERSION = 1
MAX_BATCH_FRAMES = 64
"""Most frames a sender packs into one batch (bounded work per wake-up)."""
MAX_BATCH_BYTES = 128 * 1024
"""Most frame bytes a sender packs into one batch (a larger frame travels alone): 64
frames of MTU 1500 still fit (smaller batches cost TCP throughput: 32 KiB measured
0.70-0.75 against 0.85-0.92 Gbit/s), while jumbo frames cannot make a queue of HWM
batches arbitrarily large."""
HWM = 64
"""High-water mark of the data plane's queues, in batches: the broker's receive side,
twice that towards each port, and a worker's send side (one read of a medium can make
several batches at MTU 9000: 64 frames, 128 KiB each). With 1000 (advised against the
false EAGAIN libzmq's lazy credit updates give at a mark of 100) the sending client worker reached
47-56 MiB under tools/bench's 2x overload, past the 40 MiB target; 64 measured the same
TCP throughput and fewer overload drops."""
WORKER_RCVHWM = 16
"""A port worker's receive high-water mark, in batches: at most 2 MiB of the broker's
batches queued in a worker. At 64, fuller batches (workers.coalesce) took the sending
client worker to 39-41 MiB under 2x overload at MTU 9000; 16 measured the same TCP
throughput and overload figures with 35 MiB. The broker's send queue holds the rest."""
MAX_MESSAGE = 1 + MAX_BATCH_FRAMES * (2 + 65535)
"""Largest valid message; set as ZMQ_MAXMSGSIZE on every data-plane socket."""

_LEN = struct.Struct("!H")
_VERSION_BYTE = bytes([VERSION])


class IpcError(EtherwsError):
    """A data-plane message that does not follow this format (dropped and counted)."""


def routing_id(port: int) -> bytes:
    """The DEALER routing id of a port worker: ``b"p"`` and the port number as 4 bytes."""
    return b"p" + port.to_bytes(4, "big")


def port_of(rid: bytes) -> int:
    """Inverse of routing_id; raises IpcError for anything else."""
    if len(rid) != 5 or rid[:1] != b"p":
        raise IpcError(f"not a port routing id: {rid!r}")
    return int.from_bytes(rid[1:], "big")


def pack(frames: list[bytes]) -> bytes:
    """Pack frames (each 1..65535 bytes, at most MAX_BATCH_FRAMES) into one message.

    Raises IpcError for frames or batches that unpack() would refuse: a sender must
    drop such a frame on its own rather than lose the whole batch at the receiver.
    """
    if len(frames) > MAX_BATCH_FRAMES:
        raise IpcError(f"batch of {len(frames)} frames exceeds {MAX_BATCH_FRAMES}")
    parts = [_VERSION_BYTE]
    for f in frames:
        n = len(f)
        if not 0 < n <= 0xFFFF:
            raise IpcError(f"frame of {n} bytes cannot be carried")
        parts.append(_LEN.pack(n))
        parts.append(f)
    return b"".join(parts)


def batches(frames: list[bytes]) -> Iterator[list[bytes]]:
    """``frames`` cut into batches of at most MAX_BATCH_FRAMES frames and MAX_BATCH_BYTES
    bytes (a frame larger than that alone), in order; nothing for no frames."""
    if not frames:
        return
    if len(frames) <= MAX_BATCH_FRAMES and sum(map(len, frames)) <= MAX_BATCH_BYTES:
        yield frames  # the common case: no copy of the list
        return
    batch: list[bytes] = []
    size = 0
    for f in frames:
        if batch and (len(batch) == MAX_BATCH_FRAMES or size + len(f) > MAX_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(f)
        size += len(f)
    if batch:
        yield batch


def unpack(message: bytes) -> list[bytes]:
    """Split a message into its frames; raises IpcError when it is malformed."""
    if not message or message[0] != VERSION:
        raise IpcError("empty message or unknown batch version")
    frames = []
    off, end = 1, len(message)
    while off < end:
        if off + 2 > end:
            raise IpcError("truncated length prefix")
        (n,) = _LEN.unpack_from(message, off)
        off += 2
        if n == 0 or off + n > end:
            raise IpcError("frame length 0 or past the end of the message")
        frames.append(message[off : off + n])
        off += n
    if len(frames) > MAX_BATCH_FRAMES:
        raise IpcError(f"batch of {len(frames)} frames exceeds {MAX_BATCH_FRAMES}")
    return frames

"""The per-port frame rings between a port worker and the broker (pure; the buffer is given).

Each port has one ring file on tmpfs in the run directory (``RunDir.ring``), created by
the supervisor with the port and mapped by that port's worker and the broker only. It
holds two single-producer/single-consumer rings of records: ``up`` (worker -> broker) and
``down`` (broker -> worker), each CAPACITY bytes::

    byte 0      header words (supervisor, at creation):
                  0 MAGIC  1 VERSION  2 port  3 generation  4 capacity (bytes per ring)
    CTL_OFFSET  ring control, up then down; every word on its own 128-byte line so the
                two processes never write the same cache line:
                  head       bytes published by the producer (monotonic, 64-bit)
                  tail       bytes released by the consumer (monotonic, 64-bit)
                  armed      the consumer sleeps: ring its doorbell after publishing
                  waiting    the producer waits for room: ring its doorbell after releasing
    DATA_OFFSET up ring data, then down ring data (capacity bytes each)

A record starts at ``head % capacity`` on an 8-byte boundary::

    0 length u32: bytes after this header (a virtio-net header, then the frame)
    4 flags u16   (PAD: filler up to the end of the data area; the next record is at 0)
    6 vnet u16:   bytes of virtio-net header before the frame (``etherws.gso``): 0 for a
                  plain frame, 10 for a frame from or to a port with offload

Who writes what: the producer writes the records, ``head`` and ``waiting``; the consumer
``tail`` and ``armed``. A record becomes visible only when complete: the producer writes
the bytes, then publishes ``head`` (x86-64 keeps stores in order, and an aligned 8-byte
store is one instruction). A producer killed before publishing loses only what it had not
published; a consumer resumes at its published ``tail``: the records it had taken but not
released are read again, nothing released is.

``take`` hands out the frames (the Ethernet frame, after any header) and, in ``headers``,
the virtio-net header of each frame that has one, keyed by the ``id`` of the frame's view:
whoever passes the frames on (the broker's forwarding, a worker's medium) keeps the
objects, so the header travels with its frame without a second list to keep in step,
and a batch without headers costs one test per record.

Nothing read from a ring is trusted: the broker consumes rings written by workers that
parse network input. ``take`` checks every index and length and raises RingError; the
consumer then drops what is queued (``resync``). A producer that finds the consumer's
``tail`` out of range sees no room.
"""

from __future__ import annotations

import struct

from etherws.errors import EtherwsError

MAGIC = int.from_bytes(b"ETWRING1", "little")
VERSION = 1
WORD = 8
LINE = 128
HEADER_WORDS = 5
CTL_OFFSET = LINE
RING_CTL_BYTES = 4 * LINE
DATA_OFFSET = 4096
"""Control and header in the first page; the data areas start page-aligned."""

HEAD, TAIL, ARMED, WAITING = 0, 1, 2, 3
"""A ring's control words (their index in LINE-spaced words)."""

REC = struct.Struct("<IHH")
HDR = REC.size
PAD = 1
ALIGN = 8
MIN_CAPACITY = 256 * 1024
"""Two of the largest records fit, whatever the padding."""
MAX_PAYLOAD = 65535 + 16
"""The largest record payload: a frame of the data plane's largest size plus room for a
virtio-net header."""
DEFAULT_CAPACITY = 512 * 1024
"""Bytes per ring: near the bandwidth-delay product of a tunnel (0.5 Gbit/s x 8 ms), so
a bulk transfer queues milliseconds, not tens of them, in front of a ping."""

_MASK64 = (1 << 64) - 1


class RingError(EtherwsError):
    """A ring file or a ring's contents that do not follow this layout."""


def record_size(payload: int) -> int:
    """Bytes a record with ``payload`` bytes after its header takes in the ring."""
    return (HDR + payload + ALIGN - 1) & -ALIGN


def file_size(capacity: int) -> int:
    """Bytes a ring file with two rings of ``capacity`` bytes takes."""
    return DATA_OFFSET + 2 * capacity


def _check_capacity(capacity: int) -> None:
    if capacity < MIN_CAPACITY or capacity & (capacity - 1):
        raise RingError(f"ring capacity {capacity} is not a power of two "
                        f">= {MIN_CAPACITY}")


class Ring:
    """One direction of a ring file: the producer's and the consumer's operations.

    A process uses one side of a ring only. Each side keeps its own position locally
    (``put`` and ``take`` move it) and publishes it with ``commit`` / ``release``.
    """

    def __init__(self, ctl: memoryview, data: memoryview) -> None:
        self._ctl = ctl  # "Q" words, LINE bytes apart
        self.data = data
        self.capacity = len(data)
        self._mask = self.capacity - 1
        self._head = ctl[HEAD * (LINE // WORD)]  # the producer's own position
        self._tail = ctl[TAIL * (LINE // WORD)]  # the consumer's own position
        self._seen_tail = self._tail  # the producer's cached copy of the consumer's tail
        self.headers: dict[int, bytes | memoryview] = {}
        """The consumer's last ``take``: id(frame view) -> its virtio-net header."""

    def _get(self, word: int) -> int:
        return int(self._ctl[word * (LINE // WORD)])

    def _set(self, word: int, value: int) -> None:
        self._ctl[word * (LINE // WORD)] = value & _MASK64

    # --- both sides -------------------------------------------------------------------
    @property
    def head(self) -> int:
        """The published head."""
        return self._get(HEAD)

    @property
    def tail(self) -> int:
        """The published tail."""
        return self._get(TAIL)

    @property
    def armed(self) -> bool:
        """The consumer asked to be woken when the head moves."""
        return bool(self._get(ARMED))

    @property
    def waiting(self) -> bool:
        """The producer asked to be woken when the tail moves."""
        return bool(self._get(WAITING))

    # --- producer ---------------------------------------------------------------------
    def room(self) -> int:
        """Bytes the producer may still fill (records and padding), 0 when the consumer's
        tail is out of range (a broken or hostile consumer gets nothing more)."""
        tail = self._get(TAIL)
        head = self._head
        if not 0 <= head - tail <= self.capacity:
            return 0
        self._seen_tail = tail
        return self.capacity - (head - tail)

    def room_for(self, payload: int) -> bool:
        """A record of ``payload`` bytes fits now, wherever the head is."""
        need = record_size(payload)
        room = self.room()
        pos = self._head & self._mask
        pad = self.capacity - pos if pos + need > self.capacity else 0
        return pad + need <= room

    def put(self, frame: bytes | bytearray | memoryview, flags: int = 0,
            vnet: int = 0) -> bool:
        """Write one record (not yet visible); False when it does not fit now. The first
        ``vnet`` bytes of ``frame`` are its virtio-net header."""
        n = len(frame)
        if n > MAX_PAYLOAD or vnet > n:
            return False
        need = (HDR + n + ALIGN - 1) & -ALIGN
        head, cap = self._head, self.capacity
        pos = head & self._mask
        pad = cap - pos if pos + need > cap else 0
        if head + pad + need - self._seen_tail > cap:
            if pad + need > self.room():
                return False
        data = self.data
        if pad:
            REC.pack_into(data, pos, pad - HDR, PAD, 0)
            head += pad
            pos = 0
        REC.pack_into(data, pos, n, flags, vnet)
        data[pos + HDR:pos + HDR + n] = frame
        self._head = head + need
        return True

    def reserve(self, payload: int) -> memoryview | None:
        """Room for a record of up to ``payload`` bytes at the head, to read into (a TAP
        read straight into the ring); None when there is none now. ``put_reserved``
        completes it; another ``reserve`` or ``put`` before that forgets it."""
        need = (HDR + payload + ALIGN - 1) & -ALIGN
        head, cap = self._head, self.capacity
        pos = head & self._mask
        pad = cap - pos if pos + need > cap else 0
        if payload > MAX_PAYLOAD or (head + pad + need - self._seen_tail > cap
                                     and pad + need > self.room()):
            return None
        if pad:
            REC.pack_into(self.data, pos, pad - HDR, PAD, 0)
            self._head = head + pad
            pos = 0
        return self.data[pos + HDR:pos + HDR + payload]

    def put_reserved(self, n: int, flags: int = 0, vnet: int = 0) -> None:
        """The reserved record holds ``n`` bytes (at most what was reserved), the first
        ``vnet`` of them a virtio-net header: it is put."""
        pos = self._head & self._mask
        REC.pack_into(self.data, pos, n, flags, vnet)
        self._head += (HDR + n + ALIGN - 1) & -ALIGN

    def put_many(self, frames: list[bytes] | list[memoryview],
                 headers: dict[int, bytes | memoryview] | None = None) -> int:
        """``put`` each frame in turn until one does not fit; how many were put (the
        broker's copy into a down ring: one call per port and pass, not per frame).
        ``headers`` (``take``'s) gives a frame's virtio-net header by the id of its view."""
        if headers:
            return self._put_many_vnet(frames, headers)
        cap, mask, data, pack = self.capacity, self._mask, self.data, REC.pack_into
        head, seen = self._head, self._seen_tail
        n = 0
        for frame in frames:
            size = len(frame)
            if size > MAX_PAYLOAD:
                break
            need = (HDR + size + ALIGN - 1) & -ALIGN
            pos = head & mask
            pad = cap - pos if pos + need > cap else 0
            if head + pad + need - seen > cap:
                self._head = head
                if pad + need > self.room():
                    break
                seen = self._seen_tail
            if pad:
                pack(data, pos, pad - HDR, PAD, 0)
                head += pad
                pos = 0
            pack(data, pos, size, 0, 0)
            data[pos + HDR:pos + HDR + size] = frame
            head += need
            n += 1
        self._head = head
        return n

    def _put_many_vnet(self, frames: list[bytes] | list[memoryview],
                       headers: dict[int, bytes | memoryview]) -> int:
        """put_many for a batch some of whose frames have a virtio-net header: each one
        record, the header then the frame. put_many's loop with the header added, kept
        apart from it: calls to put and reserve per frame took 790 ns a 100-byte frame
        against 540 for this loop, and put_many's loop, given the header lookup, would
        cost a plain frame more than its 360 ns (best of 7, one process); with offload
        every TCP and UDP frame of a TAP has a header."""
        cap, mask, data, pack = self.capacity, self._mask, self.data, REC.pack_into
        head, seen, get = self._head, self._seen_tail, headers.get
        n = 0
        for frame in frames:
            h = get(id(frame))
            k = 0 if h is None else len(h)
            size = len(frame) + k
            if size > MAX_PAYLOAD:
                break
            need = (HDR + size + ALIGN - 1) & -ALIGN
            pos = head & mask
            pad = cap - pos if pos + need > cap else 0
            if head + pad + need - seen > cap:
                self._head = head
                if pad + need > self.room():
                    break
                seen = self._seen_tail
            if pad:
                pack(data, pos, pad - HDR, PAD, 0)
                head += pad
                pos = 0
            pack(data, pos, size, 0, k)
            pos += HDR
            if h is not None:
                data[pos:pos + k] = h
            data[pos + k:pos + size] = frame
            head += need
            n += 1
        self._head = head
        return n

    def pending(self) -> bool:
        """Records were put since the last commit."""
        return self._head != self._get(HEAD)

    def commit(self) -> None:
        """Publish every record put so far (after their bytes: see the module docstring)."""
        self._set(HEAD, self._head)

    def wait_for_room(self, on: bool) -> None:
        """Ask (or stop asking) the consumer to ring after it releases."""
        self._set(WAITING, int(on))

    # --- consumer ---------------------------------------------------------------------
    def readable(self) -> bool:
        """The producer published something not taken yet."""
        return self._get(HEAD) != self._tail

    def take(self, max_records: int, max_bytes: int = 1 << 62) -> list[memoryview]:
        """Up to ``max_records`` published frames of ``max_bytes`` in all (at least one
        frame), in order, as views into the ring (valid until ``release``). Raises
        RingError when the ring holds something invalid."""
        head = self._get(HEAD)
        tail, cap, mask, data = self._tail, self.capacity, self._mask, self.data
        if not 0 <= head - tail <= cap:
            raise RingError(f"head {head} out of range for tail {tail}")
        out: list[memoryview] = []
        if self.headers:
            self.headers = {}
        headers = self.headers
        append, unpack = out.append, REC.unpack_from
        budget, count = max_bytes, 0
        while tail != head and count < max_records:
            pos = tail & mask
            n, flags, vnet = unpack(data, pos)
            need = (HDR + n + ALIGN - 1) & -ALIGN
            end = pos + need
            if not flags and end <= cap and tail + need <= head and vnet <= n:
                if n > budget and count:  # the common case first, with one test
                    break
                budget -= n
                view = data[pos + HDR + vnet:pos + HDR + n]
                append(view)
                if vnet:
                    headers[id(view)] = data[pos + HDR:pos + HDR + vnet]
                count += 1
                tail += need
                continue
            if end > cap or tail + need > head:
                problem = f"record of {n} bytes at {tail} runs past its ring"
            elif flags & PAD:
                problem = "" if end == cap else f"padding at {tail} does not end the ring"
            elif vnet > n:
                problem = f"record at {tail}: {vnet}-byte header in {n} bytes"
            else:  # flags this version does not know: the record is taken as it is
                problem = ""
                if n > budget and count:
                    break
                budget -= n
                view = data[pos + HDR + vnet:pos + HDR + n]
                append(view)
                if vnet:
                    headers[id(view)] = data[pos + HDR:pos + HDR + vnet]
                count += 1
            if problem:
                if count:  # the good records before it first; the next take raises
                    break
                self._tail = tail
                raise RingError(problem)
            tail += need
        self._tail = tail
        return out

    def release(self) -> None:
        """Give the records taken so far back to the producer (their headers' views go)."""
        if self.headers:
            self.headers = {}
        self._set(TAIL, self._tail)

    def resync(self) -> int:
        """Drop everything published (after a RingError); returns the bytes dropped."""
        head = self._get(HEAD)
        dropped = (head - self._tail) & _MASK64
        self._tail = head
        self._set(TAIL, head)
        return dropped

    def arm(self, on: bool) -> None:
        """Ask (or stop asking) the producer to ring after it publishes."""
        self._set(ARMED, int(on))


class RingFile:
    """A ring file's header and its two rings, over a buffer (an mmap or a bytearray)."""

    def __init__(self, buf: memoryview | bytearray) -> None:
        mv = memoryview(buf).cast("B")
        if len(mv) < DATA_OFFSET:
            raise RingError("not an etherws ring file: too short")
        words = mv[:DATA_OFFSET].cast("Q")
        if words[0] != MAGIC or words[1] != VERSION:
            raise RingError(f"not an etherws ring file of version {VERSION}")
        self.port = int(words[2])
        self.generation = int(words[3])
        self.capacity = int(words[4])
        _check_capacity(self.capacity)
        if len(mv) < file_size(self.capacity):
            raise RingError("ring file is shorter than its capacity")
        self.buffer = mv
        cap = self.capacity
        ctl = mv[CTL_OFFSET:CTL_OFFSET + 2 * RING_CTL_BYTES].cast("Q")
        per_ring = RING_CTL_BYTES // WORD
        self.up = Ring(ctl[:per_ring], mv[DATA_OFFSET:DATA_OFFSET + cap])
        self.down = Ring(ctl[per_ring:], mv[DATA_OFFSET + cap:DATA_OFFSET + 2 * cap])

    @staticmethod
    def format(buf: memoryview | bytearray, port: int, generation: int,
               capacity: int = DEFAULT_CAPACITY) -> RingFile:
        """Write the header of a new ring file into a zeroed buffer and return it."""
        _check_capacity(capacity)
        if not port or not generation:
            raise RingError("a ring needs a port and a generation, both non-zero")
        words = memoryview(buf).cast("B")[:DATA_OFFSET].cast("Q")
        words[0], words[1], words[2], words[3], words[4] = (MAGIC, VERSION, port,
                                                            generation, capacity)
        return RingFile(buf)

    def release(self) -> None:
        """Drop the views into the buffer, so the mapping can be closed."""
        for ring in (self.up, self.down):
            ring.headers = {}
            ring._ctl.release()
            ring.data.release()

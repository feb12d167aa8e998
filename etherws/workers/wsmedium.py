"""A port medium over an established WebSocket connection (I/O).

The opening handshake is someone else's (websocket-client for a client port, the
peer worker's server handshake); from then on this module frames and parses whole
buffers with ``etherws.wsframe`` (one big recv and one send per batch cost a third of
a per-message library, measured). One Ethernet frame is one binary message; with
``offload`` (both sides chose ``wshandshake.OFFLOAD_PROTOCOL``) one message is a 10-byte
virtio-net header and a frame, which may be a 64 KiB super-frame.

What it owns, because no library does it any more:

- reading: one recv of up to READ_SIZE bytes per wake-up, parsed into messages that
  are handed out at most ``max_frames`` at a time; the rest waits in ``pending_input``.
- TLS: a record decrypted by OpenSSL may hold more than one recv() took; those bytes
  sit in the SSL object, where poll() cannot see them (verified: poll said "not
  readable" while ``pending()`` was 16). So
  ``pending_input`` also reports ``SSLSocket.pending()`` and the loop comes back
  without polling.
- control frames: a ping is answered with a pong of the same payload (RFC 6455
  §5.5.2); a Close is answered with a Close (§5.5.1) and ends the medium; a protocol
  violation sends the decoder's close code (1002, 1007, 1009 ...) and ends it (§7.1.7).
  Text messages are ignored and counted as errors (the tunnel carries binary frames),
  except the path probe's (``etherws.probe``): a probe is answered at once, a reply goes
  to this side's running probe. Probes are text so that the binary path does no work
  for them.
- writing: frames are queued and encoded once per wake-up (a client masks each with a
  fresh key from one ``os.urandom`` call, §5.3), then sent without blocking. At most
  OUT_LIMIT bytes wait for the socket, and the loop takes batches from the broker only
  while a whole one fits (``has_room``): a slow peer's excess waits, or is dropped, at
  the broker, which then pauses the sending port. A frame that still does not fit is
  refused (a drop), so a stalled peer costs bounded memory and never blocks the worker.
- keepalive (``etherws.keepalive``): a ping after silence, MediumClosed when the peer
  stays silent after it.
"""

from __future__ import annotations

import os
import select
import socket
import ssl
import time
from typing import Callable

from etherws import probe, wsframe
from etherws.frame import MAX_FRAME
from etherws.gso import VNET_HDR_LEN, ZERO_HEADER
from etherws.keepalive import Keepalive, Verdict
from etherws.workers.link import (
    RECV_BYTES_PER_WAKEUP,
    RECV_FRAMES_PER_WAKEUP,
    Medium,
    MediumClosed,
)
from etherws.wsframe import CloseCode, Opcode

READ_SIZE = 256 * 1024
"""Bytes taken from the socket per wake-up (the buffer-level framing measured 3x a
per-message library's rate with recv(256K))."""
TLS_READ = 16 * 1024
"""A TLS recv() returns at most one record's plaintext (16 KiB, RFC 8446 §5.1): asking
for more only makes CPython allocate and shrink a larger buffer every time."""
OUT_LIMIT = 1024 * 1024
"""Encoded bytes allowed to wait for the socket; frames beyond it are dropped. The
kernel's TCP send buffer (several MB, autotuned) queues behind it anyway: more here
only adds latency and, under overload, memory (the 40 MiB per worker target)."""
NOTSENT_LOWAT = 128 * 1024
"""Unsent bytes the kernel queues for the tunnel's TCP socket before it says "full"
(TCP_NOTSENT_LOWAT, as HTTP/2 servers set it): the send buffer autotunes to megabytes,
and a ping queued behind megabytes of a bulk transfer waits tens of milliseconds. With
the limit the excess waits in the down ring, where the broker drops and pauses senders."""
FRAME_OVERHEAD = 14
"""What one frame may add to the output queue: the largest header (10 bytes) and a
client's masking key (RFC 6455 §5.2)."""
BATCH_ROOM = RECV_BYTES_PER_WAKEUP + RECV_FRAMES_PER_WAKEUP * FRAME_OVERHEAD
"""The most one batch from the down ring takes in the output queue (frames plus largest
headers; a single larger frame may come alone, and is refused if it does not fit)."""
CONTROL_ROOM = 64 * 1024
"""Extra room for control frames (pong, ping, close) past OUT_LIMIT. Bounded too: a
peer that floods pings but reads nothing gets no pongs once this is used up."""
PING_PAYLOAD = b"etherws"

_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class WsMedium(Medium):
    """Frames as binary messages over one connected socket (plain or TLS).

    ``role`` is this end's side ("client" masks what it sends, §5.1), ``max_message``
    the largest frame accepted (a larger message: close 1009), ``keepalive`` the silence
    timer or None for none, ``offload``: every message carries a virtio-net header (not
    counted in ``max_message``). The socket is made non-blocking and is closed by
    ``close``.
    """

    def __init__(self, sock: socket.socket, role: str, max_message: int = MAX_FRAME,
                 keepalive: Keepalive | None = None, offload: bool = False,
                 clock: Callable[[], int] = time.monotonic_ns) -> None:
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, NOTSENT_LOWAT)
        self.sock = sock
        self.fd = sock.fileno()
        self.tls = isinstance(sock, ssl.SSLSocket)
        self.offload = offload
        self.max_message = max_message
        # keep_text: a probe's text is read (texts are bounded by max_message as frames)
        self.decoder = wsframe.Decoder(role, max_message + (VNET_HDR_LEN if offload else 0),
                                       keep_text=True)
        self.masking = role == "client"
        self.keepalive = keepalive
        self._ready: list[bytes] = []  # decoded messages not handed out yet
        self._failure: str | None = None  # why the medium ended, raised once _ready is empty
        # frames written since the last flush, not encoded (views into the down ring;
        # a header and its frame as a pair)
        self._batch: list[wsframe.Payload] = []
        self._batch_bytes = 0
        self._out = bytearray()  # encoded bytes the socket has not taken yet
        self._close_sent = False
        self._heard = False  # bytes arrived since the last tick
        self._errors = 0
        self.pongs_sent = 0
        self.clock = clock
        self.probes_answered = 0
        self._prober: probe.Prober | None = None

    # --- the Medium protocol -----------------------------------------------------
    def fileno(self) -> int:
        """The socket's fd."""
        return self.fd

    def read_batch(self, max_frames: int) -> list[bytes]:
        """Up to ``max_frames`` binary messages; raises MediumClosed once the link ended."""
        if not self._ready and self._failure is None:
            self._receive()
        batch = self._ready[:max_frames]
        del self._ready[:max_frames]
        if not batch and self._failure is not None:
            raise MediumClosed(self._failure)
        return batch

    def write(self, frame: bytes | memoryview) -> bool:
        """Queue one frame for the next flush; False (a drop) when there is no room."""
        if self.offload:
            return self.write_vnet(ZERO_HEADER, frame)
        return self._queue(frame, len(frame))

    def write_vnet(self, header: bytes | memoryview, frame: bytes | memoryview) -> bool:
        """Queue one frame behind its virtio-net header, as one message (``offload``)."""
        return self._queue((header, frame), len(header) + len(frame))

    def _queue(self, frame: wsframe.Payload, size: int) -> bool:
        size += FRAME_OVERHEAD
        if (self._close_sent or self._failure is not None
                or len(self._out) + self._batch_bytes + size > OUT_LIMIT):
            return False
        self._batch.append(frame)
        self._batch_bytes += size
        return True

    def take_counts(self) -> tuple[int, int]:
        """``(text messages ignored, 0)`` since the last call."""
        errors, self._errors = self._errors, 0
        return errors, 0

    def close(self) -> None:
        """Say goodbye (close 1001) if nothing was said yet, without waiting; close."""
        if not self._close_sent and self._failure is None:
            self._send_close(CloseCode.GOING_AWAY, "")
            try:
                self._send()
            except MediumClosed:
                pass
        self.sock.close()

    # --- the optional hooks of PortLoop -------------------------------------------
    def pending_input(self) -> bool:
        """True when messages, an ending, or decrypted TLS bytes wait without the fd."""
        return bool(self._ready) or self._failure is not None or (
            self.tls and self.sock.pending() > 0)  # type: ignore[attr-defined]

    def pending_output(self) -> bool:
        """True while encoded bytes wait for the socket (poll for POLLOUT)."""
        return bool(self._out)

    def has_room(self) -> bool:
        """True while a whole broker batch still fits below OUT_LIMIT: the loop reads the
        broker only then, so a slow peer's excess is dropped at the broker (which makes
        the sending port pause) rather than read, queued here and refused."""
        return len(self._out) + self._batch_bytes + BATCH_ROOM <= OUT_LIMIT

    def flush(self) -> None:
        """Encode the queued frames and send as much as the socket takes now."""
        self._encode_batch()
        self._send()

    def tick(self, now_ns: int) -> None:
        """Run the keepalive: maybe send a ping; MediumClosed when the peer is dead."""
        if self.keepalive is None:
            return
        now = now_ns / 1e9
        if self._heard:
            self.keepalive.heard(now)
            self._heard = False
        verdict = self.keepalive.check(now)
        if verdict is Verdict.PING:
            self._queue_control(Opcode.PING, PING_PAYLOAD)
            self.flush()
        elif verdict is Verdict.DEAD:
            if self._unread_bytes():
                # The loop holds off reading while the broker cannot take frames (drop
                # early): what waits unread is the peer's, so it is alive.
                self.keepalive.heard(now)
                return
            k = self.keepalive
            raise MediumClosed(f"peer silent for {k.interval_s:g} s and "
                               f"{k.timeout_s:g} s after a ping: connection dead")

    def start_probe(self, size: int, now_ns: int) -> bool:
        """Begin a path probe of ``size`` bytes (a running one is abandoned); False when
        the size cannot be probed."""
        try:
            self._prober = probe.Prober(size, now_ns / 1e9)
        except probe.ProbeError:
            self._prober = None
            return False
        self._send_probes()
        self.flush()
        return True

    def probe_tick(self, now_ns: int) -> probe.Result | None:
        """Time the running probe out where due; its result once it is done."""
        prober = self._prober
        if prober is None:
            return None
        prober.tick(now_ns / 1e9)
        self._send_probes()
        self.flush()
        if not prober.done:
            return None
        self._prober = None
        return prober.result()

    def _send_probes(self) -> None:
        """Queue what the probe has to send; one without room is lost (timed out)."""
        if self._prober is not None:
            for message in self._prober.take():
                self._queue_text(message)

    def _text(self, data: bytes) -> None:
        """A text message: a probe is answered, a reply goes to the probe, the rest is
        counted as an error (ignored)."""
        reply = probe.answer(data, self.max_message)
        if reply is not None:
            self._queue_text(reply)
            self.probes_answered += 1
            return
        answer = probe.parse_reply(data)
        if answer is None:
            self._errors += 1
        elif self._prober is not None:
            self._prober.received(answer, self.clock() / 1e9)
            self._send_probes()

    # --- receiving ----------------------------------------------------------------
    def _receive(self) -> None:
        """One bounded read, parsed; control frames answered."""
        data, eof = self._recv()
        if data:
            self._heard = True
            try:
                self._ready += self.decoder.feed(data)
            except wsframe.ProtocolError as e:
                self._ready += e.messages  # complete and valid: still delivered
                self._fail(e.code, f"protocol error from the peer: {e.reason}")
        self._answer_events()
        if eof and self._failure is None:
            self._failure = "connection closed by the peer without a Close frame"
        if self._out:
            self._send()

    def _recv(self) -> tuple[bytes, bool]:
        """``(bytes read, end of stream)``; a lost connection becomes the failure."""
        chunks: list[bytes] = []
        total, eof = 0, False
        try:
            while total < READ_SIZE:
                chunk = self.sock.recv(TLS_READ if self.tls else READ_SIZE)
                if not chunk:
                    eof = True
                    break
                chunks.append(chunk)
                total += len(chunk)
                if not self.tls:
                    break  # plain TCP: one recv; poll() tells when there is more
                # TLS: recv() returns at most one record (16 KiB); read on to READ_SIZE.
        except _WOULD_BLOCK:
            pass
        except OSError as e:
            self._failure = f"connection lost: {e.strerror or e}"
        return b"".join(chunks), eof

    def _answer_events(self) -> None:
        """Pong the pings, count the texts, answer a Close (§5.5)."""
        for event in self.decoder.events:
            if isinstance(event, wsframe.Ping):
                if self._queue_control(Opcode.PONG, event.payload):
                    self.pongs_sent += 1
            elif isinstance(event, wsframe.Text):
                self._text(event.data)
            elif isinstance(event, wsframe.Close):
                self._peer_closed(event)
        self.decoder.events.clear()

    def _peer_closed(self, event: wsframe.Close) -> None:
        """Echo the peer's Close (§5.5.1: with its status code) and end."""
        if event.code == CloseCode.NO_STATUS:
            self._queue_control(Opcode.CLOSE, b"")
            self._close_sent = True
        else:
            self._send_close(event.code, "")
        reason = f" {event.reason}" if event.reason else ""
        self._failure = f"peer closed the connection ({event.code}{reason})"

    def _fail(self, code: int, why: str) -> None:
        """Fail the connection (§7.1.7): send Close ``code`` and end."""
        self._send_close(code, why)
        self._failure = f"{why} (closed with {code})"

    # --- sending ------------------------------------------------------------------
    def _send_close(self, code: int, reason: str) -> None:
        """Queue a Close after every queued frame; nothing may follow it (§5.5.1)."""
        if not self._close_sent:
            self._queue_control(Opcode.CLOSE, wsframe.close_payload(code, reason))
            self._close_sent = True

    def _queue_control(self, opcode: Opcode, payload: bytes) -> bool:
        """Queue a control frame (or a probe's text) behind the data; False when even
        CONTROL_ROOM is used."""
        self._encode_batch()
        if len(self._out) > OUT_LIMIT + CONTROL_ROOM:
            return False
        self._out += wsframe.frame(opcode, payload, os.urandom(4) if self.masking else None)
        return True

    def _queue_text(self, payload: bytes) -> bool:
        """Queue a text message behind the data (a probe's); False without room, or
        after a Close."""
        if self._close_sent or self._failure is not None:
            return False
        return self._queue_control(Opcode.TEXT, payload)

    def _encode_batch(self) -> None:
        """Encode the frames written since the last flush into the output buffer."""
        if not self._batch:
            return
        keys = None
        if self.masking:
            raw = os.urandom(4 * len(self._batch))  # one syscall per batch, cut in fours
            keys = [raw[i:i + 4] for i in range(0, len(raw), 4)]
        wsframe.append_binary_batch(self._out, self._batch, keys)
        self._batch = []
        self._batch_bytes = 0

    def _send(self) -> None:
        """One non-blocking send of the output buffer; MediumClosed when the link is lost.

        A TLS send that could not finish (SSLWantWrite) must be retried with the same
        bytes (SSL_write(3)); the buffer only ever loses what was sent from its front
        and grows at its end, and CPython sets SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER, so
        the retry starts with the same bytes, as OpenSSL asks.
        """
        if not self._out:
            return
        try:
            with memoryview(self._out) as view:
                sent = self.sock.send(view)
        except _WOULD_BLOCK:
            return
        except OSError as e:
            self._failure = self._failure or f"connection lost: {e.strerror or e}"
            raise MediumClosed(self._failure) from None
        del self._out[:sent]

    def _unread_bytes(self) -> bool:
        """True when the peer's bytes wait in the kernel or the TLS layer."""
        if self.tls and self.sock.pending() > 0:  # type: ignore[attr-defined]
            return True
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        return bool(poller.poll(0))

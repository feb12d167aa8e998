"""When a port worker holds a partial batch back to let more frames gather (pure).

Every batch costs about the same on its way through the data plane whatever it holds:
a wake-up of the sending worker, of both ZeroMQ I/O threads and of the receiver, on
every hop (tools/bench: ~35 µs of CPU per batch and hop on the 2-core machine). A
medium read the moment it becomes readable yields one or two frames per batch under a
steady stream: iperf3's paced UDP arrives one datagram at a time, so each frame
crossed the path alone, the path spent its CPU on wake-ups and delivered a fifth of
its TCP throughput at that same rate. Holding a partial batch back for HOLD_S while a
stream flows lets frames gather, as a NIC's interrupt moderation does; the first
frame after a pause (a ping, the start of a burst) is never held, so the latency of
light traffic stays as it was.
"""

from __future__ import annotations

HOLD_S = 200e-6
"""How long a partial batch waits for more frames. A/B with tools/bench's paths at
MTU 9000: 100 µs and 300 µs gained less than 200 µs; 500 µs and 1 ms lost throughput
(TCP's round trip grows by the hold at every ingress)."""
STREAM_GAP_S = 1e-3
"""A batch sent less than this before the next read means a stream is flowing."""
FULL_ENOUGH = 16
"""A batch of this many frames goes out at once: the wake-ups are already shared."""
FULL_ENOUGH_BYTES = 32 * 1024
"""... and a batch of this many bytes: one or two 64 KiB super-frames (offload) are a
full batch. Holding them cost a third of the throughput (tools/profile, ws:// with
offload: the TAP workers spent most of their time in the hold, 1.56 Gbit/s)."""


class Coalescer:
    """Decides, per batch read from a medium, whether to wait for more (no clock)."""

    def __init__(self, hold_s: float = HOLD_S, stream_gap_s: float = STREAM_GAP_S,
                 full_enough: int = FULL_ENOUGH,
                 full_enough_bytes: int = FULL_ENOUGH_BYTES) -> None:
        self.hold = hold_s
        self.stream_gap_s = stream_gap_s
        self.full_enough = full_enough
        self.full_enough_bytes = full_enough_bytes
        self._last_sent: float | None = None

    def hold_s(self, frames: int, now: float, nbytes: int = 0) -> float:
        """Seconds to wait before sending ``frames`` (``nbytes`` in all) just read at
        ``now``; 0: send now.

        Only a partial batch (1 to full_enough - 1 frames, under full_enough_bytes) of a
        flowing stream waits.
        """
        if (not 0 < frames < self.full_enough or nbytes >= self.full_enough_bytes
                or self._last_sent is None):
            return 0.0
        return self.hold if now - self._last_sent < self.stream_gap_s else 0.0

    def sent(self, now: float) -> None:
        """A batch left at ``now``."""
        self._last_sent = now

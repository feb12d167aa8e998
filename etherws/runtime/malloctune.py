"""Keep freed batch buffers in the heap of a data-plane process (glibc's mallopt).

A worker allocates and frees buffers of up to a few hundred KiB thousands of times a
second: the bytes a receive returns, a WebSocket batch encoded for one send. With
glibc's defaults such buffers come from mmap() or from the top of a heap that free()
trims back to the kernel, so the next one faults its pages in again, zeroed: 80,000
minor page faults a second in one process at MTU 9000 (tools/bench, when frames still
travelled as ZeroMQ messages). With the thresholds below they stay in the heap: the
faults went to nearly none, and the MTU 9000 throughput from 0.32x to 0.44x of
OpenVPN's in the same run. The memory kept is what the process once used, which its
bounded batches already limit; the bench's RSS figures include it.

Python has no binding for mallopt(3); ctypes calls glibc's. On another C library
(no ``mallopt`` symbol) nothing changes.
"""

from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 8 * 1024 * 1024
"""Above the largest buffer of the data path (a 256 KiB receive, a WebSocket batch of
RECV_BYTES_PER_WAKEUP): never mmap one."""
TRIM_THRESHOLD = 64 * 1024 * 1024
"""Free memory at the top of a heap is given back only above this."""


def keep_freed_memory() -> bool:
    """Set the thresholds for this process; False where there is no glibc mallopt."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))

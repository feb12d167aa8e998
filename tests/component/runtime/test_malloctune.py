"""glibc's malloc thresholds for the data-plane processes, measured in a child process
(the settings are global to a process)."""

from __future__ import annotations

import subprocess
import sys

# The data plane's pattern: batch-sized buffers of varying size made in one thread
# (ZeroMQ's I/O thread) and freed in another (the Python loop). Counted: the minor page
# faults of 2000 such buffers once the process is warm.
PROBE = """
import queue, resource, threading
from etherws.runtime import malloctune
if {tune}:
    assert malloctune.keep_freed_memory()
handoff = queue.Queue(maxsize=8)
def produce(n):
    for i in range(n):
        b = bytearray(30_000 + (i * 7919) % 100_000)
        b[::4096] = b"x" * len(b[::4096])  # touch every page, as a copy into it does
        handoff.put(b)
    handoff.put(None)
def run(n):
    t = threading.Thread(target=produce, args=(n,))
    t.start()
    while handoff.get() is not None:
        pass
    t.join()
run(500)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
run(2000)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(tune: bool) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE.format(tune=tune)],
                         capture_output=True, text=True, check=True, timeout=60)
    return int(out.stdout)


def test_freed_batch_buffers_stay_in_the_heap() -> None:
    tuned, default = faults(True), faults(False)
    assert tuned < 200, f"{tuned} page faults with the thresholds set"
    assert default > 10 * max(tuned, 50), f"glibc's defaults faulted only {default} times"

"""Link status of tunnel ports, from worker to supervisor (I/O; the format is the contract).

A client or peer worker writes ``RUNDIR/port-N.status`` (N = port number) whenever its
link changes; the supervisor reads it for listport and to answer ``addport client``
once the first connection attempt is decided. The file is replaced atomically (write a
temporary file, then rename), so a reader sees the old or the new content, never half.

Content, one JSON object (version 1)::

    {"v": 1,
     "state": "connecting" | "up" | "backoff" | "failed",
     "error": "<last error, one line, never a secret>" ,
     "next_retry_ns": <time.monotonic_ns() of the next attempt> | null,
     "first": "ok" | "failed" | null}     # outcome of the very first attempt

"failed" means the worker gave up for good (e.g. the first attempt failed without
--retry); it then exits with status 0.
"""

from __future__ import annotations

import json
import os
from typing import Any

VERSION = 1
STATES = ("connecting", "up", "backoff", "failed")


def path(rundir: str, port: int) -> str:
    """The status file of ``port``."""
    return os.path.join(rundir, f"port-{port}.status")


def write(rundir: str, port: int, state: str, error: str = "",
          next_retry_ns: int | None = None, first: str | None = None) -> None:
    """Replace the status file atomically."""
    if state not in STATES:
        raise ValueError(f"unknown link state {state!r}")
    data = {"v": VERSION, "state": state, "error": error.splitlines()[0] if error else "",
            "next_retry_ns": next_retry_ns, "first": first}
    final = path(rundir, port)
    tmp = f"{final}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, final)


def read(rundir: str, port: int) -> dict[str, Any] | None:
    """The last status written for ``port``, or None when there is none (yet)."""
    try:
        with open(path(rundir, port), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("v") != VERSION or data.get("state") not in STATES:
        return None
    return data


def remove(rundir: str, port: int) -> None:
    """Delete the status file (the port is gone)."""
    for p in (path(rundir, port), f"{path(rundir, port)}.tmp"):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass

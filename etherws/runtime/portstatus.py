"""Link status files of tunnel ports (I/O; the record format is ``etherws.linkstatus``).

The file is replaced atomically (write a temporary file, then rename), so a reader sees
the old or the new content, never half.
"""

from __future__ import annotations

import os
from typing import Any

from etherws import linkstatus
from etherws.paths import RunDir


def path(rundir: str, port: int) -> str:
    """The status file of ``port``."""
    return RunDir(rundir).port_status(port)


def write(rundir: str, port: int, state: str, error: str = "",
          next_retry_ns: int | None = None, first: str | None = None,
          offload: bool | None = None) -> None:
    """Replace the status file atomically."""
    text = linkstatus.encode(state, error, next_retry_ns, first, offload)
    final = path(rundir, port)
    tmp = f"{final}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, final)


def read(rundir: str, port: int) -> dict[str, Any] | None:
    """The last status written for ``port``, or None when there is none (yet)."""
    try:
        with open(path(rundir, port), encoding="utf-8") as f:
            return linkstatus.decode(f.read())
    except (OSError, UnicodeDecodeError):
        return None


def remove(rundir: str, port: int) -> None:
    """Delete the status file (the port is gone)."""
    for p in (path(rundir, port), f"{path(rundir, port)}.tmp"):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass

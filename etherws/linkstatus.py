"""The link status record of a tunnel port, from worker to supervisor (pure; the contract).

A client or peer worker writes ``RUNDIR/port-N.status`` (N = port number) whenever its
link changes (``etherws.runtime.portstatus`` does the file I/O); the supervisor reads it
for listport and to answer ``addport client`` once the first connection attempt is
decided.

Content, one JSON object (version 1)::

    {"v": 1,
     "state": "connecting" | "up" | "backoff" | "failed",
     "error": "<last error, one line, never a secret>" ,
     "next_retry_ns": <time.monotonic_ns() of the next attempt> | null,
     "first": "ok" | "failed" | null,    # outcome of the very first attempt
     "offload": true | false | null}     # the link carries super-frames (etherws.gso.1)

"failed" means the worker gave up for good (e.g. the first attempt failed without
--retry); it then exits with status 0.
"""

from __future__ import annotations

import json
from typing import Any

VERSION = 1
STATES = ("connecting", "up", "backoff", "failed")


def encode(state: str, error: str = "", next_retry_ns: int | None = None,
           first: str | None = None, offload: bool | None = None) -> str:
    """The record's text; ValueError for a state the contract does not know (a bug)."""
    if state not in STATES:
        raise ValueError(f"unknown link state {state!r}")
    return json.dumps({"v": VERSION, "state": state,
                       "error": error.splitlines()[0] if error else "",
                       "next_retry_ns": next_retry_ns, "first": first,
                       "offload": offload})


def decode(text: str) -> dict[str, Any] | None:
    """The record in ``text``, or None when it is not one of this version."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("v") != VERSION or data.get("state") not in STATES:
        return None
    return data

"""probePort: ask a tunnel port's worker for a path probe and wait for its result (I/O shell).

The request and the result travel through the port's slot of the port table
(``PortTable.request_probe``/``probe``): the worker sees the request on its periodic tick,
probes the far switch (``etherws.probe``) beside its traffic and publishes the result.
The reply is deferred (``control.Later``): the supervisor keeps serving meanwhile and
answers once the result is there, or refuses at a deadline.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

from etherws import probe
from etherws.control import Later, Refused
from etherws.supervisor.policy import State
from etherws.supervisor.ports import TUNNELS, Port, PortManager
from etherws.tables import PortTable

MARGIN_S = 2.0
"""Beyond the longest probe: the worker's tick (0.2 s) and a busy machine."""
DEADLINE_S = probe.MAX_DURATION_S + MARGIN_S


def check_size(size: Any) -> int:
    """``size`` when it may be probed, else Refused (one line)."""
    if not probe.MIN_SIZE <= size <= probe.MAX_SIZE:
        raise Refused("bad-value", f"--size must be {probe.MIN_SIZE}..{probe.MAX_SIZE} "
                                   f"bytes, not {size}")
    return int(size)


def start(ports: PortManager, table: PortTable, port: Port, size: int) -> Later:
    """Ask ``port``'s worker for a probe of ``size`` bytes; the deferred answer.

    Refused at once for a port that is not a tunnel, or whose tunnel is not up."""
    size = check_size(size)
    what = f"port {port.number}" + (f" ({port.name})" if port.name else "")
    if port.kind not in TUNNELS:
        raise Refused("not-a-tunnel", f"{what} is a {port.kind.label} port: only tunnel "
                                      "ports (client, server) can be probed")
    link = ports.link(port) or {}
    if port.child.life.state is not State.UP or link.get("state") != "up":
        state = link.get("state") or port.child.life.state.value
        raise Refused("not-up", f"{what}: the tunnel is not up ({state})")
    ticket = table.request_probe(port.slot, size)
    deadline = time.monotonic() + DEADLINE_S

    def poll() -> Mapping[str, Any] | None:
        if ports.ports.get(port.number) is not port:
            raise Refused("gone", f"{what} was deleted while it probed")
        words = table.probe(port.slot)
        if words.done == ticket:
            result = probe.from_words(size, words.rtt, words.largest, words.flags)
            if result is None or result.code is probe.Code.UNSUPPORTED:
                raise Refused("not-a-tunnel", f"{what} cannot probe")
            return {"entries": [{"port": port.number, "name": port.name,
                                 **result.entry()}]}
        if words.request != ticket or words.done > ticket:
            raise Refused("superseded", f"another probe of {what} replaced this one")
        if time.monotonic() > deadline:
            raise Refused("no-result", f"{what}: no probe result within {DEADLINE_S:g} s "
                                       "(the tunnel went down?)")
        return None
    return Later(poll)

"""A port's rings as the broker maps them, and the broker's session socket (I/O).

Kept apart from the broker's loop (``broker.service``): opening a port's ring file checks
that it is the one the port table names (port and generation), and the session ROUTER is
bound where only the broker's own user may connect.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import zmq

from etherws.paths import RunDir
from etherws.ring import Ring, RingError
from etherws.runtime import rings


@dataclass(eq=False)  # in sets by identity
class PortRings:
    """One port's rings as the broker uses them."""

    port: int
    slot: int
    generation: int
    mapped: rings.MappedRing
    bell: rings.Bell

    @property
    def up(self) -> Ring:
        """Frames from the port's worker."""
        return self.mapped.file.up

    @property
    def down(self) -> Ring:
        """Frames to the port's worker."""
        return self.mapped.file.down

    def close(self) -> None:
        """Close the doorbell and unmap."""
        self.bell.close()
        self.mapped.close()


def alive(pid: int) -> bool:
    """True while process ``pid`` exists (ours to signal or not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def bind_session(ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> zmq.Socket[bytes]:
    """The broker's session ROUTER, bound at ``endpoint`` with a socket file only we use."""
    sock = ctx.socket(zmq.ROUTER)
    try:
        sock.setsockopt(zmq.MAXMSGSIZE, 1024)
        sock.setsockopt(zmq.LINGER, 0)
        old = os.umask(0o077)
        try:
            sock.bind(endpoint)
        finally:
            os.umask(old)
    except zmq.ZMQError:
        sock.close(linger=0)
        raise
    return sock


def open_rings(rundir: RunDir, port: int, slot: int, generation: int) -> PortRings:
    """Map a port's ring file and open its worker's doorbell; OSError or RingError."""
    path = rundir.ring(port, generation)
    mapped = rings.MappedRing(path)
    try:
        f = mapped.file
        if f.port != port or f.generation != generation:
            raise RingError(f"{path} holds port {f.port}, generation {f.generation:x}")
        return PortRings(port, slot, generation, mapped, rings.Bell(rings.bell_path(path)))
    except BaseException:
        mapped.close()
        raise

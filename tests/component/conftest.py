"""Fixtures shared by the component tests; the fakes themselves are in ``fakes``.

A port worker test module defines ``port_kind`` (the kind of worker it runs); ``table``
and ``spawn`` follow from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import pytest

from etherws.paths import RunDir
from etherws.runtime.shm import create_port_table
from etherws.tables import PortKind, PortTable
from tests.component.fakes import (
    PORT,
    RING_GENERATION,
    SLOT,
    WORKER_MODULES,
    FakeBroker,
    FakeSupervisor,
    KernelEnd,
    Responder,
    Spawner,
    create_port_ring,
    start_supervisor,
)


# --- port workers ---------------------------------------------------------------------
@pytest.fixture
def table(rundir: str, port_kind: PortKind) -> PortTable:
    """The port table with slot SLOT claimed for port PORT, of the module's port kind."""
    t = create_port_table(RunDir(rundir).port_table, 8)
    create_port_ring(rundir)
    t.claim(SLOT, PORT, port_kind, ring=RING_GENERATION)
    return t


@pytest.fixture
def broker(rundir: str, table: PortTable) -> Iterator[FakeBroker]:
    """This test process as the broker."""
    b = FakeBroker(rundir)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def spawn(rundir: str, tmp_path: Path, port_kind: PortKind,
          table: PortTable) -> Iterator[Spawner]:
    """Start workers of the module's port kind; all stopped afterwards."""
    s = Spawner(rundir, tmp_path, WORKER_MODULES[port_kind], table)
    try:
        yield s
    finally:
        s.stop_all()


@pytest.fixture
def kernel_end() -> Iterator[Callable[..., KernelEnd]]:
    """Open packet sockets on interfaces (``KernelEnd``); all closed afterwards."""
    opened: list[KernelEnd] = []

    def open_end(ifname: str, bypass_qdisc: bool = False) -> KernelEnd:
        end = KernelEnd(ifname, bypass_qdisc)
        opened.append(end)
        return end

    try:
        yield open_end
    finally:
        for end in opened:
            end.close()


# --- the control socket ---------------------------------------------------------------
@pytest.fixture
def endpoint(rundir: str) -> str:
    """The control endpoint in this test's run directory."""
    return RunDir(rundir).ctl_endpoint


@pytest.fixture
def serve(endpoint: str) -> Iterator[Callable[..., FakeSupervisor]]:
    """Start fake supervisors; all of them are closed afterwards, also on failure.

    ``serve(respond=None, results=None, at=None)``: at ``at`` or else ``endpoint``;
    the arguments are FakeSupervisor's.
    """
    started: list[FakeSupervisor] = []

    def start(respond: Responder | None = None,
              results: Mapping[str, dict[str, Any]] | None = None,
              at: str | None = None) -> FakeSupervisor:
        fake = start_supervisor(at or endpoint, respond, results)
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.close()

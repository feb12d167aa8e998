"""Map the shared-memory tables from files on tmpfs (I/O shell over ``etherws.tables``).

A plain mmap of a file: ``multiprocessing.shared_memory`` before Python 3.13 unlinks a
segment when an attaching process exits (its resource tracker), which would lose the
FDB exactly when a broker restart needs it.
"""

from __future__ import annotations

import mmap
import os

from etherws.tables import FdbTable, PortTable


def _map(path: str, size: int | None, create: bool) -> memoryview:
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT | os.O_TRUNC if create else 0)
    fd = os.open(path, flags, 0o600)
    try:
        if create:
            assert size is not None
            os.ftruncate(fd, size)  # a new file reads as zeros: an empty table
            # Allocated for real now: a sparse file on a full tmpfs maps fine, and every
            # process touching it later dies of SIGBUS. ENOSPC here fails the start.
            os.posix_fallocate(fd, 0, size)
        return memoryview(mmap.mmap(fd, 0))  # the tables' buffer type; tables imports no mmap
    finally:
        os.close(fd)


def create_port_table(path: str, nslots: int) -> PortTable:
    """Create (or recreate, emptied) the port table file and map it (supervisor)."""
    return PortTable.format(_map(path, PortTable.size(nslots), True), nslots)


def open_port_table(path: str) -> PortTable:
    """Map an existing port table (broker, workers)."""
    return PortTable(_map(path, None, False))


def create_fdb_table(path: str, capacity: int) -> FdbTable:
    """Create (or recreate, emptied) the FDB file and map it (supervisor)."""
    return FdbTable.format(_map(path, FdbTable.size(capacity), True), capacity)


def open_fdb_table(path: str) -> FdbTable:
    """Map an existing FDB (broker, supervisor's readers)."""
    return FdbTable(_map(path, None, False))

"""The worker-owned words of a port's slot in the port table (``etherws.tables``).

rx/tx frames and bytes, errors, drops and the heartbeat are the worker's to write; the
pause the broker may ask for (S_HOLD_UNTIL) is read here too.
"""

from __future__ import annotations

import argparse
import logging
import time

from etherws.paths import RunDir
from etherws.runtime.shm import open_port_table
from etherws.tables import (
    S_DROPS,
    S_ERRORS,
    S_HEARTBEAT,
    S_HOLD_UNTIL,
    S_PORT,
    S_RX,
    S_RX_BYTES,
    S_TX,
    S_TX_BYTES,
    PortTable,
    TableError,
)

log = logging.getLogger(__name__)


class SlotCounters:
    """The worker-owned words of one port-table slot.

    Only adds: a restarted worker continues the values its predecessor left.
    """

    def __init__(self, table: PortTable, slot: int) -> None:
        self.words = table.words
        self.base = table.base(slot)

    def received(self, frames: int, nbytes: int) -> None:
        """Frames read from the medium and handed to the broker (rx)."""
        b = self.base
        self.words[b + S_RX] += frames
        self.words[b + S_RX_BYTES] += nbytes

    def sent(self, frames: int, nbytes: int) -> None:
        """Frames written out to the medium (tx)."""
        b = self.base
        self.words[b + S_TX] += frames
        self.words[b + S_TX_BYTES] += nbytes

    def add_errors(self, n: int) -> None:
        """Malformed frames or messages, dropped."""
        if n:
            self.words[self.base + S_ERRORS] += n

    def add_drops(self, n: int) -> None:
        """Good frames lost for lack of room."""
        if n:
            self.words[self.base + S_DROPS] += n

    def heartbeat(self, now_ns: int) -> None:
        """Tell the supervisor this worker is alive."""
        self.words[self.base + S_HEARTBEAT] = now_ns

    def hold_ns(self, now_ns: int) -> int:
        """Nanoseconds left of a pause the broker asked for (its port's queue was full
        with everything this port sent); 0 when none."""
        return max(self.words[self.base + S_HOLD_UNTIL] - now_ns, 0)


def open_counters(args: argparse.Namespace) -> SlotCounters:
    """The worker's slot, checked to belong to its port (else counters land elsewhere)."""
    table = open_port_table(RunDir(args.rundir).port_table)
    port = table.words[table.base(args.slot) + S_PORT]
    if port != args.port:
        raise ValueError(f"slot {args.slot} of the port table belongs to port {port}, "
                         f"not {args.port}")
    return SlotCounters(table, args.slot)


def claim_slot(args: argparse.Namespace) -> SlotCounters | None:
    """open_counters plus the first heartbeat; None (logged) when the slot is unusable,
    which the worker reports by exiting with procargs.EXIT_CONFIG."""
    try:
        counters = open_counters(args)
    except (OSError, TableError, ValueError, IndexError) as e:
        log.error("cannot use port table slot %d: %s", args.slot, e)
        return None
    counters.heartbeat(time.monotonic_ns())
    return counters

"""A port worker's slot in the port table: opened, checked, first heartbeat (I/O).

The words are written through ``tables.SlotView``: rx/tx frames and bytes, errors,
drops and the heartbeat are the worker's; the pause the broker may ask for is read.
"""

from __future__ import annotations

import argparse
import logging
import time

from etherws.paths import RunDir
from etherws.runtime.shm import open_port_table
from etherws.tables import SlotView, TableError

log = logging.getLogger(__name__)


def open_counters(args: argparse.Namespace) -> SlotView:
    """The worker's slot, checked to belong to its port (else counters land elsewhere)."""
    view = SlotView(open_port_table(RunDir(args.rundir).port_table), args.slot)
    if view.port != args.port:
        raise TableError(f"slot {args.slot} of the port table belongs to port {view.port}, "
                         f"not {args.port}")
    return view


def claim_slot(args: argparse.Namespace) -> SlotView | None:
    """open_counters plus the first heartbeat; None (logged) when the slot is unusable,
    which the worker reports by exiting with procargs.EXIT_CONFIG."""
    try:
        counters = open_counters(args)
    except (OSError, TableError, IndexError) as e:
        log.error("cannot use port table slot %d: %s", args.slot, e)
        return None
    counters.heartbeat(time.monotonic_ns())
    return counters

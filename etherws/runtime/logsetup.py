"""Logging configuration shared by every etherws process (I/O).

The supervisor hands its own choice (``--logfile F``, ``--logconf F``, syslog or
stderr) to every child on the command line, so one switch logs to one place.
"""

from __future__ import annotations

import argparse
import logging
import logging.config
import logging.handlers
import os
import sys
from types import TracebackType
from typing import BinaryIO

SYSLOG_SOCKET = "/dev/log"


def configure(args: argparse.Namespace, name: str) -> None:
    """Configure the root logger for a process called ``name`` (e.g. ``port 3 tap``)."""
    level = logging.DEBUG if getattr(args, "debug", False) else logging.INFO
    # A crash's traceback must reach the log: a detached switch's stderr may lead nowhere.
    sys.excepthook = _log_uncaught
    if getattr(args, "logconf", None):
        logging.config.fileConfig(args.logconf, disable_existing_loggers=False)
        return
    fmt = f"%(asctime)s etherws[%(process)d] {name}: %(levelname)s %(message)s"
    handler: logging.Handler
    if getattr(args, "logfile", None):
        open_log_file(args.logfile).close()
        # reopened when logrotate renames it: every process follows to the new file
        handler = logging.handlers.WatchedFileHandler(args.logfile)
    elif getattr(args, "syslog", False):
        handler = logging.handlers.SysLogHandler(address=SYSLOG_SOCKET)
        fmt = f"etherws[%(process)d] {name}: %(levelname)s %(message)s"
    else:
        handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # pyroute2 logs every netlink message at DEBUG (kilobytes a line): not our debugging
    logging.getLogger("pyroute2").setLevel(logging.WARNING)


LOG_MODE = 0o600
"""A new log file's mode, whatever the umask: logs name peers, users and tunnels."""


def open_log_file(path: str) -> BinaryIO:
    """``path`` opened for appending, created with LOG_MODE if it does not exist."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, LOG_MODE)
    return open(fd, "ab")


def _log_uncaught(etype: type[BaseException], value: BaseException,
                  tb: TracebackType | None) -> None:
    logging.getLogger().critical("uncaught exception, exiting", exc_info=(etype, value, tb))

"""Logging configuration shared by every etherws process (I/O).

The supervisor hands its own choice (``--logfile F``, ``--logconf F``, syslog or
stderr) to every child on the command line, so one switch logs to one place.

Log files survive rotation in every process: a renamed file is followed at the next line
(WatchedFileHandler), and SIGHUP reopens every file handler (ours, and those of a
``--logconf``) before the next line is written, as logrotate's ``postrotate`` expects.
The signal handler only counts; the reopening happens in the handler's own lock at the
next record, so a line is never split between the old file and the new one. Without
this, a SIGHUP would end a worker (its default action).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import logging.config
import logging.handlers
import os
import signal
import sys
import threading
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
        reopen_on_hangup()
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
    reopen_on_hangup()


_hangups = 0
"""SIGHUPs received (only counted in the handler; see the module docstring)."""


def request_reopen(*_: object) -> None:
    """Reopen every log file before its next line (the SIGHUP handler, also for a process
    that handles SIGHUP itself, like the supervisor's reload)."""
    global _hangups
    _hangups += 1


class _Reopener(logging.Filter):
    """Reopens its handler's file when a SIGHUP came since it last looked."""

    def __init__(self, handler: logging.FileHandler) -> None:
        super().__init__()
        self.handler = handler
        self.seen = _hangups

    def filter(self, record: logging.LogRecord) -> bool:
        if self.seen != _hangups:
            self.seen = _hangups
            h = self.handler
            with h.lock or contextlib.nullcontext():
                if h.stream is not None:
                    h.stream.close()
                h.stream = h._open()  # the path it was configured with, mode "a"
                if isinstance(h, logging.handlers.WatchedFileHandler):
                    h._statstream()
        return True


def reopen_on_hangup() -> None:
    """SIGHUP reopens the root logger's files (installed by ``configure``)."""
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.FileHandler) and \
                not any(isinstance(f, _Reopener) for f in h.filters):
            h.addFilter(_Reopener(h))
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGHUP, request_reopen)


LOG_MODE = 0o600
"""A new log file's mode, whatever the umask: logs name peers, users and tunnels."""


def open_log_file(path: str) -> BinaryIO:
    """``path`` opened for appending, created with LOG_MODE if it does not exist."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, LOG_MODE)
    return open(fd, "ab")


def _log_uncaught(etype: type[BaseException], value: BaseException,
                  tb: TracebackType | None) -> None:
    logging.getLogger().critical("uncaught exception, exiting", exc_info=(etype, value, tb))

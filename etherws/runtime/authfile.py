"""The htpasswd file on disk: re-read when it changes, last good table kept on failure (I/O).

``AuthFile(path).table()`` is called for every authentication attempt, so it costs one
``stat()`` while the file is unchanged. When the file's identity or timestamps change it
is read and parsed again (:func:`etherws.htpasswd.parse`). A file that cannot be read or
parsed never empties the table: the last good one stays in force, and the failure is
logged once (again only if it changes, or after a success). Until a first good read the
table is empty, so everyone is refused.
"""

from __future__ import annotations

import logging
import os
import stat
import statistics
import threading
import time
from collections.abc import Callable

from etherws import htpasswd
from etherws.htpasswd import HtpasswdError, HtpasswdTable, parse

log = logging.getLogger(__name__)

#: Heartbeats while a verification runs (bcrypt releases the GIL, so a thread can beat):
#: a peer worker verifying a costly hash on a loaded machine must not look hung.
BEAT_S = 0.25
#: Verifications timed to learn what the costliest one takes (the median is used).
FLOOR_SAMPLES = 3
#: Refuse to read more than this: a path pointing at a huge file must not eat memory.
MAX_FILE_BYTES = 16 * 1024 * 1024
#: A file modified this recently is not trusted to be unchanged just because its stat is:
#: Linux stamps mtime from a coarse clock tick and some filesystems keep 1-2 s, so two
#: writes of the same size can share one (mtime, size). Like git's "racy" index entries,
#: such a file is re-read on every call until its mtime is this old.
RACY_WINDOW_NS = 2_000_000_000

_Signature = tuple[int, int, int, int, int]
_EMPTY = HtpasswdTable()


def _signature(st: os.stat_result) -> _Signature:
    # ctime too: a chmod that makes an unreadable file readable changes only ctime.
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class AuthFile:
    """One htpasswd file, re-read when it changes; see the module docstring."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._table: HtpasswdTable = _EMPTY
        self._loaded = False  # a good table was read at least once
        self._signature: _Signature | None = None  # of the file last read (good or bad)
        self._reported: str | None = None  # the failure last logged, until a success
        self._mode_warned: int | None = None
        self._floor: tuple[str, float] | None = None  # (dummy hash, seconds it takes)

    @property
    def loaded(self) -> bool:
        """True once a good table has been read (it stays in force from then on)."""
        return self._loaded

    @property
    def problem(self) -> str | None:
        """Why the last read failed (one line), or None after a success."""
        return self._reported

    def table(self) -> HtpasswdTable:
        """The current ``user -> hash`` table (empty, refusing everyone, until a good read).

        An :class:`~etherws.htpasswd.HtpasswdTable` (a read-only Mapping) that carries its
        unknown-user dummy hash, for :func:`etherws.htpasswd.verify`/``authenticate``.
        """
        try:
            st = os.stat(self.path)
        except OSError as exc:
            self._signature = None
            self._failed(f"cannot read {self.path}: {exc.strerror or exc}")
            return self._table
        if _signature(st) != self._signature:
            self._reload(st)
        return self._table

    def authenticate(self, header: bytes | None,
                     beat: Callable[[], None] | None = None) -> str | None:
        """The user an ``Authorization`` header authenticates, or None (answer 401).

        Every attempt takes as long as verifying the table's costliest hash, whoever the
        user is: htpasswd.authenticate does one verification (the user's own hash, or
        the costliest for unknown users), and the answer waits out the rest of the
        costliest verification's time. So a {SHA} user is not told from a bcrypt user,
        or from an unknown one, by how long a refusal takes. ``beat`` is called every
        BEAT_S meanwhile, from this thread, while another thread verifies.
        """
        table = self.table()
        floor = self._floor_s(table)
        started = time.monotonic()
        user = _in_thread(lambda: htpasswd.authenticate(table, header), beat)
        rest = floor - (time.monotonic() - started)
        while rest > 0:
            time.sleep(min(rest, BEAT_S))
            if beat is not None:
                beat()
            rest = floor - (time.monotonic() - started)
        return user

    def _floor_s(self, table: HtpasswdTable) -> float:
        """How long a verification of ``table``'s costliest hash takes (measured once
        per table: a table's dummy hash is its costliest)."""
        if self._floor is None or self._floor[0] != table.dummy_hash:
            times = []
            for _ in range(FLOOR_SAMPLES):
                started = time.monotonic()
                htpasswd.verify({"": table.dummy_hash}, "", "etherws: timing probe")
                times.append(time.monotonic() - started)
            self._floor = (table.dummy_hash, statistics.median(times))
        return self._floor[1]

    def _reload(self, st: os.stat_result) -> None:
        # Remember what was read even when it is bad, so a garbled file is not re-parsed
        # (and re-reported) on every call; a racy mtime is never remembered (see above).
        racy = time.time_ns() - st.st_mtime_ns < RACY_WINDOW_NS
        self._signature = None if racy else _signature(st)
        if not stat.S_ISREG(st.st_mode):
            self._failed(f"cannot read {self.path}: not a regular file")
            return
        self._warn_about_mode(st.st_mode)
        try:
            # O_NONBLOCK: if the path was swapped for a FIFO since the stat, open must not
            # hang the caller waiting for a writer.
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            with open(fd, "rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            # Not remembered: EACCES, EMFILE or EIO may pass without the file changing.
            self._signature = None
            self._failed(f"cannot read {self.path}: {exc.strerror or exc}")
            return
        if len(data) > MAX_FILE_BYTES:
            self._failed(f"cannot use {self.path}: larger than {MAX_FILE_BYTES} bytes")
            return
        try:
            table = parse(data.decode("utf-8-sig"))  # -sig: editors on Windows add a BOM
        except UnicodeDecodeError as exc:
            self._failed(f"cannot use {self.path}: not UTF-8 (byte {exc.start})")
            return
        except HtpasswdError as exc:
            self._failed(f"cannot use {self.path}: {exc}")
            return
        self._succeeded(table)

    def _succeeded(self, table: HtpasswdTable) -> None:
        if self._reported is not None:
            log.info("htpasswd %s is usable again: %d users", self.path, len(table))
        elif not self._loaded:  # the owner says what it loaded, if it is news to anyone
            log.debug("htpasswd %s loaded: %d users", self.path, len(table))
        elif dict(table) != dict(self._table):
            log.info("htpasswd %s reloaded: %d users", self.path, len(table))
        self._table, self._loaded, self._reported = table, True, None

    def _failed(self, reason: str) -> None:
        if reason == self._reported:
            return
        self._reported = reason
        if self._loaded:
            log.warning("%s; keeping the last good table (%d users)", reason, len(self._table))
        else:
            log.warning("%s; no users can log in until it is fixed", reason)

    def _warn_about_mode(self, mode: int) -> None:
        # Anyone who can write the file can add a user; anyone who can read it can run an
        # offline guessing attack on the hashes.
        if mode & (stat.S_IWOTH | stat.S_IROTH) and mode != self._mode_warned:
            what = "writable" if mode & stat.S_IWOTH else "readable"
            log.warning("htpasswd %s is world-%s (mode %04o)", self.path, what,
                        stat.S_IMODE(mode))
        self._mode_warned = mode


def _in_thread(work: Callable[[], str | None], beat: Callable[[], None] | None) -> str | None:
    """``work()``, run in a thread while this one calls ``beat`` every BEAT_S."""
    if beat is None:
        return work()
    result: list[str | None] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(work())
        except BaseException as exc:  # handed to the caller's thread below
            failure.append(exc)

    worker = threading.Thread(target=run, name="verify", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(BEAT_S)
        beat()
    if failure:
        raise failure[0]
    return result[0]

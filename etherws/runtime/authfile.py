"""The htpasswd file on disk: re-read when it changes, last good table kept on failure (I/O).

``AuthFile(path).table()`` is called for every authentication attempt, so it costs one
``stat()`` while the file is unchanged. When the file's identity or timestamps change it
is read and parsed again (:func:`etherws.htpasswd.parse`). A file that cannot be read or
parsed never empties the table: the last good one stays in force, and the failure is
logged once (again only if it changes, or after a success). Until a first good read the
table is empty, so everyone is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
import statistics
import threading
import time
from collections.abc import Callable, Iterator

from etherws import htpasswd
from etherws.htpasswd import HtpasswdError, HtpasswdTable, parse
from etherws.paths import RunDir

log = logging.getLogger(__name__)

#: Heartbeats while a verification runs (bcrypt releases the GIL, so a thread can beat):
#: a peer worker verifying a costly hash on a loaded machine must not look hung.
BEAT_S = 0.25
#: Verifications timed to learn what the costliest one takes (the median is used).
FLOOR_SAMPLES = 3
#: How far each costly verification moves the floor towards its own duration.
FLOOR_WEIGHT = 0.25
#: The first line of a table snapshot may carry that time, measured once by whoever
#: wrote it, so that each short-lived reader does not spend verifications measuring it.
FLOOR_COMMENT = "# etherws: verification takes s "
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

    def __init__(self, path: str | os.PathLike[str],
                 slots: VerifySlots | None = None) -> None:
        self.path = os.fspath(path)
        self.slots = slots
        """Bounds how many processes verify at once (None: no bound)."""
        self._file_floor: float | None = None
        self._table: HtpasswdTable = _EMPTY
        self._loaded = False  # a good table was read at least once
        self._signature: _Signature | None = None  # of the file last read (good or bad)
        self._reported: str | None = None  # the failure last logged, until a success
        self._mode_warned: int | None = None
        # ((dummy hash, the file's own figure), seconds a verification of it takes)
        self._floor: tuple[tuple[str, float | None], float] | None = None

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

        def verify() -> str | None:
            if self.slots is None:
                return htpasswd.authenticate(table, header)
            with self.slots.hold():
                return htpasswd.authenticate(table, header)
        user = _in_thread(verify, beat)
        spent = time.monotonic() - started
        if spent >= floor / 2:  # a costly verification: follow what one costs now
            floor = self._learn_floor(spent)
        rest = floor - spent
        while rest > 0:
            time.sleep(min(rest, BEAT_S))
            if beat is not None:
                beat()
            rest = floor - (time.monotonic() - started)
        return user

    def _learn_floor(self, spent: float) -> float:
        """Move the floor towards ``spent`` (a costly verification just now): the cost of
        a hash follows the machine's load, and a fixed figure would let a loaded
        machine's costly answers stand out from the padded cheap ones."""
        assert self._floor is not None
        key, floor = self._floor
        floor = (1 - FLOOR_WEIGHT) * floor + FLOOR_WEIGHT * spent
        self._floor = (key, floor)
        return floor

    def _floor_s(self, table: HtpasswdTable) -> float:
        """How long a verification of ``table``'s costliest hash takes (measured once
        per table: a table's dummy hash is its costliest)."""
        key = (table.dummy_hash, self._file_floor)
        if self._floor is None or self._floor[0] != key:
            floor = self._file_floor if self._file_floor is not None else measure_floor(table)
            self._floor = (key, floor)
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
            text = data.decode("utf-8-sig")  # -sig: editors on Windows add a BOM
            table = parse(text)
        except UnicodeDecodeError as exc:
            self._failed(f"cannot use {self.path}: not UTF-8 (byte {exc.start})")
            return
        except HtpasswdError as exc:
            self._failed(f"cannot use {self.path}: {exc}")
            return
        self._file_floor = _floor_comment(text)
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


def measure_floor(table: HtpasswdTable) -> float:
    """Seconds a verification against ``table``'s costliest hash takes (a median)."""
    times = []
    for _ in range(FLOOR_SAMPLES):
        started = time.monotonic()
        htpasswd.verify({"": table.dummy_hash}, "", "etherws: timing probe")
        times.append(time.monotonic() - started)
    return statistics.median(times)


def snapshot_text(table: HtpasswdTable) -> str:
    """``table`` as a file for AuthFile readers, with its verification time measured."""
    return f"{FLOOR_COMMENT}{measure_floor(table):.6f}\n{htpasswd.dump(table)}"


def _floor_comment(text: str) -> float | None:
    first = text.partition("\n")[0]
    if not first.startswith(FLOOR_COMMENT):
        return None
    try:
        value = float(first[len(FLOOR_COMMENT):])
    except ValueError:
        return None
    return value if 0 <= value < 60 else None


def slot_count(n: int | None = None) -> int:
    """How many verifications may run at once: ``n``, or one per core."""
    return max(1, n or os.cpu_count() or 1)


class VerifySlots:
    """At most ``n`` processes verify a password at once, across processes: ``n`` lock
    files in the run directory; a verifier holds one (flock) while it hashes. A password
    flood then waits for the cores instead of starving every tunnel of CPU."""

    def __init__(self, rundir: str, n: int | None = None) -> None:
        self.paths = [RunDir(rundir).verify_lock(i) for i in range(slot_count(n))]

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """A slot, waiting for one when all are taken."""
        fds = []
        try:
            for path in self.paths:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                fds.append(fd)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    yield
                    return
                except BlockingIOError:
                    continue
            fcntl.flock(fds[os.getpid() % len(fds)], fcntl.LOCK_EX)  # all busy: queue up
            yield
        finally:
            for fd in fds:
                os.close(fd)  # releases the lock

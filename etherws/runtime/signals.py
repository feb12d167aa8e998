"""One way for every etherws process to be stopped by SIGTERM/SIGINT (I/O).

The handler only sets ``requested`` (a plain flag: no exception in the middle of a
hand-over or a table update); with ``wake`` the signal also makes a pipe readable
(``signal.set_wakeup_fd``), so a loop that polls ``fileno()`` returns at once instead of
at its next timeout. ``request()`` is the same stop asked for from inside (a control
request, an escalation).
"""

from __future__ import annotations

import os
import signal
from types import FrameType, TracebackType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignal:
    """SIGTERM/SIGINT set ``requested``; see the module docstring."""

    def __init__(self, wake: bool = True) -> None:
        self.requested = False
        self._read = self._write = -1
        if wake:
            self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._old: dict[int, object] = {}
        self._old_fd: int | None = None

    def install(self) -> StopSignal:
        """Route SIGTERM and SIGINT here (and wake through the pipe); returns self."""
        for sig in STOP_SIGNALS:
            self._old[sig] = signal.signal(sig, self._handler)
        if self._write >= 0:
            self._old_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        return self

    def _handler(self, _signum: int, _frame: FrameType | None) -> None:
        self.requested = True

    def request(self) -> None:
        """Stop, as if a signal had come (without waking a poll: the caller is the loop)."""
        self.requested = True

    def fileno(self) -> int:
        """The fd that becomes readable when a signal arrived (-1 without ``wake``)."""
        return self._read

    def drain(self) -> None:
        """Empty the pipe (the signal numbers in it are not needed)."""
        if self._read < 0:
            return
        try:
            while os.read(self._read, 512):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        """Put the previous handlers back and close the pipe."""
        if self._old_fd is not None:
            signal.set_wakeup_fd(self._old_fd)
            self._old_fd = None
        for sig, handler in self._old.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._old.clear()
        for fd in (self._read, self._write):
            if fd >= 0:
                os.close(fd)
        self._read = self._write = -1

    def __enter__(self) -> StopSignal:
        return self.install()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

"""Tie a child process's life to the supervisor's (I/O).

Every broker and worker calls ``die_with_parent`` first thing: the kernel then sends it
SIGKILL the moment the supervisor dies, even by ``kill -9``, so no orphan keeps a TAP
attached or a socket bound. The parent pid is passed on the command line to close the
race where the supervisor died before the prctl() ran.
"""

from __future__ import annotations

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Ask for SIGKILL when the parent dies; exit now if it is already gone."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if parent_pid and os.getppid() != parent_pid:
        os._exit(1)


_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Adopt every orphaned descendant (PR_SET_CHILD_SUBREAPER): a worker the zygote
    forked through a process that then exited becomes this process's child, reaped here
    and tied to this process's life. OSError when the kernel refuses."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")

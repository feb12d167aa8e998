"""The secret key of peer tokens and the locks of tokens in use (I/O).

The supervisor makes the key file at start when it does not exist (``make``: 32 random
bytes, mode 0600) and reads it (``read``) to mint tokens; every peer worker reads it to
verify them. The whole file is the key (at least ``etherws.token.KEY_BYTES`` bytes):
``head -c 32 /dev/urandom`` makes one by hand.

A token may be used by one connection at a time: the peer worker that accepted it holds
an exclusive flock on ``RUNDIR/tokens/<id>.lock`` for the rest of its life (``hold``),
and the kernel lets it go when the worker ends, however it ends. The lock files are
left in place while the switch runs: removing one that another worker is about to lock
would let two connections hold "the same" lock. At stop, when no worker is left, the
supervisor removes them with their directory (``remove_lock_dir``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re

from etherws.errors import EtherwsError
from etherws.paths import RunDir
from etherws.token import KEY_BYTES

MAX_KEY_BYTES = 4096
"""A longer key file is refused: the path is likely wrong."""
_TOKEN_ID = re.compile(r"[0-9a-f]{16}")


class TokenKeyError(EtherwsError):
    """The key file cannot be made or used; the message is one line for the user."""


def make(path: str) -> bool:
    """Create ``path`` with KEY_BYTES random bytes (0600) unless it exists; True when it
    was created. TokenKeyError when it cannot be."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return False
    except OSError as exc:
        raise TokenKeyError(f"cannot create token key {path}: {exc.strerror or exc}") from None
    try:
        with open(fd, "wb") as f:
            f.write(os.urandom(KEY_BYTES))
    except OSError as exc:
        os.unlink(path)
        raise TokenKeyError(f"cannot write token key {path}: {exc.strerror or exc}") from None
    return True


def read(path: str) -> bytes:
    """The key in ``path``; TokenKeyError when it cannot be read or is too short."""
    try:
        # O_NONBLOCK: a FIFO put in the key's place must not hang the reader
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, "rb") as f:
            key = f.read(MAX_KEY_BYTES + 1)
    except OSError as exc:
        raise TokenKeyError(f"cannot read token key {path}: {exc.strerror or exc}") from None
    if len(key) < KEY_BYTES:
        raise TokenKeyError(f"token key {path} is too short: {len(key)} bytes, at least "
                            f"{KEY_BYTES} (head -c 32 /dev/urandom makes one)")
    if len(key) > MAX_KEY_BYTES:
        raise TokenKeyError(f"token key {path} is longer than {MAX_KEY_BYTES} bytes")
    return key


def make_lock_dir(rundir: str) -> None:
    """Create the directory of token locks (0700) if it does not exist."""
    path = RunDir(rundir).tokens
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise TokenKeyError(f"cannot create {path}: {exc.strerror or exc}") from None


def remove_lock_dir(rundir: str) -> None:
    """Remove the directory of token locks and its lock files (at stop, when no peer
    worker is left to hold one); what cannot be removed stays."""
    path = RunDir(rundir).tokens
    try:
        names = os.listdir(path)
    except OSError:
        return
    for name in names:
        if _TOKEN_ID.fullmatch(name.removesuffix(".lock")):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(path, name))
    with contextlib.suppress(OSError):
        os.rmdir(path)


def hold(rundir: str, token_id: str) -> int | None:
    """An fd holding the lock of token ``token_id`` (keep it open while the connection
    lasts), or None when another connection holds it. OSError when the lock file cannot
    be opened."""
    if not _TOKEN_ID.fullmatch(token_id):
        raise ValueError(f"not a token id: {token_id!r}")
    fd = os.open(RunDir(rundir).token_lock(token_id),
                 os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd

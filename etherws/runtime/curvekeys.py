"""CURVE key files for remote control over tcp:// (I/O).

The files are ZeroMQ's own certificate format (``zmq.auth``), so keys made with other
ZeroMQ tools work too: ``NAME.key`` holds the public key (share it), ``NAME.key_secret``
the key pair (keep it, mode 0600). The supervisor allows a client when the client's
``.key`` file is in its ``--ctl-clients`` directory.
"""

from __future__ import annotations

import os

import zmq.auth

from etherws.errors import EtherwsError


class KeyFileError(EtherwsError):
    """A key file that is missing, unreadable, or not of the expected kind."""


def generate(base: str) -> tuple[str, str]:
    """Write ``base.key`` and ``base.key_secret``; returns their paths. Never overwrites."""
    directory, name = os.path.split(os.path.abspath(base))
    public, secret = f"{base}.key", f"{base}.key_secret"
    for path in (public, secret):
        if os.path.exists(path):
            raise KeyFileError(f"{path} exists; not overwriting a key")
    if not os.path.isdir(directory):
        raise KeyFileError(f"no directory {directory}")
    old = os.umask(0o077)  # the secret must never be readable by others, not even briefly
    try:
        made_public, made_secret = zmq.auth.create_certificates(directory, name)
    finally:
        os.umask(old)
    os.chmod(made_public, 0o644)
    return made_public, made_secret


def _load(path: str) -> tuple[bytes, bytes | None]:
    try:
        return zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot read CURVE key {path}: {exc}") from None


def load_secret(path: str) -> tuple[bytes, bytes]:
    """(public, secret) from a ``.key_secret`` file."""
    public, secret = _load(path)
    if not secret:
        raise KeyFileError(f"{path} holds no secret key (give the .key_secret file)")
    return public, secret


def load_public(path: str) -> bytes:
    """The public key from a ``.key`` (or ``.key_secret``) file."""
    return _load(path)[0]

"""The configuration file on disk: read it, read the secrets it names, save ports into it.

``save`` edits the file with tomlkit, which keeps the user's comments, key order and
layout: only the ``[[ports]]`` tables change, each rewritten in place where it already
was. Every write is atomic (a temporary file beside the target, fsync, rename, fsync of
the directory), so a crash or a full disk leaves the old file or the new one, never half
of one, and the file is mode 0600: it names the files that hold the tunnels' passwords.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Sequence
from typing import Any

import tomlkit
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import AoT, Table

from etherws.errors import EtherwsError
from etherws.portconfig import PortSpec, saved_tables

DEFAULT_PATH = "/etc/etherws/etherws.toml"
"""Read at start when no --config is given and it exists."""
MAX_SECRET = 4096


class ConfigFileError(EtherwsError):
    """The file (or a secret file it names) cannot be read or written."""


def read(path: str) -> str:
    """The file's text; ConfigFileError naming the file and the reason."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise ConfigFileError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigFileError(f"cannot read {path}: it is not UTF-8 text") from None


def read_secret(path: str, what: str) -> str:
    """The first line of a secret file (a password, or user:password of a proxy)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(MAX_SECRET + 1)
    except OSError as exc:
        raise ConfigFileError(f"cannot read the {what} {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigFileError(f"the {what} {path} is not UTF-8 text") from None
    line = text.partition("\n")[0].rstrip("\r")
    if not line or len(text) > MAX_SECRET:
        raise ConfigFileError(f"the {what} {path} must hold one non-empty line")
    return line


def write_atomic(path: str, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` all at once (mode ``mode``); OSError on failure."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)  # the rename itself must survive a power cut
    finally:
        os.close(dfd)


def render_ports(text: str, running: Sequence[PortSpec], base_dir: str) -> str:
    """``text`` with its ``[[ports]]`` tables replaced by ``running`` (tomlkit: the rest
    of the file, comments included, is kept as it was)."""
    try:
        doc = tomlkit.parse(text)
    except TOMLKitError as exc:  # edited since the supervisor read it
        raise ConfigFileError(f"the file does not parse as TOML: {exc}") from None
    old = doc.get("ports")
    existing: list[Any] = list(old) if isinstance(old, AoT) else []
    plain = [t.unwrap() if isinstance(t, Table) else {} for t in existing]
    aot = tomlkit.aot()
    for index, wanted in saved_tables(plain, running, base_dir):
        table = existing[index] if index is not None else tomlkit.table()
        for key in [k for k in table if k not in wanted]:
            del table[key]
        for key, value in wanted.items():
            old = table[key].unwrap() if key in table else None
            if old != value and [old] != value:  # one address may stay a plain string
                table[key] = value
        aot.append(table)
    if "ports" in doc:
        del doc["ports"]
    if running:
        doc["ports"] = aot
    return tomlkit.dumps(doc)

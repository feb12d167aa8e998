"""The token key file and the one-connection-per-token locks, on a real filesystem."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from etherws.paths import RunDir
from etherws.runtime import tokenkey
from etherws.token import KEY_BYTES


def test_a_missing_key_is_made_0600_and_never_overwritten(tmp_path: Path) -> None:
    path = str(tmp_path / "token.key")
    assert tokenkey.make(path)
    key = tokenkey.read(path)
    assert len(key) == KEY_BYTES
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not tokenkey.make(path)
    assert tokenkey.read(path) == key


@pytest.mark.parametrize("content, match", [
    (b"x" * (KEY_BYTES - 1), "too short: 31 bytes, at least 32"),
    (b"", "too short"),
    (b"x" * (tokenkey.MAX_KEY_BYTES + 1), "longer than 4096"),
])
def test_an_unusable_key_is_one_line(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "k"
    path.write_bytes(content)
    with pytest.raises(tokenkey.TokenKeyError, match=match):
        tokenkey.read(str(path))


def test_an_unreadable_key_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(tokenkey.TokenKeyError, match="cannot read token key .*: No such file"):
        tokenkey.read(str(tmp_path / "missing"))
    with pytest.raises(tokenkey.TokenKeyError, match="cannot create token key"):
        tokenkey.make(str(tmp_path / "no-dir" / "k"))


def test_a_token_is_held_by_one_holder_at_a_time(tmp_path: Path) -> None:
    rundir = str(tmp_path)
    tokenkey.make_lock_dir(rundir)
    tokenkey.make_lock_dir(rundir)  # again: fine
    assert stat.S_IMODE(os.stat(RunDir(rundir).tokens).st_mode) == 0o700
    first = tokenkey.hold(rundir, "0102030405060708")
    assert first is not None
    try:
        assert tokenkey.hold(rundir, "0102030405060708") is None  # in use
        other = tokenkey.hold(rundir, "1112131415161718")
        assert other is not None
        os.close(other)
    finally:
        os.close(first)
    again = tokenkey.hold(rundir, "0102030405060708")  # the first connection ended
    assert again is not None
    os.close(again)


@pytest.mark.parametrize("bad", ["", "../../etc/passwd", "0102030405060708" + "/x", "ABCDEF"])
def test_a_token_id_never_names_another_file(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError):
        tokenkey.hold(str(tmp_path), bad)


def test_the_lock_directory_goes_at_stop_with_its_lock_files_only(tmp_path: Path) -> None:
    rundir = str(tmp_path)
    tokenkey.make_lock_dir(rundir)
    fd = tokenkey.hold(rundir, "0102030405060708")
    assert fd is not None
    os.close(fd)
    tokenkey.remove_lock_dir(rundir)
    assert not os.path.exists(RunDir(rundir).tokens)
    tokenkey.make_lock_dir(rundir)
    stray = os.path.join(RunDir(rundir).tokens, "not-a-lock")
    open(stray, "w").close()
    tokenkey.remove_lock_dir(rundir)  # what is not ours stays, and its directory with it
    assert os.listdir(RunDir(rundir).tokens) == ["not-a-lock"]
    tokenkey.remove_lock_dir(str(tmp_path / "nowhere"))  # nothing to remove: no error

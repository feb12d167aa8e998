"""AuthFile against real files: change detection, last good table, log-once failures.

Each test owns files in tmp_path. Timestamps are set explicitly with os.utime where a
test needs the "unchanged" fast path, so nothing depends on the clock's granularity
and nothing sleeps.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import statistics
import time
from pathlib import Path

import bcrypt
import pytest

from etherws.htpasswd import HtpasswdTable, parse, verify
from etherws.runtime import authfile
from etherws.runtime.authfile import AuthFile

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "htpasswd"
ALICE = (FIXTURES / "sha1.htpasswd").read_text(encoding="utf-8").splitlines()[0]
BOB = ALICE.replace("alice:", "bobby:", 1)  # same length as ALICE
HOUR_NS = 3600 * 10**9


@pytest.fixture
def htfile(tmp_path: Path) -> Path:
    """Where the tests write their htpasswd file (not created yet)."""
    return tmp_path / "htpasswd"


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Capture etherws.runtime.authfile at INFO and above."""
    caplog.set_level(logging.INFO, logger="etherws.runtime.authfile")
    return caplog


def write(path: Path, text: str, age_ns: int | None = HOUR_NS) -> None:
    """Rewrite ``path`` in place, mode 0600, with an mtime ``age_ns`` in the past.

    An old mtime takes the file out of AuthFile's racy window, so an unchanged file is
    served from the cache; ``age_ns=None`` keeps the fresh mtime of the write.
    """
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, 0o600)
    if age_ns is not None:
        then = time.time_ns() - age_ns
        os.utime(path, ns=(then, then))


def kept(reason: str) -> str:
    """The warning for a failure while a good table is in force."""
    return f"{reason}; keeping the last good table (1 users)"


def nobody(reason: str) -> str:
    """The warning for a failure before any good table."""
    return f"{reason}; no users can log in until it is fixed"


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The WARNING messages logged so far."""
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_first_read(htfile: Path, logs: pytest.LogCaptureFixture) -> None:
    write(htfile, ALICE + "\n")
    auth = AuthFile(htfile)
    table = auth.table()
    assert list(table) == ["alice"] and verify(table, "alice", "s3cret!")
    assert auth.path == str(htfile)
    assert auth.loaded and auth.problem is None
    # the first load is the owner's to announce (at DEBUG here); a change is news
    assert [r.getMessage() for r in logs.records] == []
    write(htfile, ALICE + "\n" + BOB + "\n", age_ns=HOUR_NS // 2)
    assert len(auth.table()) == 2
    assert [r.getMessage() for r in logs.records] == [f"htpasswd {htfile} reloaded: 2 users"]


def test_loaded_and_problem_before_any_good_read(htfile: Path) -> None:
    write(htfile, "garbage\n")
    auth = AuthFile(htfile)
    assert len(auth.table()) == 0
    assert not auth.loaded and auth.problem == f"cannot use {htfile}: line 1: expected user:hash"


def test_unchanged_file_is_one_stat(htfile: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(htfile, ALICE + "\n")
    auth = AuthFile(htfile)
    first = auth.table()
    parses: list[str] = []
    monkeypatch.setattr("etherws.runtime.authfile.parse", parses.append)
    for _ in range(100):
        assert auth.table() is first
    assert parses == []


def test_fresh_file_is_reread_until_its_mtime_is_old(
        htfile: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two same-size writes within one timestamp tick look identical to stat(): a file
    # modified within RACY_WINDOW_NS is therefore read again on every call.
    write(htfile, ALICE + "\n", age_ns=None)
    auth = AuthFile(htfile)
    auth.table()
    reads: list[str] = []

    def counting_parse(text: str) -> HtpasswdTable:
        reads.append(text)
        return parse(text)
    monkeypatch.setattr("etherws.runtime.authfile.parse", counting_parse)
    auth.table()
    assert len(reads) == 1
    old = time.time_ns() - HOUR_NS
    os.utime(htfile, ns=(old, old))
    auth.table()
    auth.table()
    assert len(reads) == 2  # read once more (the signature changed), then cached


def test_rewrite_in_place_same_size(htfile: Path) -> None:
    write(htfile, ALICE + "\n")
    auth = AuthFile(htfile)
    assert list(auth.table()) == ["alice"]
    assert len(BOB) == len(ALICE)
    write(htfile, BOB + "\n", age_ns=HOUR_NS // 2)  # same size, another (old) mtime
    assert list(auth.table()) == ["bobby"]


def test_rewrite_within_the_same_tick_is_seen(htfile: Path) -> None:
    # No utime: whatever the filesystem's timestamp granularity, the change is seen.
    write(htfile, ALICE + "\n", age_ns=None)
    auth = AuthFile(htfile)
    assert list(auth.table()) == ["alice"]
    write(htfile, BOB + "\n", age_ns=None)
    assert list(auth.table()) == ["bobby"]


def test_touch_with_new_content(htfile: Path) -> None:
    write(htfile, ALICE + "\n")
    auth = AuthFile(htfile)
    auth.table()
    write(htfile, ALICE + "\n" + BOB + "\n", age_ns=None)
    assert sorted(auth.table()) == ["alice", "bobby"]


def test_replace_via_rename(htfile: Path, tmp_path: Path) -> None:
    write(htfile, ALICE + "\n")
    auth = AuthFile(htfile)
    auth.table()
    new = tmp_path / "htpasswd.new"
    write(new, BOB + "\n", age_ns=HOUR_NS)  # same size and mtime: only the inode differs
    os.utime(new, ns=(os.stat(htfile).st_atime_ns, os.stat(htfile).st_mtime_ns))
    os.replace(new, htfile)
    assert list(auth.table()) == ["bobby"]


def test_garbled_file_keeps_last_good_and_logs_once(
        htfile: Path, logs: pytest.LogCaptureFixture) -> None:
    write(htfile, ALICE + "\n")
    auth = AuthFile(htfile)
    good = auth.table()
    write(htfile, ALICE + "\nmallory:hunter2\n", age_ns=None)
    for _ in range(5):
        assert auth.table() is good
    assert warnings(logs) == [
        kept(f"cannot use {htfile}: line 2: unsupported hash (plain text or an unknown scheme)")]
    assert "hunter2" not in logs.text and "mallory" not in logs.text


def test_a_different_failure_is_logged_again(
        htfile: Path, logs: pytest.LogCaptureFixture) -> None:
    write(htfile, ALICE + "\n")
    auth = AuthFile(htfile)
    auth.table()
    write(htfile, "garbage\n" + ALICE + "\n")
    auth.table()
    write(htfile, ALICE + "\ngarbage\n", age_ns=HOUR_NS // 2)
    auth.table()
    auth.table()
    assert [w.split(": ", 1)[1][:6] for w in warnings(logs)] == ["line 1", "line 2"]


def test_recovery_logs_and_the_next_failure_is_logged_again(
        htfile: Path, logs: pytest.LogCaptureFixture) -> None:
    write(htfile, ALICE + "\n")
    auth = AuthFile(htfile)
    auth.table()
    write(htfile, "garbage\n", age_ns=HOUR_NS // 2)
    auth.table()
    write(htfile, BOB + "\n", age_ns=HOUR_NS // 3)
    assert list(auth.table()) == ["bobby"]
    write(htfile, "garbage\n", age_ns=HOUR_NS // 4)
    assert list(auth.table()) == ["bobby"]
    messages = [r.getMessage() for r in logs.records]
    assert messages[1] == f"htpasswd {htfile} is usable again: 1 users"
    assert len(warnings(logs)) == 2 and warnings(logs)[0] == warnings(logs)[1]


def test_deleted_file_keeps_last_good(htfile: Path, logs: pytest.LogCaptureFixture) -> None:
    write(htfile, ALICE + "\n")
    auth = AuthFile(htfile)
    good = auth.table()
    htfile.unlink()
    assert auth.table() is good and auth.table() is good
    assert warnings(logs) == [kept(f"cannot read {htfile}: No such file or directory")]
    write(htfile, BOB + "\n")
    assert list(auth.table()) == ["bobby"]
    assert logs.records[-1].getMessage() == f"htpasswd {htfile} is usable again: 1 users"


def test_directory_in_place_of_the_file(htfile: Path, logs: pytest.LogCaptureFixture) -> None:
    write(htfile, ALICE + "\n")
    auth = AuthFile(htfile)
    good = auth.table()
    htfile.unlink()
    htfile.mkdir()
    assert auth.table() is good and auth.table() is good
    assert warnings(logs) == [kept(f"cannot read {htfile}: not a regular file")]


def test_unreadable_file(htfile: Path, logs: pytest.LogCaptureFixture,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    # chmod 000 does not stop root, so make open() fail the way EACCES would.
    write(htfile, ALICE + "\n")
    auth = AuthFile(htfile)
    good = auth.table()
    write(htfile, BOB + "\n", age_ns=HOUR_NS // 2)
    real_open = os.open

    def denied(path: str, flags: int, mode: int = 0o777) -> int:
        if path == str(htfile):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, mode)
    monkeypatch.setattr(os, "open", denied)
    assert auth.table() is good and auth.table() is good
    assert warnings(logs) == [kept(f"cannot read {htfile}: Permission denied")]
    monkeypatch.setattr(os, "open", real_open)
    # A read error is not remembered: the next call tries again, file changed or not.
    assert list(auth.table()) == ["bobby"]


def test_never_good_means_nobody(htfile: Path, logs: pytest.LogCaptureFixture) -> None:
    auth = AuthFile(htfile)
    assert auth.table() == {} and not verify(auth.table(), "alice", "s3cret!")
    write(htfile, "alice:hunter2\n")
    assert auth.table() == {}
    assert warnings(logs) == [
        nobody(f"cannot read {htfile}: No such file or directory"),
        nobody(f"cannot use {htfile}: line 1: unsupported hash (plain text or an unknown scheme)")]
    write(htfile, ALICE + "\n", age_ns=HOUR_NS // 2)
    assert verify(auth.table(), "alice", "s3cret!")


@pytest.mark.parametrize("data, reason", [
    (b"alice:\xff\xfe\n", "not UTF-8 (byte 6)"),
    (b"x" * 64 + b"\n", "larger than 32 bytes"),
])
def test_unusable_bytes(htfile: Path, logs: pytest.LogCaptureFixture,
                        monkeypatch: pytest.MonkeyPatch, data: bytes, reason: str) -> None:
    monkeypatch.setattr(authfile, "MAX_FILE_BYTES", 32)
    htfile.write_bytes(data)
    os.chmod(htfile, 0o600)
    assert AuthFile(htfile).table() == {}
    assert warnings(logs) == [nobody(f"cannot use {htfile}: {reason}")]


def test_byte_order_mark_and_crlf_are_fine(htfile: Path) -> None:
    htfile.write_bytes(b"\xef\xbb\xbf" + ALICE.encode() + b"\r\n" + BOB.encode() + b"\r\n")
    os.chmod(htfile, 0o600)
    assert sorted(AuthFile(htfile).table()) == ["alice", "bobby"]


def test_world_readable_file_is_warned_about_once(
        htfile: Path, logs: pytest.LogCaptureFixture) -> None:
    write(htfile, ALICE + "\n")
    os.chmod(htfile, 0o644)
    auth = AuthFile(htfile)
    assert list(auth.table()) == ["alice"]
    write(htfile, BOB + "\n", age_ns=HOUR_NS // 2)
    os.chmod(htfile, 0o644)
    assert list(auth.table()) == ["bobby"]
    assert warnings(logs) == [f"htpasswd {htfile} is world-readable (mode 0644)"]
    os.chmod(htfile, 0o666)
    auth.table()
    assert warnings(logs)[-1] == f"htpasswd {htfile} is world-writable (mode 0666)"


# --- one duration whoever the user is ------------------------------------------------------
def _basic(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


def _medians_s(auth: AuthFile, headers: dict[str, bytes], rounds: int) -> dict[str, float]:
    """Median refusal time per header, the attempts interleaved (a noisy machine's load
    then weighs on every kind alike)."""
    times: dict[str, list[float]] = {who: [] for who in headers}
    for _ in range(rounds):
        for who, header in headers.items():
            started = time.perf_counter()
            assert auth.authenticate(header) is None
            times[who].append(time.perf_counter() - started)
    return {who: statistics.median(t) for who, t in times.items()}


def test_refusals_take_as_long_for_cheap_costly_and_unknown_users(htfile: Path) -> None:

    sha = "{SHA}" + base64.b64encode(hashlib.sha1(b"right").digest()).decode()
    costly = bcrypt.hashpw(b"right", bcrypt.gensalt(10)).decode()
    htfile.write_text(f"cheap:{sha}\ncostly:{costly}\n")
    auth = AuthFile(htfile)
    assert auth.authenticate(_basic("cheap", "right")) == "cheap"
    medians = _medians_s(auth, {who: _basic(who, "wrong")
                                for who in ("cheap", "costly", "nobody")}, 15)
    for who in ("cheap", "nobody"):
        ratio = medians[who] / medians["costly"]
        assert 0.8 <= ratio <= 1.25, medians


def test_a_verification_beats_while_it_runs(htfile: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    htfile.write_text(f"u:{bcrypt.hashpw(b'pw', bcrypt.gensalt(12)).decode()}\n")
    monkeypatch.setattr(authfile, "BEAT_S", 0.02)
    beats: list[float] = []
    auth = AuthFile(htfile)
    assert auth.authenticate(_basic("u", "pw"), lambda: beats.append(time.monotonic())) == "u"
    # bcrypt cost 12 takes some 200 ms here: the thread that beats was not blocked by it
    assert len(beats) >= 3
    assert max(b - a for a, b in zip(beats, beats[1:])) < 0.15


def test_a_snapshot_carries_its_verification_time(htfile: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    costly = bcrypt.hashpw(b"right", bcrypt.gensalt(4)).decode()
    htfile.write_text(authfile.snapshot_text(parse(f"u:{costly}\n")))
    assert htfile.read_text().startswith(authfile.FLOOR_COMMENT)
    measured: list[object] = []
    monkeypatch.setattr(authfile, "measure_floor", lambda t: measured.append(t) or 0.0)
    auth = AuthFile(htfile)
    assert auth.authenticate(_basic("u", "right")) == "u"
    assert measured == []  # the reader took the writer's figure
    htfile.write_text(f"u:{costly}\n")  # a plain file: measured by the reader
    os.utime(htfile, ns=(time.time_ns() - HOUR_NS, time.time_ns() - HOUR_NS))
    assert auth.authenticate(_basic("u", "wrong")) is None
    assert len(measured) == 1


def test_verify_slots_bound_the_verifiers(tmp_path: Path) -> None:
    import threading
    slots = authfile.VerifySlots(str(tmp_path), n=1)
    order: list[str] = []
    with slots.hold():
        waiter = threading.Thread(target=lambda: _hold_and_note(slots, order))
        waiter.start()
        waiter.join(0.3)
        assert waiter.is_alive() and order == []  # the one slot is taken: it waits
        order.append("first done")
    waiter.join(5)
    assert order == ["first done", "second"]


def _hold_and_note(slots: authfile.VerifySlots, order: list[str]) -> None:
    with slots.hold():
        order.append("second")

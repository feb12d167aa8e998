"""Secrets on etherws-ctl's command line: read from files, hidden from ps at once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from etherws.ctl import secrets
from tests import support
from tests.component.ctl.test_cli import ENV, REPO, RESULTS, ctl
from tests.component.fakes import FakeSupervisor, swallow


@pytest.fixture
def fake(serve: Callable[..., FakeSupervisor]) -> FakeSupervisor:
    return serve(results=RESULTS)


@pytest.mark.parametrize("argv, shown, found", [
    (["ctl", "addport", "client", "--passwd", "s3cret", "ws://h/"],
     ["ctl", "addport", "client", "--passwd", "***", "ws://h/"], ["--passwd"]),
    (["ctl", "--passwd=s3cret"], ["ctl", "--passwd=***"], ["--passwd"]),
    (["ctl", "--proxy", "http://u:p@px:3128"], ["ctl", "--proxy", "http://***@px:3128"],
     ["--proxy"]),
    (["ctl", "--proxy=http://px:3128"], ["ctl", "--proxy=http://px:3128"], []),
    (["ctl", "--passwd-file", "/f", "listport"], ["ctl", "--passwd-file", "/f", "listport"],
     []),
])
def test_masked(argv: list[str], shown: list[str], found: list[str]) -> None:
    assert secrets.masked(argv) == (shown, found)


def _cmdline(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read()


def test_a_password_in_argv_is_hidden_while_the_command_waits(
        fake: FakeSupervisor, rundir: str) -> None:
    fake.respond = swallow  # the answer never comes: the command waits, as addport does
    proc = subprocess.Popen(
        [sys.executable, "-m", "etherws.ctl.cli", "--rundir", rundir, "--timeout", "20",
         "addport", "client", "--user", "u", "--passwd", "pw-Zq9secret", "ws://h/"],
        cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        support.wait_until(lambda: fake.requests or proc.poll() is not None, 10,
                           "the request to arrive")
        assert proc.poll() is None
        assert b"pw-Zq9secret" not in _cmdline(proc.pid)
        assert b"--passwd" in _cmdline(proc.pid)  # the rest is still readable in ps
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=10)
    assert b"warning: --passwd on the command line is visible" in err


def test_passwords_and_proxy_credentials_from_files(fake: FakeSupervisor, rundir: str,
                                                    tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("pw-from-file\n")
    (tmp_path / "px").write_text("proxy user:p@ss/word\n")
    out = ctl("--rundir", rundir, "addport", "client", "--user", "u", "--passwd-file",
              str(tmp_path / "pw"), "--proxy", "http://px:3128", "--proxy-auth-file",
              str(tmp_path / "px"), "ws://h/")
    assert out.returncode == 0, out.stderr
    assert "warning" not in out.stderr
    method, params = fake.calls[-1]
    assert params["passwd"] == "pw-from-file"
    assert params["proxy"] == "http://proxy%20user:p%40ss%2Fword@px:3128"


@pytest.mark.parametrize("args, words", [
    (["--user", "u", "--passwd-file", "/nonexistent/pw"],
     "cannot read the password file /nonexistent/pw: No such file or directory"),
    (["--user", "u", "--passwd", "x", "--passwd-file", "/f"], "not both"),
    (["--proxy-auth-file", "/f"], "--proxy-auth-file goes with --proxy"),
])
def test_secret_file_errors_are_usage_errors(fake: FakeSupervisor, rundir: str,
                                             args: list[str], words: str) -> None:
    out = ctl("--rundir", rundir, "addport", "client", *args, "ws://h/")
    assert out.returncode == 2 and words in out.stderr, out.stderr
    assert fake.calls == []
    assert os.path.exists(rundir)

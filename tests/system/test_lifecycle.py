"""Starting and stopping the supervisor, and who may talk to it."""

from __future__ import annotations

import os
import stat
import time

from tests.support import PYTHON, SCALE, free_port, link_exists, run, unique, wait_until
from tests.system.harness import Switch, alive

SETPRIV = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def supervisor(*args: str, timeout_s: float = 30):
    return run(PYTHON, "-m", "etherws.supervisor", *args, check=False, timeout_s=timeout_s)


def test_second_start_on_the_same_rundir_fails_cleanly(switch: Switch) -> None:
    res = supervisor("start", "--foreground", "--rundir", switch.rundir)
    assert res.returncode == 1
    assert "another etherws-supervisor" in res.stderr and res.stderr.count("\n") == 1
    assert f"pid {switch.proc.pid}" in res.stderr
    switch.ctl("listport")  # the first one still owns its sockets
    assert switch.proc.poll() is None


def test_ctl_without_supervisor_exits_3_at_once(rundir: str) -> None:
    start = time.monotonic()
    res = run(PYTHON, "-m", "etherws.ctl.cli", "--rundir", rundir, "listport", check=False)
    assert res.returncode == 3 and res.stderr.count("\n") == 1
    assert "etherws-supervisor" in res.stderr
    assert time.monotonic() - start < 5 * SCALE


def test_ctl_against_a_dead_socket_exits_3_within_its_timeout(rundir: str) -> None:
    import socket
    path = os.path.join(rundir, "ctl.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)  # a socket file nobody accepts on (a crashed supervisor's leftover)
    try:
        start = time.monotonic()
        res = run(PYTHON, "-m", "etherws.ctl.cli", "--rundir", rundir, "--timeout", "1",
                  "listport", check=False)
        assert res.returncode == 3 and res.stderr.count("\n") == 1
        assert time.monotonic() - start < 1 + 4 * SCALE
    finally:
        s.close()


def test_non_root_user_cannot_use_the_control_socket(switch: Switch) -> None:
    st = os.stat(switch.rundir)
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.join(switch.rundir, "ctl.sock")).st_mode) == 0o600
    res = run(*SETPRIV, PYTHON, "-m", "etherws.ctl.cli", "--rundir", switch.rundir,
              "--timeout", "2", "listport", check=False)
    assert res.returncode == 3, res
    assert "permission denied" in res.stderr.lower()


def test_umask_000_still_gives_a_private_control_socket(tmp_path) -> None:
    rundir = str(tmp_path / "run-umask")
    old = os.umask(0)
    try:
        sw = Switch(rundir, tmp_path / "umask.log")
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(os.stat(rundir).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(os.path.join(rundir, "ctl.sock")).st_mode) == 0o600
    finally:
        sw.close()


def test_detached_start_status_and_stop(tmp_path) -> None:
    rundir = str(tmp_path / "run-detached")
    logfile = tmp_path / "detached.log"
    res = supervisor("start", "--rundir", rundir, "--logfile", str(logfile),
                     "--host", "127.0.0.1", "--port", str(free_port()))
    assert res.returncode == 0, res.stderr
    pid = int(open(os.path.join(rundir, "supervisor.pid")).read())
    tap = unique("etwt")
    try:
        status = supervisor("status", "--rundir", rundir)
        assert status.returncode == 0 and str(pid) in status.stdout
        added = run(PYTHON, "-m", "etherws.ctl.cli", "--rundir", rundir, "addport", "tap", tap)
        assert added.returncode == 0 and link_exists(tap)
        stop = supervisor("stop", "--rundir", rundir)
        assert stop.returncode == 0, stop.stderr
        assert not alive(pid)
        assert not link_exists(tap)  # an orderly stop removes the TAPs it created
        assert sorted(os.listdir(rundir)) == ["lock"]  # the lock file stays, on purpose
        assert "supervisor started" in logfile.read_text()
    finally:
        if alive(pid):
            os.kill(pid, 9)
            wait_until(lambda: not alive(pid), 5, "the supervisor to die")
        if link_exists(tap):
            run("ip", "link", "del", tap, check=False)
    again = supervisor("stop", "--rundir", rundir, "--timeout", "1")
    assert again.returncode == 3


def test_start_with_bad_options_fails_with_one_line(tmp_path) -> None:
    for args in (["--fdb-size", "3"], ["--ageout", "0"], ["--rundir", "relative"],
                 ["--config", str(tmp_path / "missing.toml")]):
        res = supervisor("start", "--foreground", *args)
        assert res.returncode == 2, (args, res)
        assert res.stderr.startswith("etherws-supervisor: ") and res.stderr.count("\n") == 1


def test_start_with_unusable_log_options_fails_with_one_line(tmp_path) -> None:
    for args in (["--logfile", "/nonexistent-etw/x.log"],
                 ["--logconf", str(tmp_path / "missing.conf")]):
        for mode in (["--foreground"], []):
            res = supervisor("start", *mode, "--rundir", str(tmp_path / "r"), *args)
            assert res.returncode == 2, (args, mode, res)
            assert res.stderr.startswith("etherws-supervisor: ")
            assert res.stderr.count("\n") == 1
            assert not os.path.exists(tmp_path / "r")  # refused before anything was made


def test_start_refuses_a_busy_server_port_and_unusable_tls_files(tmp_path) -> None:
    import socket
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = str(busy.getsockname()[1])
        rundir = str(tmp_path / "r")
        res = supervisor("start", "--foreground", "--rundir", rundir, "--host", "127.0.0.1",
                         "--port", port)
        assert res.returncode == 1
        assert res.stderr == (f"etherws-supervisor: cannot listen on 127.0.0.1:{port}: "
                              "Address already in use\n")
        assert sorted(os.listdir(rundir)) == ["lock"]  # nothing else left behind
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    for args, message in (
            (["--sslcert", str(garbage), "--sslkey", str(garbage)], "--sslcert/--sslkey"),
            (["--sslcert", "/nonexistent/c.pem", "--sslkey", "/nonexistent/k.pem"],
             "cannot read --sslcert/--sslkey"),
            (["--htpasswd", "/nonexistent/users"], "--htpasswd: cannot read /nonexistent/users"),
            (["--htpasswd", str(garbage)], "--htpasswd: cannot use")):
        res = supervisor("start", "--foreground", "--rundir", str(tmp_path / "r2"),
                         "--host", "127.0.0.1", "--port", str(free_port()), *args)
        assert res.returncode == 1 and res.stderr.count("\n") == 1, (args, res)
        assert message in res.stderr, res.stderr

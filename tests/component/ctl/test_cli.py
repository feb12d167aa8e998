"""etherws-ctl as a subprocess against a fake supervisor (a ROUTER in the test process).

The fake (``fakes.FakeSupervisor``) binds where the real supervisor would
(``paths.RunDir(rundir).ctl_endpoint``), answers with the real ``control.dispatch`` from a
table of results, and records every request, so each test sees both sides: what the CLI
sent and what the user saw.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from etherws.control import Refused
from etherws.ctl import render
from etherws.paths import RunDir
from tests import support
from tests.component.fakes import FakeSupervisor, swallow
from tests.support import SCALE

REPO = str(Path(__file__).resolve().parents[3])
ENV = {**os.environ, "PYTHONPATH": REPO, "PYTHONDONTWRITEBYTECODE": "1"}
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
# Interpreter start-up plus a zmq import, on a loaded machine.
STARTUP_S = 3.0 * SCALE

PORT = {"port": 1, "type": "tap", "target": "ethws0", "state": "up", "shut": False, "pid": 4242,
        "restarts": 0, "uptime": 12.5, "cpu": 0.3, "rss": 21000000, "rx": 10, "tx": 12,
        "rx_bytes": 980, "tx_bytes": 1200, "drops": 0, "errors": 0, "reason": "",
        "next_retry": None}
FATAL = {**PORT, "port": 2, "type": "netdev", "target": "eth1", "state": "fatal", "pid": None,
         "restarts": 5, "uptime": None, "cpu": None, "rss": None,
         "reason": "exited with status 78"}
IFACE = {"port": 1, "type": "tap", "target": "ethws0", "address": "192.0.2.1",
         "netmask": "255.255.255.0", "mtu": 1500, "addresses": ["192.0.2.1/24", "2001:db8::1/64"]}
RESULTS: dict[str, dict[str, Any]] = {
    "addPort": {"entries": [PORT]},
    "setPort": {"entries": [{"port": 3, "shut": True}]},
    "delPort": {"entries": [{"port": 2}]},
    "restartPort": {"entries": [FATAL]},
    "listPort": {"entries": [PORT, FATAL]},
    "setInterface": {"entries": [IFACE]},
    "listInterface": {"entries": [IFACE]},
    "listFdb": {"entries": [{"vid": 0, "mac": "02:00:00:00:00:01", "port": 1, "age": 3}]},
    "flushFdb": {"entries": []},
    "getStatus": {"entries": [{"pid": 100, "rundir": "/run/etherws", "uptime": 7500,
                               "ports": 2, "broker": {"state": "up", "pid": 101, "restarts": 0},
                               "fdb": {"entries": 1, "capacity": 4096, "refused_full": 0,
                                       "refused_port": 0}}]},
}


@pytest.fixture
def fake(serve: Callable[..., FakeSupervisor]) -> FakeSupervisor:
    """A fake supervisor in this test's run directory, answering from RESULTS."""
    return serve(results=RESULTS)


def ctl(*args: str, prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m etherws.ctl.cli ARGS`` (behind ``prefix``, e.g. setpriv)."""
    cmd = [*(prefix or []), sys.executable, "-m", "etherws.ctl.cli", *args]
    return support.run(*cmd, check=False, timeout_s=30, cwd=REPO, env=ENV)


def one_line(stderr: str) -> str:
    """The only line on stderr (fails when there are more)."""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


# --- every command: request sent, JSON printed ---------------------------------------------
CASES = [
    (["addport", "tap", "ethws0"], "addPort", {"type": "tap", "target": "ethws0"}),
    (["addport", "netdev", "eth1"], "addPort", {"type": "netdev", "target": "eth1"}),
    (["setport", "3", "--shut", "1"], "setPort", {"port": 3, "shut": True}),
    (["setport", "3", "--shut", "0"], "setPort", {"port": 3, "shut": False}),
    (["setport", "3", "--vlan", "10"], "setPort", {"port": 3, "vlan": 10}),
    (["setport", "3", "--vlan", "0"], "setPort", {"port": 3, "vlan": 0}),
    (["setport", "lan", "--trunk", "20,10,11-12", "--native", "1"], "setPort",
     {"port": "lan", "trunk": "10-12,20", "native": 1}),
    (["setport", "3", "--trunk", "all"], "setPort", {"port": 3, "trunk": "all"}),
    (["setport", "3", "--storm", "0", "--rate", "2.5", "--shut", "1"], "setPort",
     {"port": 3, "shut": True, "storm": 0, "rate": 2.5}),
    (["delport", "2"], "delPort", {"port": 2}),
    (["restartport", "2"], "restartPort", {"port": 2}),
    (["listport"], "listPort", {}),
    (["setif", "1", "--address", "192.0.2.1/24"], "setInterface",
     {"port": 1, "address": "192.0.2.1/24"}),
    (["setif", "1", "--mtu", "9000"], "setInterface", {"port": 1, "mtu": 9000}),
    (["setif", "1", "--address", "192.0.2.1", "--netmask", "255.255.255.0", "--mtu", "1400"],
     "setInterface", {"port": 1, "address": "192.0.2.1", "netmask": "255.255.255.0",
                      "mtu": 1400}),
    (["listif"], "listInterface", {}),
    (["listfdb"], "listFdb", {}),
    (["flushfdb"], "flushFdb", {}),
    (["flushfdb", "5"], "flushFdb", {"port": 5}),
    (["status"], "getStatus", {}),
]


@pytest.mark.parametrize("argv, method, params", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_command_request_and_json(fake: FakeSupervisor, rundir: str, argv: list[str],
                                  method: str, params: dict[str, Any]) -> None:
    out = ctl("--rundir", rundir, "--json", *argv)
    assert (out.returncode, out.stderr) == (0, "")
    assert json.loads(out.stdout) == RESULTS[method]
    assert fake.calls == [(method, params)]


@pytest.mark.parametrize("argv, renderer", [
    (["listport"], render.ports),
    (["addport", "tap", "ethws0"], render.ports),
    (["listif"], render.interfaces),
    (["listfdb"], render.fdb),
    (["status"], render.status),
])
def test_tables(fake: FakeSupervisor, rundir: str, argv: list[str], renderer: Any) -> None:
    out = ctl("--rundir", rundir, *argv)
    assert (out.returncode, out.stderr) == (0, "")
    assert out.stdout == renderer(RESULTS[fake.calls[0][0]]) + "\n"
    assert out.stdout.split("\n")[0].split()[:2] in (["PORT", "TYPE"], ["VID", "MAC"],
                                                     ["supervisor", "pid"])


def test_listport_table_shows_state_and_reason(fake: FakeSupervisor, rundir: str) -> None:
    lines = ctl("--rundir", rundir, "listport").stdout.splitlines()
    assert lines[0].split()[-1] == "REASON" and len(lines) == 3
    assert lines[2].split()[:4] == ["2", "netdev", "eth1", "fatal"]
    assert lines[2].endswith("exited with status 78")


@pytest.mark.parametrize("argv", [
    ["setport", "3", "--shut", "1"], ["delport", "2"], ["restartport", "2"],
    ["setif", "1", "--mtu", "1400"], ["flushfdb"], ["flushfdb", "1"],
])
def test_quiet_commands(fake: FakeSupervisor, rundir: str, argv: list[str]) -> None:
    out = ctl("--rundir", rundir, *argv)
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")
    assert len(fake.calls) == 1


def test_ctl_endpoint_option(fake: FakeSupervisor, rundir: str) -> None:
    out = ctl("--ctl", RunDir(rundir).ctl_endpoint, "--json", "listfdb")
    assert out.returncode == 0 and json.loads(out.stdout) == RESULTS["listFdb"]


# --- errors ------------------------------------------------------------------------------------
def test_error_reply(fake: FakeSupervisor, rundir: str) -> None:
    fake.refuse["delPort"] = Refused("no-such-port", "no port 7")
    out = ctl("--rundir", rundir, "delport", "7")
    assert (out.returncode, out.stdout) == (1, "")
    assert one_line(out.stderr) == "etherws-ctl: no port 7 [no-such-port]"


def test_error_reply_with_json(fake: FakeSupervisor, rundir: str) -> None:
    fake.refuse["addPort"] = Refused("bad-type", "unknown port type")
    out = ctl("--rundir", rundir, "--json", "addport", "tap", "x")
    assert (out.returncode, out.stdout) == (1, "")
    assert one_line(out.stderr) == "etherws-ctl: unknown port type [bad-type]"


def test_no_supervisor(rundir: str) -> None:
    started = time.monotonic()
    out = ctl("--rundir", rundir, "listport")
    assert time.monotonic() - started < STARTUP_S
    assert (out.returncode, out.stdout) == (3, "")
    assert one_line(out.stderr) == (
        f"etherws-ctl: no supervisor: {RunDir(rundir).ctl_sock} does not exist "
        f"(is etherws-supervisor running? try: etherws-supervisor start --rundir {rundir})")


def test_no_supervisor_hint_names_the_endpoint(rundir: str) -> None:
    endpoint = "ipc://" + os.path.join(rundir, "other.sock")
    out = ctl("--ctl", endpoint, "listport")
    assert out.returncode == 3
    assert one_line(out.stderr).endswith(f"try: etherws-supervisor start --ctl {endpoint})")


def test_hung_supervisor_times_out(fake: FakeSupervisor, rundir: str) -> None:
    fake.respond = swallow
    started = time.monotonic()
    out = ctl("--rundir", rundir, "--timeout", "1", "listport")
    assert time.monotonic() - started < 1 + STARTUP_S
    assert (out.returncode, out.stdout) == (3, "")
    line = one_line(out.stderr)
    assert line.startswith(f"etherws-ctl: no reply from the supervisor at "
                           f"{RunDir(rundir).ctl_endpoint} within 1s")
    assert line.endswith(f"(is etherws-supervisor running? try: etherws-supervisor start "
                         f"--rundir {rundir})")


def test_debug_shows_the_traceback(rundir: str) -> None:
    out = ctl("--rundir", rundir, "--debug", "listport")
    assert out.returncode == 3
    assert "Traceback" in out.stderr and "Unreachable" in out.stderr
    assert out.stderr.splitlines()[-1].startswith("etherws-ctl: no supervisor: ")


USAGE = [
    [], ["bogus"], ["delport"], ["delport", "0"], ["delport", "x y"], ["delport", "1.5"],
    ["delport", "-lan"],
    ["delport", "1", "2"], ["restartport", "-3"], ["setport", "1"],
    ["setport", "1", "--shut", "2"], ["setport", "1", "--shut", "yes"], ["setif", "1"],
    ["setport", "1", "--vlan", "4095"], ["setport", "1", "--vlan", "10", "--trunk", "20"],
    ["setport", "1", "--trunk", "0"], ["setport", "1", "--trunk", "x"],
    ["setport", "1", "--storm", "-1"], ["setport", "1", "--rate", "fast"],
    ["setport", "1", "--native", "0"],
    ["setif", "1", "--mtu", "0"], ["setif", "1", "--mtu", "big"], ["setif", "--mtu", "1500"],
    ["addport"], ["addport", "tap"], ["addport", "bridge", "br0"], ["flushfdb", "0"],
    ["--timeout", "0", "listport"], ["--timeout", "soon", "listport"],
    ["--rundir", "/tmp", "--ctl", "ipc:///tmp/x", "listport"],
    ["--ctl", "tcp://127.0.0.1:7000", "listport"],
    ["--ctl", "http://example.net/", "listport"],
    ["--ctl-key", "k", "--ctl-server-key", "s", "listport"],
    ["--ctl", "tcp://127.0.0.1:7000", "--ctl-key", "k", "listport"],
]


@pytest.mark.parametrize("argv", USAGE, ids=[" ".join(a) or "(nothing)" for a in USAGE])
def test_usage_errors(fake: FakeSupervisor, rundir: str, argv: list[str]) -> None:
    args = argv if any(a in ("--rundir", "--ctl") for a in argv) else ["--rundir", rundir, *argv]
    out = ctl(*args)
    assert (out.returncode, out.stdout) == (2, "")
    assert "Traceback" not in out.stderr
    assert out.stderr.splitlines()[-1].startswith("etherws-ctl")
    assert fake.calls == []


def test_tcp_needs_curve_keys() -> None:
    out = ctl("--ctl", "tcp://127.0.0.1:7000", "listport")
    assert (out.returncode, out.stdout) == (2, "")
    assert one_line(out.stderr) == \
        "etherws-ctl: tcp:// control needs --ctl-key and --ctl-server-key"


def test_help_and_version() -> None:
    out = ctl("--help")
    assert out.returncode == 0 and "listport" in out.stdout and "exit status" in out.stdout
    out = ctl("addport", "--help")
    assert out.returncode == 0 and "netdev" in out.stdout
    out = ctl("--version")
    assert out.returncode == 0 and out.stdout.startswith("etherws-ctl ")


# --- not root ----------------------------------------------------------------------------------
@pytest.fixture
def root_rundir() -> Iterator[str]:
    """A 0700 root-owned run directory whose parent everyone may traverse.

    pytest's tmp_path lives under a 0700 directory, which would deny access one level
    too early; this one sits in a fresh 0755 directory under /tmp, removed afterwards.
    Only root can make it and drop privileges: the tests using it are system tests.
    """
    base = tempfile.mkdtemp(prefix="etherws-ctl-test-", dir="/tmp")
    try:
        os.chmod(base, 0o755)
        run = os.path.join(base, "run")
        os.mkdir(run, 0o700)
        yield run
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.system
def test_not_root_on_a_private_rundir(root_rundir: str,
                                      serve: Callable[..., FakeSupervisor]) -> None:
    sup = serve(results=RESULTS, at=RunDir(root_rundir).ctl_endpoint)
    started = time.monotonic()
    out = ctl("--rundir", root_rundir, "listport", prefix=NOBODY)
    assert time.monotonic() - started < STARTUP_S
    assert (out.returncode, out.stdout) == (3, "")
    assert one_line(out.stderr) == (
        f"etherws-ctl: permission denied on {root_rundir} (etherws-ctl must run as root)")
    assert sup.calls == []


@pytest.mark.system
def test_not_root_on_a_private_socket(root_rundir: str,
                                      serve: Callable[..., FakeSupervisor]) -> None:
    # The directory open to all, the socket file root's alone: ZeroMQ would hide the
    # EACCES and wait for the timeout, the client must not.
    os.chmod(root_rundir, 0o755)
    serve(results=RESULTS, at=RunDir(root_rundir).ctl_endpoint)
    os.chmod(RunDir(root_rundir).ctl_sock, 0o600)
    out = ctl("--rundir", root_rundir, "listport", prefix=NOBODY)
    assert (out.returncode, out.stdout) == (3, "")
    assert one_line(out.stderr) == (f"etherws-ctl: permission denied on "
                                    f"{RunDir(root_rundir).ctl_sock} "
                                    f"(etherws-ctl must run as root)")


# --- addport client: secrets, prompt, environment --------------------------------------
def ctl_env(*args: str, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess:
    """``ctl`` with exactly these proxy variables in its environment and ``stdin``."""
    clean = {k: v for k, v in ENV.items() if k.lower() not in
             ("http_proxy", "https_proxy", "no_proxy")}
    return support.run(sys.executable, "-m", "etherws.ctl.cli", *args, check=False, timeout_s=30,
                       cwd=REPO, env={**clean, **env}, input=stdin)


def test_addport_client_sends_options_secrets_and_the_callers_proxy_environment(
        fake: FakeSupervisor, rundir: str) -> None:
    out = ctl_env("--rundir", rundir, "--json", "addport", "client", "--user", "alice",
                  "--passwd", "pw", "--cacerts", "ca.pem", "--insecure", "--retry",
                  "--proxy", "http://p:3128", "wss://gw.example/ws",
                  env={"HTTPS_PROXY": "http://up:1", "https_proxy": "http://low:2",
                       "no_proxy": ".lan"})
    assert out.returncode == 0, out.stderr
    assert fake.calls == [("addPort", {
        "type": "client", "target": "wss://gw.example/ws", "user": "alice", "passwd": "pw",
        "cacerts": os.path.join(REPO, "ca.pem"), "insecure": True, "retry": True,
        "proxy": "http://p:3128",
        "proxy_env": {"https_proxy": "http://low:2", "no_proxy": ".lan"}})]


def test_addport_client_reads_the_password_from_a_piped_stdin(
        fake: FakeSupervisor, rundir: str) -> None:
    out = ctl_env("--rundir", rundir, "addport", "client", "--user", "bob", "ws://h/",
                  env={}, stdin="pa:ss word\n")
    assert out.returncode == 0, out.stderr
    assert fake.calls == [("addPort", {"type": "client", "target": "ws://h/", "user": "bob",
                                       "passwd": "pa:ss word", "proxy_env": {}})]


def test_addport_client_without_a_password_anywhere_is_a_usage_error(
        fake: FakeSupervisor, rundir: str) -> None:
    out = ctl_env("--rundir", rundir, "addport", "client", "--user", "bob", "ws://h/", env={})
    assert out.returncode == 2
    assert "no terminal to ask on" in one_line(out.stderr)
    assert fake.calls == []


def test_addport_client_asks_for_the_password_on_the_terminal(
        fake: FakeSupervisor, rundir: str) -> None:
    import pty
    import select

    pid, fd = pty.fork()
    if pid == 0:  # the child: etherws-ctl on a terminal of its own
        os.chdir(REPO)
        os.execve(sys.executable, [sys.executable, "-m", "etherws.ctl.cli", "--rundir", rundir,
                                   "addport", "client", "--user", "alice", "ws://h/"], ENV)
    seen = b""

    def read_until(marker: bytes) -> None:
        nonlocal seen
        end = time.monotonic() + 10 * SCALE
        while marker not in seen:
            assert time.monotonic() < end, f"no {marker!r} from etherws-ctl: {seen!r}"
            if select.select([fd], [], [], 0.5)[0]:
                try:
                    seen += os.read(fd, 1024)
                except OSError:  # EIO: the child closed the terminal
                    break
    status = None
    try:
        read_until(b"password for alice: ")
        os.write(fd, b"s3cret on a tty\n")
        read_until(b"PORT")  # the table of the new port
    finally:
        end = time.monotonic() + 10 * SCALE
        while status is None:
            done, code = os.waitpid(pid, os.WNOHANG)
            if done:
                status = code
            elif time.monotonic() > end:
                os.kill(pid, 9)  # ours, by pid: a ctl stuck at the prompt
                status = os.waitpid(pid, 0)[1]
            else:
                time.sleep(0.05)  # waiting on a child's exit: no descriptor to poll
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, seen
    assert b"s3cret" not in seen  # getpass does not echo
    assert fake.calls[0][1]["passwd"] == "s3cret on a tty"

"""Remote control over tcp:// is CURVE-only: allowed keys work, nothing else executes."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Iterator

import pytest
import zmq

from etherws import control
from tests.support import (
    PYTHON,
    free_port,
    link_exists,
    run,
    term_context,
    unique,
    wait_until,
)
from tests.system.harness import Switch


def keygen(base: str) -> None:
    res = run(PYTHON, "-m", "etherws.ctl.cli", "keygen", base, check=False)
    assert res.returncode == 0, res.stderr
    assert os.path.exists(base + ".key") and os.path.exists(base + ".key_secret")
    assert os.stat(base + ".key_secret").st_mode & 0o077 == 0


@pytest.fixture
def remote(tmp_path, rundir) -> Iterator[tuple[Switch, str, str]]:
    keys = tmp_path / "keys"
    clients = tmp_path / "clients"
    keys.mkdir()
    clients.mkdir()
    keygen(str(keys / "server"))
    keygen(str(keys / "admin"))
    keygen(str(keys / "stranger"))
    os.link(keys / "admin.key", clients / "admin.key")
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    sw = Switch(rundir, tmp_path / "switch.log",
                ["--ctl", endpoint, "--ctl-secret-key", str(keys / "server.key_secret"),
                 "--ctl-clients", str(clients)])
    try:
        yield sw, endpoint, str(keys)
    finally:
        sw.close()


def remote_ctl(endpoint: str, keys: str, who: str, *args: str):
    return run(PYTHON, "-m", "etherws.ctl.cli", "--ctl", endpoint,
               "--ctl-key", f"{keys}/{who}.key_secret",
               "--ctl-server-key", f"{keys}/server.key", "--timeout", "2", *args,
               check=False)


def test_allowed_key_controls_the_switch(remote) -> None:
    sw, endpoint, keys = remote
    tap = unique("etwt")
    sw.taps.append(tap)
    res = remote_ctl(endpoint, keys, "admin", "--json", "addport", "tap", tap)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["entries"][0]["target"] == tap
    assert link_exists(tap)
    assert [e["target"] for e in sw.entries("listport")] == [tap]


def test_unknown_key_gets_nothing_executed(remote) -> None:
    sw, endpoint, keys = remote
    tap = unique("etwt")
    sw.taps.append(tap)
    res = remote_ctl(endpoint, keys, "stranger", "addport", "tap", tap)
    assert res.returncode == 3 and res.stderr.count("\n") == 1
    assert not link_exists(tap) and sw.entries("listport") == []


def test_plain_text_client_gets_nothing_executed(remote) -> None:
    sw, endpoint, _ = remote
    tap = unique("etwt")
    sw.taps.append(tap)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        sock.send(control.encode_request("addPort", {"type": "tap", "target": tap}, "x1"))
        assert sock.poll(1500, zmq.POLLIN) == 0  # no reply: the handshake never completed
    finally:
        sock.close()
        term_context(ctx, "the plain-text client")
    assert not link_exists(tap) and sw.entries("listport") == []


def test_tcp_without_keys_is_a_usage_error(remote) -> None:
    _, endpoint, _ = remote
    res = run(PYTHON, "-m", "etherws.ctl.cli", "--ctl", endpoint, "listport", check=False)
    assert res.returncode == 2 and "--ctl-key" in res.stderr.splitlines()[-1]


def test_remote_control_refuses_to_start_without_keys(rundir) -> None:
    res = run(PYTHON, "-m", "etherws.supervisor", "start", "--foreground", "--rundir", rundir,
              "--ctl", f"tcp://127.0.0.1:{free_port()}", check=False)
    assert res.returncode == 2 and "CURVE" in res.stderr


def test_client_keys_are_re_read_without_a_restart(remote, tmp_path) -> None:
    sw, endpoint, keys = remote
    res = remote_ctl(endpoint, keys, "stranger", "listport")
    assert res.returncode == 3 and "key not accepted" in res.stderr
    os.link(f"{keys}/stranger.key", tmp_path / "clients" / "stranger.key")
    wait_until(lambda: remote_ctl(endpoint, keys, "stranger", "listport").returncode == 0,
               15, "the new key to be accepted")
    os.unlink(tmp_path / "clients" / "admin.key")
    wait_until(lambda: remote_ctl(endpoint, keys, "admin", "listport").returncode == 3,
               15, "the removed key to be refused")
    assert "client keys re-read" in sw.log_text()


def test_the_audit_log_names_the_key_and_refusals_are_logged_once_a_minute(remote) -> None:
    sw, endpoint, keys = remote
    res = remote_ctl(endpoint, keys, "admin", "flushfdb")
    assert res.returncode == 0, res.stderr
    wait_until(lambda: "control (remote admin): flushFdb" in sw.log_text(), 5,
               "the audit line with the key's name")
    for _ in range(3):
        assert remote_ctl(endpoint, keys, "stranger", "listport").returncode == 3
    wait_until(lambda: "refused a connection from 127.0.0.1" in sw.log_text(), 5,
               "the refusal to be logged")
    refusals = [line for line in sw.log_text().splitlines()
                if "remote control: refused a connection" in line]
    assert len(refusals) == 1 and "unknown key" in refusals[0], refusals


def test_top_works_over_remote_control(remote) -> None:
    sw, endpoint, keys = remote
    tap = unique("etwt")
    sw.taps.append(tap)
    sw.ctl("addport", "tap", tap)
    res = remote_ctl(endpoint, keys, "admin", "top", "--interval", "0.2", "--count", "2")
    assert res.returncode == 0, res.stderr
    tables = [t for t in res.stdout.split("\n\n") if t.strip()]
    assert len(tables) == 2 and all(tap in t for t in tables), res.stdout


def test_events_over_remote_control_need_an_allowed_key(remote) -> None:
    sw, endpoint, keys = remote
    res = remote_ctl(endpoint, keys, "stranger", "events", "--count", "1")
    assert res.returncode == 3 and "no event stream" in res.stderr
    tap = unique("etwt")
    sw.taps.append(tap)
    proc = subprocess.Popen(
        [PYTHON, "-m", "etherws.ctl.cli", "--ctl", endpoint, "--ctl-key",
         f"{keys}/admin.key_secret", "--ctl-server-key", f"{keys}/server.key",
         "--json", "events", "--count", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        hello = json.loads(proc.stdout.readline())  # greeted: subscribed and allowed
        assert hello["event"] == "hello"
        sw.ctl("addport", "tap", tap)
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        added = json.loads(out.splitlines()[0])
        assert (added["type"], added["event"], added["target"]) == ("port", "added", tap)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

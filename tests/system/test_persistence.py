"""A gateway that survives restarts: ports declared in the configuration file, adopted
after a crash, saved, reloaded, and named.

Every switch here is a real supervisor; hosts are namespaces behind veth pairs; TAPs,
bridges and namespaces are removed by their fixtures whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import PYTHON, SCALE, delete_link, free_port, run, unique, wait_until
from tests.system.harness import Switch, alive, bridge, host, sigkill

SUPERVISOR = [PYTHON, "-m", "etherws.supervisor"]


def ifindex(name: str) -> int:
    return int(json.loads(run("ip", "-j", "link", "show", "dev", name).stdout)[0]["ifindex"])


def link(name: str) -> dict[str, Any]:
    return dict(json.loads(run("ip", "-j", "addr", "show", "dev", name).stdout)[0])


def addresses(name: str) -> list[str]:
    return [f"{a['local']}/{a['prefixlen']}" for a in link(name)["addr_info"]
            if a.get("scope") == "global"]


def by_number(sw: Switch) -> dict[int, dict[str, Any]]:
    return {e["port"]: e for e in sw.entries("listport")}


@contextlib.contextmanager
def taps(*names: str) -> Iterator[None]:
    """TAP names a test's switch may create; deleted afterwards, however it ended."""
    try:
        yield
    finally:
        for name in names:
            delete_link(name)


def start(tmp_path: Path, rundir: str, config: Path, log: str = "switch.log",
          **kw: Any) -> Switch:
    return Switch(rundir, tmp_path / log, ["--config", str(config)], **kw)


def test_ports_from_the_file_come_back_after_kill_9(tmp_path: Path, rundir: str) -> None:
    """TAP (address, MTU, bridge), netdev and client from the file, with their numbers;
    kill -9 of the supervisor and a new start: same numbers, the TAP adopted (same
    ifindex, addresses, bridge), traffic back."""
    tap = unique("etwt")
    port = free_port()
    with taps(tap), host("203.0.113.1") as a, host("203.0.113.2") as b, \
            bridge(a.outer) as br:
        os.mkdir(tmp_path / "far", 0o700)
        far = Switch(str(tmp_path / "far"), tmp_path / "far.log", server=True,
                     extra=["--host", "127.0.0.1", "--port", str(port)])
        try:
            config = tmp_path / "etherws.toml"
            config.write_text(f'''# site A
[[ports]]
tap = "{tap}"
name = "lan"
address = ["198.51.100.1/24"]
mtu = 1400
bridge = "{br}"

[[ports]]
netdev = "{b.outer}"
number = 5

[[ports]]
client = "ws://127.0.0.1:{port}/"
name = "to-far"
''')
            sw = start(tmp_path, rundir, config)
            try:
                ports = by_number(sw)
                assert {n: (e["name"], e["type"]) for n, e in ports.items()} == {
                    1: ("lan", "tap"), 5: (None, "netdev"), 2: ("to-far", "client")}
                assert not any(e["unsaved"] for e in ports.values())
                for n in (1, 5, 2):
                    sw.wait_port(n, "up", timeout_s=20)
                before = ifindex(tap)
                assert addresses(tap) == ["198.51.100.1/24"]
                assert link(tap)["mtu"] == 1400 and link(tap)["master"] == br
                a.wait_ping(b.address, 15)

                workers = [p.pid for p in sw.descendants()]
                sigkill(sw.proc.pid)
                sw.proc.wait(timeout=10 * SCALE)
                wait_until(lambda: not any(alive(pid) for pid in workers), 10,
                           "the workers to follow their supervisor")
            finally:
                sw.close()
            assert ifindex(tap) == before  # a crash leaves the TAP as it was
            sw = start(tmp_path, rundir, config, "switch2.log")
            try:
                ports = by_number(sw)
                assert {n: e["name"] for n, e in ports.items()} == {
                    1: "lan", 5: None, 2: "to-far"}
                for n in (1, 5, 2):
                    sw.wait_port(n, "up", timeout_s=20)
                assert ifindex(tap) == before  # adopted, not recreated
                assert addresses(tap) == ["198.51.100.1/24"]
                assert link(tap)["mtu"] == 1400 and link(tap)["master"] == br
                a.wait_ping(b.address, 15)
            finally:
                sw.close()
            # declared in the file: the TAP stays when the switch stops, for the next start
            assert ifindex(tap) == before
        finally:
            far.close()


def test_save_then_stop_and_start_gives_the_same_ports(tmp_path: Path, rundir: str) -> None:
    tap, tap2 = unique("etwt"), unique("etwt")
    config = tmp_path / "conf" / "etherws.toml"
    config.parent.mkdir()
    config.write_text("# my gateway\nageout = 120  # two minutes\n")
    with taps(tap, tap2):
        sw = start(tmp_path, rundir, config)
        try:
            assert sw.json("addport", "tap", tap, "--name", "lan")["entries"][0]["port"] == 1
            sw.ctl("setif", "lan", "--address", "192.0.2.1/24", "--mtu", "1400")
            sw.ctl("addport", "tap", tap2)
            sw.ctl("setport", "2", "--shut", "1")
            url = f"ws://127.0.0.1:{free_port()}/x"
            sw.ctl("addport", "client", "--retry", "--name", "far", "--user", "alice",
                   "--passwd", "pw-Zq9", url)
            assert all(e["unsaved"] for e in sw.entries("listport"))
            assert sw.ctl("save").stdout.strip() == f"saved 3 ports to {config}"
            assert not any(e["unsaved"] for e in sw.entries("listport"))
            sw.ctl("setport", "lan", "--shut", "1")
            assert [e["unsaved"] for e in sw.entries("listport")] == [True, False, False]
            sw.ctl("setport", "lan", "--shut", "0")
            assert not any(e["unsaved"] for e in sw.entries("listport"))
        finally:
            sw.close()
        text = config.read_text()
        assert text.startswith("# my gateway\nageout = 120  # two minutes\n")
        assert "pw-Zq9" not in text
        assert stat.S_IMODE(config.stat().st_mode) == 0o600
        secret = config.parent / "etherws.port3.passwd"
        assert secret.read_text() == "pw-Zq9\n"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        saved = tomllib.loads(text)["ports"]
        assert saved[2]["passwd-file"] == str(secret) and saved[2]["user"] == "alice"

        sw = start(tmp_path, rundir, config, "switch2.log")
        try:
            ports = by_number(sw)
            assert {n: (e["name"], e["type"], e["target"], e["shut"])
                    for n, e in ports.items()} == {
                1: ("lan", "tap", tap, False), 2: (None, "tap", tap2, True),
                3: ("far", "client", url, False)}
            assert not any(e["unsaved"] for e in ports.values())
            assert addresses(tap) == ["192.0.2.1/24"] and link(tap)["mtu"] == 1400
        finally:
            sw.close()


def _ping(ns: str, address: str, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen(["ip", "netns", "exec", ns, "ping", "-n", "-q", "-c", str(count),
                             "-i", "0.1", "-W", "2", address],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_reload_touches_only_what_changed(tmp_path: Path, rundir: str) -> None:
    tap, spare = unique("etwt"), unique("etwt")
    with taps(tap, spare), host("203.0.113.1") as a, host("203.0.113.2") as b:
        with bridge(a.outer) as br:
            config = tmp_path / "etherws.toml"
            base = f'''[[ports]]
tap = "{tap}"
bridge = "{br}"

[[ports]]
netdev = "{b.outer}"

[[ports]]
tap = "{spare}"
name = "spare"
mtu = 1500
'''
            config.write_text(base)
            sw = start(tmp_path, rundir, config)
            try:
                for n in (1, 2, 3):
                    sw.wait_port(n, "up")
                a.wait_ping(b.address, 15)
                before = by_number(sw)
                pinger = _ping(a.ns, b.address, 40)
                try:
                    wait_until(lambda: by_number(sw)[1]["rx"] > before[1]["rx"] + 5, 10,
                               "the ping to flow")
                    config.write_text(base.replace("mtu = 1500", "mtu = 1300\nshut = true"))
                    out = run(*SUPERVISOR, "reload", "--rundir", rundir)
                    assert out.stdout.splitlines() == ["changed port 3 (spare): mtu, shut"]
                    mid = by_number(sw)
                finally:
                    output, _ = pinger.communicate(timeout=30 * SCALE)
                assert " 0% packet loss" in output, output
                after = by_number(sw)
                for n in (1, 2):
                    assert after[n]["pid"] == before[n]["pid"]
                    assert after[n]["restarts"] == 0
                    assert before[n]["rx"] < mid[n]["rx"] <= after[n]["rx"]  # not reset
                assert after[3]["pid"] == before[3]["pid"] and after[3]["shut"]
                assert link(spare)["mtu"] == 1300

                # add one, remove one
                config.write_text(base.split("[[ports]]\ntap = \"" + spare)[0]
                                  + f'[[ports]]\nnetdev = "{a.outer}"\nnumber = 7\n')
                out = run(*SUPERVISOR, "reload", "--rundir", rundir)
                assert out.stdout.splitlines() == ["removed port 3 (spare)",
                                                   f"added port 7 ({a.outer})"]
                assert sorted(by_number(sw)) == [1, 2, 7]
                assert not os.path.exists(f"/sys/class/net/{spare}")

                # a broken file is refused and nothing changes
                state = {n: (e["pid"], e["shut"]) for n, e in by_number(sw).items()}
                for broken, words in [("[[ports]]\ntap = 3\n", "'tap' must be a string"),
                                      ("[[ports]\n", "etherws.toml"),
                                      ("colour = 'red'\n", "unknown key 'colour'")]:
                    config.write_text(broken)
                    out = run(*SUPERVISOR, "reload", "--rundir", rundir, check=False)
                    assert out.returncode == 1 and out.stdout == ""
                    assert len(out.stderr.splitlines()) == 1 and words in out.stderr
                    assert {n: (e["pid"], e["shut"]) for n, e in by_number(sw).items()} \
                        == state
            finally:
                sw.close()


def test_sighup_reloads(tmp_path: Path, rundir: str) -> None:
    tap = unique("etwt")
    config = tmp_path / "etherws.toml"
    config.write_text("")
    with taps(tap):
        sw = start(tmp_path, rundir, config)
        try:
            assert sw.entries("listport") == []
            config.write_text(f'[[ports]]\ntap = "{tap}"\nname = "lan"\n')
            sw.proc.send_signal(1)  # SIGHUP
            entry = wait_until(lambda: by_number(sw).get(1), 10, "SIGHUP to add the port")
            assert entry["name"] == "lan" and not entry["unsaved"]
        finally:
            sw.close()


def test_ports_are_named_in_every_port_command(tmp_path: Path, switch: Switch) -> None:
    tap, other = unique("etwt"), unique("etwt")
    with taps(tap, other):
        switch.taps += [tap, other]
        assert switch.json("addport", "tap", tap, "--name", "lan")["entries"][0]["name"] \
            == "lan"
        res = switch.ctl("addport", "tap", other, "--name", "lan", check=False)
        assert res.returncode == 1 and "[duplicate-name]" in res.stderr
        assert switch.json("addport", "tap", other)["entries"][0]["port"] == 2
        switch.ctl("setport", "lan", "--shut", "1")
        assert switch.port(1)["shut"]
        switch.ctl("setif", "lan", "--mtu", "1400")
        assert link(tap)["mtu"] == 1400
        switch.ctl("setif", other, "--mtu", "1300")  # an interface port by its interface
        assert link(other)["mtu"] == 1300
        pid = switch.port(1)["pid"]
        assert switch.json("restartport", "lan")["entries"][0]["pid"] != pid
        switch.ctl("flushfdb", "lan")
        switch.ctl("delport", "lan")
        assert [e["port"] for e in switch.entries("listport")] == [2]
        for command in (["delport", "lan"], ["setport", "nope", "--shut", "1"],
                        ["setif", "nope", "--mtu", "1400"], ["restartport", "nope"],
                        ["flushfdb", "nope"]):
            res = switch.ctl(*command, check=False)
            assert res.returncode == 1 and "[no-such-port]" in res.stderr, command
            assert res.stderr.strip().endswith("[no-such-port]")


def test_a_failed_addport_does_not_use_up_a_number(switch: Switch) -> None:
    url = f"ws://127.0.0.1:{free_port()}/"  # nobody listens
    res = switch.ctl("addport", "client", url, check=False, timeout_s=60)
    assert res.returncode == 1 and "[connect-failed]" in res.stderr
    tap = unique("etwt")
    with taps(tap):
        assert switch.add("tap", tap) == 1


@pytest.mark.parametrize("text, words", [
    ('[[ports]]\ntap = "etwbad0"\ncolour = "red"\n',
     ["port #1 (etwbad0)", "unknown key 'colour'"]),
    ('[[ports]]\ntap = "etwbad0"\nname = "x"\n[[ports]]\ntap = "etwbad1"\nname = "x"\n',
     ["'name' 'x' is also port 1's"]),
    ('[[ports]]\ntap = "etwbad0"\nnumber = 2\n[[ports]]\ntap = "etwbad1"\nnumber = 2\n',
     ["'number' 2"]),
    ('[[ports]]\nclient = "wss://h/"\nuser = "u"\npasswd-file = "missing.pass"\n',
     ["port 1 (wss://h/)", "cannot read the password file", "missing.pass"]),
    ('[[ports]]\ntap = "etwbad0"\nmtu = "big"\n', ["'mtu' must be an integer"]),
])
def test_a_bad_file_stops_start_with_one_line(tmp_path: Path, text: str,
                                              words: list[str]) -> None:
    config = tmp_path / "etherws.toml"
    config.write_text(text)
    rundir = tmp_path / "run"
    res = run(*SUPERVISOR, "start", "--rundir", str(rundir), "--no-server", "--logfile",
              str(tmp_path / "log"), "--config", str(config), check=False)
    assert res.returncode == 2, res
    assert res.stdout == "" and len(res.stderr.splitlines()) == 1
    assert res.stderr.startswith(f"etherws-supervisor: {config}")
    for word in words:
        assert word in res.stderr, res.stderr
    assert not rundir.exists()  # nothing started
    assert not os.path.exists("/sys/class/net/etwbad0")


def test_start_names_the_run_directory_it_used(tmp_path: Path) -> None:
    rundir = tmp_path / "run-from-file"
    config = tmp_path / "etherws.toml"
    config.write_text(f'rundir = "{rundir}"\nno-server = true\n')
    res = run(*SUPERVISOR, "start", "--config", str(config), "--logfile",
              str(tmp_path / "log"), check=False)
    try:
        assert res.returncode == 0, res.stderr
        assert f"run directory {rundir}, configuration {config})" in res.stdout
    finally:
        stop = run(*SUPERVISOR, "stop", "--rundir", str(rundir), check=False)
    assert stop.returncode == 0, stop.stderr

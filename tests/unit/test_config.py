"""Supervisor configuration from TOML and the command line."""

from __future__ import annotations

import pytest

from etherws.config import Config, ConfigError, build, parse_toml


def test_defaults() -> None:
    cfg = build({}, {})
    assert cfg == Config()
    assert cfg.rundir == "/run/etherws" and cfg.ageout == 300 and cfg.fdb_size == 8192
    assert cfg.fdb_per_port == 1024


def test_file_values_and_command_line_wins() -> None:
    file_values = parse_toml('ageout = 60\nfdb-size = 512\nrundir = "/run/a"\n')
    cfg = build(file_values, {"ageout": 30.0, "fdb_size": None, "debug": False})
    assert (cfg.ageout, cfg.fdb_size, cfg.rundir) == (30.0, 512, "/run/a")
    assert build({}, {"fdb_size": 100}).fdb_per_port == 100


@pytest.mark.parametrize("text, message", [
    ("agout = 3", "unknown key 'agout'"),
    ("ageout = 'x'", "wrong type"),
    ("debug = 1", "wrong type"),
    ("fdb-size = 1.5", "wrong type"),
    ("ageout = ", "configuration file"),
])
def test_bad_files(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_toml(text)


@pytest.mark.parametrize("values, message", [
    ({"fdb_size": 8}, "--fdb-size"),
    ({"fdb_size": 10_000_000}, "--fdb-size"),
    ({"ageout": 0.5}, "--ageout"),
    ({"rundir": "run"}, "absolute"),
    ({"logfile": "/a", "syslog": True}, "choose one"),
    ({"ctl": "tcp://127.0.0.1:5555"}, "CURVE"),
    ({"ctl": "tcp://127.0.0.1:5555", "ctl_clients": "/k"}, "CURVE"),
    ({"ctl_secret_key": "/k", "ctl_clients": "/k"}, "go with --ctl tcp"),
    ({"ctl": "inproc://x"}, "tcp://ADDRESS:PORT"),
    ({"ctl": "ipc:///run/other.sock"}, "always RUNDIR/ctl.sock"),
    ({"rundir": "/" + "r" * 100}, "too long"),
])
def test_bad_values(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build({}, values)


def test_remote_control_needs_both_keys() -> None:
    cfg = build({}, {"ctl": "tcp://127.0.0.1:5555", "ctl_secret_key": "/s.key_secret",
                     "ctl_clients": "/clients"})
    assert cfg.ctl == "tcp://127.0.0.1:5555"

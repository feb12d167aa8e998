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
    ({"port": 0}, "--port"),
    ({"port": 65536}, "--port"),
    ({"sslkey": "/k.pem"}, "go together"),
    ({"sslcert": "/c.pem"}, "go together"),
    ({"path": "ws"}, "--path"),
    ({"path": "/a b"}, "--path"),
    ({"path": "/\u00e9"}, "--path"),
    ({"max_peers": 0}, "--max-peers"),
    ({"max_peers": 5000}, "--max-peers"),
    ({"ping_interval": 0.0}, "--ping-interval"),
    ({"ping_timeout": 7200.0}, "--ping-timeout"),
    ({"origin": ["https://ok.example", "bad origin"]}, "--origin"),
    ({"origin": [""]}, "--origin"),
])
def test_bad_values(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build({}, values)


def test_remote_control_needs_both_keys() -> None:
    cfg = build({}, {"ctl": "tcp://127.0.0.1:5555", "ctl_secret_key": "/s.key_secret",
                     "ctl_clients": "/clients"})
    assert cfg.ctl == "tcp://127.0.0.1:5555"


def test_server_defaults_and_the_tls_port() -> None:
    cfg = build({}, {})
    assert (cfg.no_server, cfg.host, cfg.server_port, cfg.path) == (False, "", 80, "/")
    assert (cfg.max_peers, cfg.origin, cfg.ping_interval, cfg.ping_timeout) == (64, (), 20, 20)
    tls = build({}, {"sslkey": "/k.pem", "sslcert": "/c.pem"})
    assert tls.tls and tls.server_port == 443
    assert build({}, {"sslkey": "/k", "sslcert": "/c", "port": 8443}).server_port == 8443


def test_server_options_from_file_and_command_line() -> None:
    file_values = parse_toml('port = 8080\npath = "/ws"\nmax-peers = 3\n'
                             'origin = ["https://a.example", "https://b.example"]\n'
                             'htpasswd = "/etc/etherws.htpasswd"\n')
    cfg = build(file_values, {"port": 9090, "origin": ["https://c.example"]})
    assert (cfg.server_port, cfg.path, cfg.max_peers) == (9090, "/ws", 3)
    assert cfg.origin == ("https://c.example",) and cfg.htpasswd == "/etc/etherws.htpasswd"
    assert build(file_values, {}).origin == ("https://a.example", "https://b.example")


@pytest.mark.parametrize("text", ["origin = [1]", "origin = 'x'", "port = true",
                                  "max-peers = 1.5"])
def test_bad_server_values_in_files(text: str) -> None:
    with pytest.raises(ConfigError, match="configuration file"):
        parse_toml(text)

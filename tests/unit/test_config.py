"""Supervisor configuration from TOML and the command line."""

from __future__ import annotations

import argparse
import inspect
from dataclasses import fields
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etherws import config
from etherws.broker.fdb import Fdb
from etherws.config import BY_ATTR, Config, ConfigError, build, parse_toml
from etherws.keepalive import Keepalive


def test_defaults() -> None:
    cfg = build({}, {})
    assert cfg == Config()
    assert cfg.rundir == "/run/etherws" and cfg.ageout_s == 300 and cfg.fdb_size == 8192
    assert cfg.fdb_per_port == 1024


def test_file_values_and_command_line_wins() -> None:
    file_values = parse_toml('ageout = 60\nfdb-size = 512\nrundir = "/run/a"\n')
    cfg = build(file_values, {"ageout_s": 30.0, "fdb_size": None, "debug": False})
    assert (cfg.ageout_s, cfg.fdb_size, cfg.rundir) == (30.0, 512, "/run/a")
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
    ({"ageout_s": 0.5}, "--ageout"),
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
    ({"ping_interval_s": 0.0}, "--ping-interval"),
    ({"ping_timeout_s": 7200.0}, "--ping-timeout"),
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
    assert (cfg.max_peers, cfg.origin, cfg.ping_interval_s, cfg.ping_timeout_s) == (64, (), 20, 20)
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


# --- one table for every option -----------------------------------------------------------
def test_config_has_one_field_per_option_with_the_same_default() -> None:
    assert [f.name for f in fields(Config)] == config.option_names()
    assert {f.name: f.default for f in fields(Config)} == {
        o.attr: o.default for o in config.OPTIONS}


def test_durations_say_their_unit() -> None:
    assert {o.attr for o in config.OPTIONS if o.kind is float} == {
        "ageout_s", "move_hold_s", "ping_interval_s", "ping_timeout_s"}


SAMPLES: dict[str, Any] = {
    "foreground": True, "rundir": "/run/etw-x", "ageout_s": 12.5, "move_hold_s": 0.5, "fdb_size": 64,
    "no_port_security": True, "no_loop_guard": True, "metrics": "127.0.0.1:9100",
    "ctl": "tcp://127.0.0.1:7000", "ctl_secret_key": "/k/s.key_secret",
    "ctl_clients": "/k/clients", "no_server": True, "no_zygote": True, "isolate": True,
    "no_offload": True, "host": "127.0.0.1", "port": 8443,
    "path": "/ws", "sslkey": "/k/key.pem", "sslcert": "/k/cert.pem",
    "htpasswd": "/k/htpasswd", "token_key": "/k/token.key", "max_peers": 3, "max_message": 2000,
    "origin": ("https://a.example", "https://b"),
    "ping_interval_s": 0.75, "ping_timeout_s": 3600.0, "logfile": "/var/log/e.log",
    "logconf": None, "syslog": False, "debug": True,
}


def test_every_option_has_a_sample() -> None:
    assert set(SAMPLES) == set(config.option_names())


def test_parse_of_forward_is_the_same_config_for_every_option() -> None:
    cfg = build({}, SAMPLES)
    assert all(getattr(cfg, k) == v for k, v in SAMPLES.items())
    assert config.parse_args(config.to_args(cfg)) == cfg


@pytest.mark.parametrize("attr", sorted(SAMPLES))
def test_each_option_alone_survives_the_round_trip(attr: str) -> None:
    values = {attr: SAMPLES[attr]}
    if attr in ("sslkey", "sslcert"):
        values = {"sslkey": SAMPLES["sslkey"], "sslcert": SAMPLES["sslcert"]}
    if attr in ("ctl", "ctl_secret_key", "ctl_clients"):
        values = {k: SAMPLES[k] for k in ("ctl", "ctl_secret_key", "ctl_clients")}
    cfg = build({}, values)
    assert config.parse_args(config.to_args(cfg)) == cfg


@given(st.floats(min_value=config.MIN_PING_S, max_value=config.MAX_PING_S),
       st.floats(min_value=config.MIN_AGEOUT_S, max_value=config.MAX_AGEOUT_S))
def test_floats_survive_the_round_trip_exactly(ping: float, ageout: float) -> None:
    cfg = build({}, {"ping_interval_s": ping, "ageout_s": ageout})
    assert config.parse_args(config.to_args(cfg)) == cfg


def test_to_args_against_a_base_gives_only_the_differences() -> None:
    base = Config(ageout_s=60.0, debug=True)
    cfg = Config(ageout_s=300.0, debug=True, fdb_size=64)
    assert config.to_args(cfg, base) == ["--ageout", "300.0", "--fdb-size", "64"]


def test_relative_paths_in_a_file_are_relative_to_it() -> None:
    values = parse_toml('logfile = "log/etherws.log"\nhtpasswd = "../users"\n'
                        'sslcert = "/abs/c.pem"\n', "/etc/etherws")
    assert values == {"logfile": "/etc/etherws/log/etherws.log",
                      "htpasswd": "/etc/users", "sslcert": "/abs/c.pem"}


def test_child_args_come_from_the_table() -> None:
    cfg = build({}, {"ageout_s": 60.0, "logfile": "/l", "debug": True,
                     "ping_interval_s": 5.0, "origin": ["https://a"]})
    assert config.child_args(cfg, "broker") == [
        "--ageout", "60.0", "--move-hold", "2.0", "--logfile", "/l", "--debug"]
    peer = config.child_args(cfg, "peer", log=False, htpasswd="/run/x/users")
    assert peer == ["--path", "/", "--htpasswd", "/run/x/users", "--max-message", "65535",
                    "--origin", "https://a",
                    "--ping-interval", "5.0", "--ping-timeout", "20.0"]


def test_a_child_checks_its_values_like_the_supervisor() -> None:
    parser = argparse.ArgumentParser()
    config.add_child_arguments(parser, "peer")
    args = parser.parse_args(["--ping-timeout", "0"])
    with pytest.raises(ConfigError, match="--ping-timeout must be between 0.5 and 3600 s"):
        config.check_child(args, "peer")
    config.check_child(parser.parse_args([]), "peer")  # the defaults are fine


CHILDREN = sorted({child for o in config.OPTIONS for child in o.children})


def _child_parser(child: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(exit_on_error=False)
    config.add_child_arguments(parser, child)
    config.add_log_arguments(parser)
    return parser


@pytest.mark.parametrize("child", CHILDREN)
@pytest.mark.parametrize("values", [{}, SAMPLES], ids=["defaults", "samples"])
def test_a_child_parses_what_it_is_given_back_into_the_config(child: str, values: dict) -> None:
    cfg = build({}, values)
    args = _child_parser(child).parse_args(config.child_args(cfg, child))
    mine = [o for o in config.OPTIONS if child in o.children]
    assert mine
    got = {o.attr: getattr(args, o.attr) for o in mine}
    assert {k: tuple(v) if isinstance(v, list) else v for k, v in got.items()} == {
        o.attr: getattr(cfg, o.attr) for o in mine}
    config.check_child(args, child)


@pytest.mark.parametrize("opt", [o for o in config.OPTIONS if o.path], ids=lambda o: o.key)
def test_every_path_in_a_file_is_relative_to_it(opt: config.Option) -> None:
    assert parse_toml(f'{opt.key} = "sub/f"\n', "/etc/etherws") == {
        opt.attr: "/etc/etherws/sub/f"}
    assert parse_toml(f'{opt.key} = "/abs/f"\n', "/etc/etherws") == {opt.attr: "/abs/f"}


def test_the_paths_are_the_file_and_directory_options() -> None:
    assert {o.attr for o in config.OPTIONS if o.path} == {
        "rundir", "logfile", "logconf", "sslkey", "sslcert", "htpasswd", "ctl_secret_key",
        "ctl_clients", "token_key"}


@pytest.mark.parametrize("argv, message", [
    (["--path", "ws"], "--path must start with '/'"),
    (["--path", "/a b"], "--path"),
    (["--path", "/\u00e9"], "--path"),
    (["--origin", "https://ok.example", "--origin", "bad origin"], "--origin 'bad origin'"),
    (["--origin", ""], "--origin"),
    (["--ping-interval", "7200"], "--ping-interval"),
])
def test_the_peer_refuses_what_the_supervisor_refuses(argv: list[str], message: str) -> None:
    values = vars(_child_parser("peer").parse_args(argv))
    with pytest.raises(ConfigError, match=message):
        build({}, {k: v for k, v in values.items() if v != []})
    with pytest.raises(ConfigError, match=message):
        config.check_child(_child_parser("peer").parse_args(argv), "peer")


def test_tls_files_go_together_for_everyone() -> None:
    config.check_tls_pair(None, None)
    config.check_tls_pair("/k", "/c")
    for pair in (("/k", None), (None, "/c")):
        with pytest.raises(ConfigError, match="--sslkey and --sslcert go together"):
            config.check_tls_pair(*pair)


def test_one_constant_per_default() -> None:
    fdb = inspect.signature(Fdb).parameters
    assert fdb["ageout_s"].default == config.DEFAULT_AGEOUT_S == BY_ATTR["ageout_s"].default
    assert fdb["per_port_max"].default == config.FDB_PER_PORT == Config().fdb_per_port
    keepalive = inspect.signature(Keepalive).parameters
    assert keepalive["interval_s"].default == config.DEFAULT_PING_S
    assert keepalive["timeout_s"].default == config.DEFAULT_PING_S
    assert BY_ATTR["ping_interval_s"].default == BY_ATTR["ping_timeout_s"].default \
        == config.DEFAULT_PING_S


@pytest.mark.parametrize("value, address", [
    ("9100", ("127.0.0.1", 9100)), ("0.0.0.0:9100", ("0.0.0.0", 9100)),
    ("[::1]:9100", ("::1", 9100)),
])
def test_metrics_address(value: str, address: tuple[str, int]) -> None:
    assert config.metrics_address(value) == address


@pytest.mark.parametrize("value", ["", "x", ":9100", "0.0.0.0:0", "h:70000", "h:"])
def test_bad_metrics_addresses(value: str) -> None:
    with pytest.raises(ConfigError, match="--metrics takes"):
        build({}, {"metrics": value})

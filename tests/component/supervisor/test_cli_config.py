"""etherws-supervisor start's configuration file: the default path, and how its ports
are checked before anything starts."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from etherws import config
from etherws.config import ConfigError
from etherws.runtime import configfile, logsetup
from etherws.supervisor import cli
from tests import support


def _args(*argv: str) -> argparse.Namespace:
    return cli._parser().parse_args(["start", *argv])


def test_the_default_file_is_read_when_it_exists(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    default = tmp_path / "etherws.toml"
    monkeypatch.setattr(configfile, "DEFAULT_PATH", str(default))
    args = _args()
    assert cli._load_config(args).ageout_s == 300
    assert args.config is None
    default.write_text("ageout = 60\n")
    args = _args()
    assert cli._load_config(args).ageout_s == 60
    assert args.config == str(default)


def test_config_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "e.toml").write_text("")
    monkeypatch.chdir(tmp_path)
    args = _args("--config", "e.toml")
    cli._load_config(args)
    assert args.config == str(tmp_path / "e.toml")


def test_a_missing_proxy_auth_file_is_named(tmp_path: Path) -> None:
    conf = tmp_path / "e.toml"
    conf.write_text('[[ports]]\nclient = "wss://h/"\nname = "far"\n'
                    'proxy = "http://px:3128"\nproxy-auth-file = "px.auth"\n')
    with pytest.raises(ConfigError) as err:
        cli._load_config(_args("--config", str(conf)))
    assert str(err.value) == (f"{conf}: port 1 (far): cannot read the proxy-auth file "
                              f"{tmp_path}/px.auth: No such file or directory")


def test_a_daemon_option_error_names_the_file(tmp_path: Path) -> None:
    conf = tmp_path / "e.toml"
    conf.write_text("colour = 1\n")
    with pytest.raises(ConfigError) as err:
        cli._load_config(_args("--config", str(conf)))
    assert str(err.value) == f"{conf}: unknown key 'colour'"


def test_a_detached_start_without_syslog_logs_to_a_file(tmp_path: Path) -> None:
    log = tmp_path / "etherws.log"
    rundir = str(tmp_path / "run")
    # a process of its own, as a user runs it (the switch it starts is not its child for
    # long), with the places it looks at moved into tmp_path
    code = ("import sys; from etherws.supervisor import cli; from etherws.runtime import "
            f"logsetup; cli.DEFAULT_LOGFILE = {str(log)!r}; logsetup.SYSLOG_SOCKET = "
            f"{str(tmp_path / 'no-dev-log')!r}; sys.exit(cli.main(sys.argv[1:]))")
    res = support.run(support.PYTHON, "-c", code, "start", "--rundir", rundir, "--no-server",
                      check=False)
    try:
        assert res.returncode == 0, res.stderr
        assert f"no syslog socket at {tmp_path}/no-dev-log: logging to {log}" in res.stderr
        support.wait_until(lambda: "supervisor started" in log.read_text(), 10,
                           "the supervisor's first log line")
    finally:
        stop = support.run(support.PYTHON, "-m", "etherws.supervisor", "stop", "--rundir",
                           rundir, check=False)
        assert stop.returncode == 0, stop.stderr


def test_syslog_without_a_socket_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(logsetup, "SYSLOG_SOCKET", str(tmp_path / "no-dev-log"))
    assert cli.main(["start", "--rundir", str(tmp_path / "run"), "--syslog",
                     "--no-server"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"etherws-supervisor: --syslog: there is no syslog socket at "
                   f"{tmp_path}/no-dev-log"]
    assert not (tmp_path / "run").exists()


def test_relative_paths_in_the_file_are_relative_to_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "etc" / "e.toml"
    conf.parent.mkdir()
    conf.write_text('logfile = "log/etherws.log"\nhtpasswd = "../users"\n')
    monkeypatch.chdir("/")  # where a detached supervisor runs: not where the file is
    cfg = cli._load_config(_args("--config", str(conf)))
    assert cfg.logfile == str(tmp_path / "etc" / "log" / "etherws.log")
    assert cfg.htpasswd == str(tmp_path / "users")


def test_relative_paths_on_the_command_line_are_relative_to_the_caller(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(configfile, "DEFAULT_PATH", str(tmp_path / "absent.toml"))
    monkeypatch.chdir(tmp_path)
    cfg = cli._load_config(_args("--logfile", "e.log", "--sslkey", "k.pem",
                                 "--sslcert", "c.pem"))
    assert (cfg.logfile, cfg.sslkey, cfg.sslcert) == (
        str(tmp_path / "e.log"), str(tmp_path / "k.pem"), str(tmp_path / "c.pem"))


def test_a_restart_gets_the_same_configuration(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "e.toml"
    conf.write_text('ageout = 60\nlogfile = "e.log"\ndebug = true\n'
                    'origin = ["https://a.example"]\n')
    args = _args("--config", str(conf), "--ageout", "300", "--max-peers", "3")
    cfg = cli._load_config(args)
    # what _start_detached runs: the file again, and the options that differ from it
    again = _args("--config", str(conf), *config.to_args(cfg, args.file_config))
    monkeypatch.chdir("/")
    assert cli._load_config(again) == cfg

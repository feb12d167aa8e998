"""The systemd unit etherws-supervisor writes."""

from __future__ import annotations

import configparser

from etherws.supervisor import unit


def _parse(text: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


def test_the_unit_runs_this_interpreter_in_the_foreground_and_notifies() -> None:
    service = _parse(unit.render("/opt/etw/bin/python"))["Service"]
    assert service["ExecStart"] == ("/opt/etw/bin/python -m etherws.supervisor start "
                                    "--foreground --rundir /run/etherws")
    assert service["Type"] == "notify" and service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["Restart"] == "on-failure" and int(service["WatchdogSec"]) > 0
    assert service["RuntimeDirectory"] == "etherws"
    assert "CAP_NET_ADMIN" in service["CapabilityBoundingSet"]
    assert "CAP_NET_RAW" in service["CapabilityBoundingSet"]
    assert service["DeviceAllow"] == "/dev/net/tun rw"
    assert "AF_PACKET" in service["RestrictAddressFamilies"]


def test_a_configuration_file_goes_on_the_command_line() -> None:
    service = _parse(unit.render("/usr/bin/python3", "/srv/e.toml"))["Service"]
    assert service["ExecStart"].endswith("--rundir /run/etherws --config /srv/e.toml")

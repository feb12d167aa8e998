"""mintToken against a switch of fakes: a token the key verifies, its bounds, and an audit
line that never shows the token."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from etherws import control, token
from etherws.control import Refused
from etherws.supervisor import handlers
from etherws.supervisor.handlers import Switch
from etherws.tables import PortKind, SlotView
from tests.component.supervisor.test_handlers import call
from tests.component.supervisor.test_handlers import switch as plain_switch  # noqa: F401

KEY = bytes(range(32))
OTHER = bytes(range(100, 132))


@pytest.fixture
def switch(plain_switch: Switch, tmp_path: Path) -> Iterator[Switch]:  # noqa: F811
    key = tmp_path / "token.key"
    key.write_bytes(KEY)
    yield dataclasses.replace(plain_switch, token_key=str(key))


def test_a_minted_token_verifies_with_the_switch_s_key(switch: Switch) -> None:
    entry = call(switch, "mintToken", ttl=60, vlan=10, max_macs=2)["entries"][0]
    claims = token.verify(KEY, entry["token"], time.time())
    assert (claims.vlan, claims.max_macs, claims.id) == (10, 2, entry["id"])
    assert entry["expires"] == claims.expires
    assert time.time() + 59 <= claims.expires <= time.time() + 62
    assert (entry["vlan"], entry["max_macs"], entry["ttl"]) == (10, 2, 60.0)


def test_defaults_and_every_token_is_another(switch: Switch) -> None:
    a = call(switch, "mintToken")["entries"][0]
    b = call(switch, "mintToken")["entries"][0]
    assert a["token"] != b["token"] and a["id"] != b["id"]
    assert (a["vlan"], a["max_macs"], a["ttl"]) == (None, handlers.DEFAULT_TOKEN_MACS, 3600.0)
    assert token.verify(KEY, a["token"], time.time()).vlan == 0


@pytest.mark.parametrize("params, match", [
    ({"ttl": 0.5}, "--ttl must be between 1 and 2592000"),
    ({"ttl": 31 * 86400}, "--ttl"), ({"vlan": 0}, "--vlan"), ({"vlan": 4095}, "--vlan"),
    ({"max_macs": 0}, "--max-macs"), ({"max_macs": 1025}, "--max-macs"),
])
def test_values_out_of_range_are_refused(switch: Switch, params: dict[str, Any],
                                         match: str) -> None:
    with pytest.raises(Refused, match=match):
        call(switch, "mintToken", **params)


def test_a_replaced_key_signs_from_then_on_and_a_broken_one_is_refused(
        switch: Switch) -> None:
    assert switch.token_key is not None
    Path(switch.token_key).write_bytes(OTHER)
    text = call(switch, "mintToken")["entries"][0]["token"]
    assert token.verify(OTHER, text, time.time()).max_macs == handlers.DEFAULT_TOKEN_MACS
    Path(switch.token_key).write_bytes(b"short")
    with pytest.raises(Refused, match="too short") as info:
        call(switch, "mintToken")
    assert info.value.reason == "bad-key"


def test_without_a_server_there_is_no_token(plain_switch: Switch) -> None:  # noqa: F811
    with pytest.raises(Refused, match="--no-server") as info:
        call(plain_switch, "mintToken")
    assert info.value.reason == "no-server"


def test_the_audit_line_shows_the_request_and_not_the_token(
        switch: Switch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    request = control.encode_request("mintToken", {"vlan": 10}, "r1")
    reply = control.dispatch(request, handlers.table(switch))
    assert isinstance(reply, bytes)
    text = json.loads(reply)["result"]["entries"][0]["token"]
    assert "mintToken vlan=10" in caplog.text
    assert text not in caplog.text and text.partition(".")[2] not in caplog.text


def test_listport_shows_a_peer_s_token_claims(switch: Switch) -> None:
    plain = switch.ports.add(PortKind.SERVER, "198.51.100.7:5000", time.monotonic())
    bound = switch.ports.add(PortKind.SERVER, "198.51.100.7:5001", time.monotonic())
    SlotView(switch.table, bound.slot).set_token(10, 2)  # as its worker does
    entries = {e["port"]: e for e in call(switch, "listPort")["entries"]}
    assert (entries[plain.number]["token_vlan"], entries[plain.number]["max_macs"]) == \
        (None, None)
    assert (entries[bound.number]["token_vlan"], entries[bound.number]["max_macs"]) == (10, 2)

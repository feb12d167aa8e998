"""The peer worker with peer tokens (``--token-key``): in the query or as a subprotocol,
beside --htpasswd; one connection per token at a time; the claims land in the port's
slot; the token never in the log. The fixtures and the client are test_peer's."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from etherws import token
from etherws.runtime import procargs, tokenkey
from etherws.tables import PortKind, PortTable
from tests.component.fakes import SLOT, FakeBroker
from tests.component.workers.test_peer import (  # noqa: F401 (fixtures)
    FIXTURES,
    PASSWORD,
    Client,
    StartPeer,
    basic,
    exchange,
    start_peer,
)

HTPASSWD = str(FIXTURES / "sha1.htpasswd")


@pytest.fixture
def port_kind() -> PortKind:
    return PortKind.SERVER


@pytest.fixture
def key_file(rundir: str, tmp_path: Path) -> str:
    path = str(tmp_path / "token.key")
    tokenkey.make(path)
    tokenkey.make_lock_dir(rundir)  # as the supervisor does at start
    return path


def mint(key_file: str, ttl_s: float = 60, vlan: int = 10, max_macs: int = 2,
         nonce: bytes = b"tokentst", now: float | None = None) -> str:
    key = tokenkey.read(key_file)
    return token.mint(key, time.time() if now is None else now, ttl_s, vlan, max_macs, nonce)


def test_a_token_in_the_query_gets_in_past_htpasswd_and_binds_the_slot(
        key_file: str, table: PortTable, broker: FakeBroker, start_peer: StartPeer) -> None:
    text = mint(key_file)
    proc, sock = start_peer("--htpasswd", HTPASSWD, "--token-key", key_file)
    client = Client(sock)
    client.open(path=f"/?token={text}")
    exchange(broker, client)
    assert table.token(SLOT) == (10, 2)
    log = proc.stderr_text()
    assert f"accepted with token {b'tokentst'.hex()} (VLAN 10, MACs 2)" in log
    assert text not in log and text.partition(".")[2] not in log


def test_a_token_as_subprotocol_is_echoed(key_file: str, table: PortTable,
                                          broker: FakeBroker, start_peer: StartPeer) -> None:
    protocol = token.PROTOCOL_PREFIX + mint(key_file, vlan=0, max_macs=1)
    proc, sock = start_peer("--token-key", key_file)
    client = Client(sock)
    client.open(subprotocols=[protocol])
    assert client.accepted is not None and client.accepted.subprotocol == protocol
    exchange(broker, client)
    assert table.token(SLOT) == (0, 1)


def test_basic_auth_still_works_beside_tokens(key_file: str, table: PortTable,
                                              broker: FakeBroker,
                                              start_peer: StartPeer) -> None:
    proc, sock = start_peer("--htpasswd", HTPASSWD, "--token-key", key_file)
    client = Client(sock)
    client.open(headers=[basic("alice", PASSWORD)])
    exchange(broker, client)
    assert table.token(SLOT) == (0, 0)


def test_a_token_is_used_by_one_connection_at_a_time(
        key_file: str, table: PortTable, broker: FakeBroker, start_peer: StartPeer) -> None:
    text = mint(key_file)
    first, sock = start_peer("--token-key", key_file)
    client = Client(sock)
    client.open(path=f"/?token={text}")
    second, sock2 = start_peer("--token-key", key_file)
    refusal = Client(sock2).refused(path=f"/?token={text}")
    assert refusal.status_code == 401
    log = second.exits_with(procargs.EXIT_AUTH_FAILED)
    assert "is in use by another connection" in log and text not in log
    client.sock.close()  # the first connection ends: its worker lets the token go
    first.exits_with(0)
    third, sock3 = start_peer("--token-key", key_file)
    again = Client(sock3)
    again.open(path=f"/?token={text}")


@pytest.mark.parametrize("why", ["expired", "forged"])
def test_a_bad_token_gets_401_even_beside_good_credentials(
        why: str, key_file: str, table: PortTable, start_peer: StartPeer,
        tmp_path: Path) -> None:
    if why == "expired":
        text = mint(key_file, ttl_s=10, now=time.time() - 20)
    else:
        text = token.mint(b"k" * 32, time.time(), 60, 10, 2, b"forgedtk")
    proc, sock = start_peer("--htpasswd", HTPASSWD, "--token-key", key_file)
    refusal = Client(sock).refused(path=f"/?token={text}",
                                   headers=[basic("alice", PASSWORD)])
    assert refusal.status_code == 401
    log = proc.exits_with(procargs.EXIT_AUTH_FAILED)
    reason = "token expired" if why == "expired" else "bad token signature"
    assert f"refused with 401: token (query) refused: {reason}" in log
    assert text not in log and PASSWORD not in log
    assert table.token(SLOT) == (0, 0)


def test_an_unusable_key_is_a_config_error(tmp_path: Path, table: PortTable,
                                           start_peer: StartPeer) -> None:
    short = tmp_path / "short.key"
    short.write_bytes(b"x" * 8)
    proc, _ = start_peer("--token-key", str(short))
    assert "token key" in proc.exits_with(procargs.EXIT_CONFIG)

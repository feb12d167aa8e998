"""etherws.session: the messages around the rings and the broker's attach rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etherws import session
from etherws.errors import EtherwsError
from etherws.session import ATTACH, ATTACHED, DETACH, REFUSED, Message, SessionError


@pytest.mark.parametrize("m", [
    Message(ATTACH, 3, 0xDEADBEEF, 4242),
    Message(ATTACHED, 1, 7, 99),
    Message(DETACH, 2**32 - 1, 2**64 - 1, 2**32 - 1),
    Message(REFUSED, 5, reason="port 5 has a live worker already (pid 7)"),
])
def test_every_message_comes_back_as_it_went(m: Message) -> None:
    assert session.decode(session.encode(m)) == m


def test_a_long_reason_is_cut_to_fit() -> None:
    m = session.decode(session.encode(Message(REFUSED, 1, reason="x" * 1000)))
    assert m.reason == "x" * session.MAX_REASON


@given(st.binary(max_size=40))
def test_anything_else_is_a_session_error(data: bytes) -> None:
    try:
        m = session.decode(data)
    except SessionError:
        return
    assert session.decode(session.encode(m)) == m


@pytest.mark.parametrize("data", [b"", b"A", b"A" + bytes(15), b"Z" + bytes(16), b"R123"])
def test_malformed_messages_are_refused(data: bytes) -> None:
    with pytest.raises(SessionError):
        session.decode(data)
    assert issubclass(SessionError, EtherwsError)


def test_an_unknown_kind_cannot_be_encoded() -> None:
    with pytest.raises(SessionError):
        session.encode(Message(b"Q", 1))


A = Message(ATTACH, 3, 77, 500)


@pytest.mark.parametrize("generation, attached, alive, verdict", [
    (77, None, False, ""),  # the first worker of the port
    (77, 500, True, ""),  # the same worker again (after a broker restart)
    (77, 400, False, ""),  # its predecessor is dead: a handover
    (77, 400, True, "has a live worker already (pid 400)"),
    (78, None, False, "ring generation 4d is not port 3's (4e)"),
    (None, None, False, "port 3 does not exist"),
])
def test_the_broker_accepts_an_attach_only_for_the_ports_ring_and_one_live_worker(
        generation: int | None, attached: int | None, alive: bool, verdict: str) -> None:
    assert verdict in session.check_attach(A, generation, attached, alive)
    assert bool(verdict) == bool(session.check_attach(A, generation, attached, alive))

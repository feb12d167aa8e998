"""The opening handshake with peer tokens: in the query or as a subprotocol, beside Basic
auth and the Origin allow-list; refusals never quote a token."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsproto import ConnectionType
from wsproto.events import AcceptConnection, Request
from wsproto.handshake import H11Handshake

from etherws import token
from etherws.token import Claims, TokenError
from etherws.wshandshake import OFFLOAD_PROTOCOL, Accepted, Rejected, ServerHandshake
from tests.unit.test_wshandshake import BASIC_GOOD, FakeAuth, parse_response, request

KEY = bytes(range(32))
NOW = 1_800_000_000.0
GOOD = token.mint(KEY, NOW, 60, vlan=10, max_macs=2, nonce=b"N" * 8)
EXPIRED = token.mint(KEY, NOW - 120, 60, nonce=b"E" * 8)
FORGED = token.mint(bytes(32), NOW, 60, nonce=b"F" * 8)
PROTOCOL = token.PROTOCOL_PREFIX + GOOD


class FakeTokens:
    """token.verify at NOW, recording what it was given; ``in_use`` refuses those ids."""

    def __init__(self, in_use: frozenset[str] = frozenset()) -> None:
        self.calls: list[str] = []
        self.in_use = in_use

    def __call__(self, text: str) -> Claims:
        self.calls.append(text)
        claims = token.verify(KEY, text, NOW)
        if claims.id in self.in_use:
            raise TokenError("token in use")
        return claims


def handshake(**kwargs: object) -> tuple[ServerHandshake, FakeTokens, FakeAuth]:
    tokens, auth = FakeTokens(), FakeAuth()
    args: dict[str, object] = {"auth": auth, "token_check": tokens, **kwargs}
    return ServerHandshake(**args), tokens, auth  # type: ignore[arg-type]


def protocols(*values: str) -> list[tuple[bytes, bytes]]:
    return [(b"Sec-WebSocket-Protocol", v.encode()) for v in values]


def test_a_token_in_the_query_gets_in_although_basic_auth_is_on() -> None:
    hs, tokens, auth = handshake(path="/ws")
    decision = hs.receive(request(f"/ws?vm=3&token={GOOD}".encode()))
    assert isinstance(decision, Accepted)
    assert decision.claims == Claims(int(NOW) + 60, 10, 2, b"N" * 8)
    assert decision.user is None and decision.protocol is None
    assert tokens.calls == [GOOD] and auth.calls == []  # no password hashing for it


def test_a_token_offered_as_subprotocol_is_echoed_in_the_101() -> None:
    hs, tokens, _ = handshake(protocols=(OFFLOAD_PROTOCOL,))
    decision = hs.receive(request(headers=protocols("chat", PROTOCOL, OFFLOAD_PROTOCOL)))
    assert isinstance(decision, Accepted) and decision.claims is not None
    assert decision.protocol == PROTOCOL  # not the offload protocol: one name only
    _, headers, _ = parse_response(decision.response)
    assert headers["sec-websocket-protocol"] == [PROTOCOL]


def test_a_real_client_offering_the_token_as_subprotocol_accepts_the_answer() -> None:
    client = H11Handshake(ConnectionType.CLIENT)
    raw = client.send(Request(host="switch.example", target="/", subprotocols=[PROTOCOL]))
    decision, _, _ = handshake()
    got = decision.receive(raw)
    assert isinstance(got, Accepted)
    client.receive_data(got.response)
    events = list(client.events())
    assert isinstance(events[0], AcceptConnection) and events[0].subprotocol == PROTOCOL


@pytest.mark.parametrize("target,headers,why", [
    (f"/?token={EXPIRED}", [], "token (query) refused: token expired 60 s ago"),
    (f"/?token={FORGED}", [], "token (query) refused: bad token signature"),
    ("/?token=", [], "token (query) refused: malformed token"),
    ("/", protocols(token.PROTOCOL_PREFIX + GOOD[:-2]),
     "token (subprotocol) refused: malformed token"),
    (f"/?token={GOOD}&token={GOOD}", [], "more than one token presented"),
    (f"/?token={GOOD}", protocols(PROTOCOL), "more than one token presented"),
])
def test_a_bad_token_gets_401_even_with_good_basic_credentials(
        target: str, headers: list[tuple[bytes, bytes]], why: str) -> None:
    hs, _, auth = handshake()
    raw = request(target.encode(), headers=[(b"Authorization", BASIC_GOOD), *headers])
    decision = hs.receive(raw)
    assert isinstance(decision, Rejected) and decision.status == 401
    assert decision.reason == why
    assert auth.calls == []
    _, got, _ = parse_response(decision.response)
    assert got["www-authenticate"] == ['Basic realm="etherws"']


def test_a_token_in_use_gets_401() -> None:
    tokens = FakeTokens(in_use=frozenset({(b"N" * 8).hex()}))
    decision = ServerHandshake(token_check=tokens).receive(request(f"/?token={GOOD}".encode()))
    assert isinstance(decision, Rejected) and decision.status == 401
    assert decision.reason == "token (query) refused: token in use"


def test_without_a_token_basic_auth_decides_as_before() -> None:
    hs, tokens, auth = handshake()
    good = hs.receive(request(b"/?vm=1", headers=[(b"Authorization", BASIC_GOOD)]))
    assert isinstance(good, Accepted) and good.user == "alice" and good.claims is None
    bad = handshake()[0].receive(request(b"/"))
    assert isinstance(bad, Rejected) and bad.status == 401 and bad.reason == "no credentials"
    assert tokens.calls == []


def test_without_auth_a_token_still_binds_and_no_token_still_gets_in() -> None:
    hs, _, _ = handshake(auth=None)
    decision = hs.receive(request(f"/?token={GOOD}".encode()))
    assert isinstance(decision, Accepted) and decision.claims is not None
    plain = handshake(auth=None)[0].receive(request())
    assert isinstance(plain, Accepted) and plain.claims is None


def test_tokens_off_ignores_them() -> None:
    hs = ServerHandshake(auth=FakeAuth())
    decision = hs.receive(request(f"/?token={GOOD}".encode()))
    assert isinstance(decision, Rejected) and decision.reason == "no credentials"
    other = ServerHandshake().receive(request(headers=protocols(PROTOCOL)))
    assert isinstance(other, Accepted) and other.protocol is None and other.claims is None


def test_the_origin_allow_list_is_checked_before_the_token() -> None:
    hs, tokens, _ = handshake(origins=frozenset({"https://vm.example"}))
    raw = request(f"/?token={GOOD}".encode(), headers=[(b"Origin", b"https://evil.example")])
    decision = hs.receive(raw)
    assert isinstance(decision, Rejected) and decision.status == 403
    assert tokens.calls == []
    ok = handshake(origins=frozenset({"https://vm.example"}))[0].receive(
        request(f"/?token={GOOD}".encode(), headers=[(b"Origin", b"https://VM.example")]))
    assert isinstance(ok, Accepted) and ok.claims is not None


def test_the_path_is_still_checked_and_the_query_never_quoted() -> None:
    hs, tokens, _ = handshake(path="/ws")
    decision = hs.receive(request(f"/other?token={GOOD}".encode()))
    assert isinstance(decision, Rejected) and decision.status == 404
    assert GOOD not in decision.reason and "token" not in decision.reason
    assert tokens.calls == []


def test_a_query_with_too_many_fields_is_refused() -> None:
    hs, tokens, _ = handshake()
    query = "&".join(f"f{i}=1" for i in range(100))
    decision = hs.receive(request(f"/?{query}&token={GOOD}".encode()))
    assert isinstance(decision, Rejected) and decision.status == 400
    assert tokens.calls == []


@pytest.mark.parametrize("bad", [EXPIRED, FORGED, GOOD + "x", GOOD[:20]])
def test_no_reason_quotes_a_token(bad: str) -> None:
    for raw in (request(f"/?token={bad}".encode()),
                request(headers=protocols(token.PROTOCOL_PREFIX + bad))):
        decision = handshake()[0].receive(raw)
        assert isinstance(decision, Rejected)
        assert bad[:12] not in decision.reason and bad[-12:] not in decision.reason


@given(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=300),
       st.lists(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126),
                        max_size=80), max_size=3))
def test_any_query_and_protocols_get_a_decision_that_never_quotes_them(
        query: str, offered: list[str]) -> None:
    raw = request(f"/?{query}".encode(),
                  headers=protocols(*(token.PROTOCOL_PREFIX + o for o in offered)))
    decision = handshake()[0].receive(raw)
    assert isinstance(decision, Accepted | Rejected)
    if isinstance(decision, Rejected):
        assert decision.status in (400, 401)
        for secret in [query, *offered]:
            if "~" in secret:  # no reason has a tilde of its own
                assert secret not in decision.reason

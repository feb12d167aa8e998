"""The server side of the opening handshake: a table of requests -> status and headers.

The accepted response is checked by a real client-side handshake (wsproto's), not by
comparing bytes we wrote ourselves.
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsproto import ConnectionType
from wsproto.events import AcceptConnection, Request
from wsproto.extensions import PerMessageDeflate
from wsproto.handshake import H11Handshake

from etherws import htpasswd
from etherws.wshandshake import (
    MAX_HEADERS,
    Accepted,
    Rejected,
    ServerHandshake,
    accept_token,
    http_response,
)
from tests.unit.test_purity import violations

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3's example key
PASSWORD = "s3cret:with colon"
BASIC_GOOD = b"Basic " + base64.b64encode(f"alice:{PASSWORD}".encode())
BASIC_BAD = b"Basic " + base64.b64encode(b"alice:" + b"wrong-" + PASSWORD.encode())
UPGRADE = [(b"Host", b"switch.example"), (b"Upgrade", b"websocket"),
           (b"Connection", b"Upgrade"), (b"Sec-WebSocket-Key", KEY),
           (b"Sec-WebSocket-Version", b"13")]


def request(target: bytes = b"/", headers: list[tuple[bytes, bytes]] | None = None,
            drop: tuple[bytes, ...] = (), method: bytes = b"GET",
            version: bytes = b"HTTP/1.1") -> bytes:
    """A request head: the standard upgrade headers minus ``drop`` plus ``headers``."""
    lines = [b" ".join((method, target, version))]
    lines += [n + b": " + v for n, v in UPGRADE if n.lower() not in {d.lower() for d in drop}]
    lines += [n + b": " + v for n, v in headers or []]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def decide(hs: ServerHandshake, data: bytes, chunk: int = 0) -> Accepted | Rejected | None:
    """Feed ``data`` (in ``chunk``-byte pieces if given) until there is a decision."""
    step = chunk or len(data)
    for i in range(0, len(data), step):
        decision = hs.receive(data[i:i + step])
        if decision is not None:
            return decision
    return None


def parse_response(raw: bytes) -> tuple[int, dict[str, list[str]], bytes]:
    """``(status, {lower-case name: [values]}, body)`` of a serialized response."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, raw
    status_line, *lines = head.decode("ascii").split("\r\n")
    version, status, _phrase = status_line.split(" ", 2)
    assert version == "HTTP/1.1"
    headers: dict[str, list[str]] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    if "content-length" in headers:
        assert len(body) == int(headers["content-length"][0])
    return int(status), headers, body


class FakeAuth:
    """Accepts exactly BASIC_GOOD as "alice"; records every value it was called with."""

    def __init__(self) -> None:
        self.calls: list[bytes | None] = []

    def __call__(self, value: bytes | None) -> str | None:
        self.calls.append(value)
        return "alice" if value == BASIC_GOOD else None


# (name, request bytes, handshake arguments, expected status, required headers)
CASES: list[tuple[str, bytes, dict[str, object], int, dict[str, str]]] = [
    ("valid", request(), {}, 101, {"upgrade": "websocket", "connection": "Upgrade"}),
    ("lowercase header names and values",
     request(drop=tuple(n for n, _ in UPGRADE),
             headers=[(b"host", b"h"), (b"upgrade", b"WebSocket"),
                      (b"connection", b"keep-alive, upgrade"),
                      (b"sec-websocket-key", KEY), (b"sec-websocket-version", b"13")]),
     {}, 101, {}),
    ("query string on the right path", request(b"/tunnel?vm=3"), {"path": "/tunnel"}, 101, {}),
    ("absolute-form target", request(b"http://switch.example/tunnel"), {"path": "/tunnel"},
     101, {}),
    ("Content-Length: 0 is no body", request(headers=[(b"Content-Length", b"0")]), {}, 101, {}),
    ("upgrade with a protocol version", request(drop=(b"Upgrade",),
                                                 headers=[(b"Upgrade", b"websocket/13")]),
     {}, 101, {}),
    ("plain GET", b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", {}, 426, {"upgrade": "websocket"}),
    ("Connection without upgrade", request(drop=(b"Connection",),
                                           headers=[(b"Connection", b"keep-alive")]),
     {}, 426, {"upgrade": "websocket"}),
    ("Upgrade to something else", request(drop=(b"Upgrade",), headers=[(b"Upgrade", b"h2c")]),
     {}, 426, {"upgrade": "websocket"}),
    ("bad version", request(drop=(b"Sec-WebSocket-Version",),
                            headers=[(b"Sec-WebSocket-Version", b"8")]),
     {}, 426, {"sec-websocket-version": "13"}),
    ("missing version", request(drop=(b"Sec-WebSocket-Version",)), {}, 426,
     {"sec-websocket-version": "13"}),
    ("missing key", request(drop=(b"Sec-WebSocket-Key",)), {}, 400, {}),
    ("key of 15 bytes", request(drop=(b"Sec-WebSocket-Key",),
                                headers=[(b"Sec-WebSocket-Key", base64.b64encode(b"x" * 15))]),
     {}, 400, {}),
    ("key not base64", request(drop=(b"Sec-WebSocket-Key",),
                               headers=[(b"Sec-WebSocket-Key", b"not base64 at all!!!!!==")]),
     {}, 400, {}),
    ("two keys", request(headers=[(b"Sec-WebSocket-Key", KEY)]), {}, 400, {}),
    ("wrong path", request(b"/other"), {}, 404, {}),
    ("trailing slash is another path", request(b"/tunnel/"), {"path": "/tunnel"}, 404, {}),
    ("default path is /", request(b"/tunnel"), {}, 404, {}),
    ("asterisk target", request(b"*"), {}, 404, {}),
    ("POST", request(method=b"POST"), {}, 405, {"allow": "GET"}),
    ("lowercase get", request(method=b"get"), {}, 405, {"allow": "GET"}),
    ("HTTP/1.0", request(version=b"HTTP/1.0"), {}, 400, {}),
    ("HTTP/2.0 in a request line", request(version=b"HTTP/2.0"), {}, 400, {}),
    ("missing Host", request(drop=(b"Host",)), {}, 400, {}),
    ("two Host headers", request(headers=[(b"Host", b"b")]), {}, 400, {}),
    ("garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", {}, 400, {}),
    ("garbage line", b"hello?\r\n\r\n", {}, 400, {}),
    ("a word is a method", b"hello there, are you a web server?\r\n\r\n", {}, 405, {}),
    ("leading blank line", b"\r\n" + request(), {}, 400, {}),
    ("bad header line", request(headers=[(b"No colon here", b"")]).replace(b": \r\n", b"\r\n"),
     {}, 400, {}),
    ("a body", request(headers=[(b"Content-Length", b"4")]) + b"abcd", {}, 400, {}),
    ("chunked body", request(headers=[(b"Transfer-Encoding", b"chunked")]) + b"0\r\n\r\n",
     {}, 400, {}),
    ("too many header lines",
     request(headers=[(b"X-%d" % i, b"1") for i in range(MAX_HEADERS - len(UPGRADE) + 1)]),
     {}, 431, {}),
    ("good auth", request(headers=[(b"Authorization", BASIC_GOOD)]), {"auth": FakeAuth()},
     101, {}),
    ("bad auth", request(headers=[(b"Authorization", BASIC_BAD)]), {"auth": FakeAuth()},
     401, {"www-authenticate": 'Basic realm="etherws"'}),
    ("no auth", request(), {"auth": FakeAuth()}, 401,
     {"www-authenticate": 'Basic realm="etherws"'}),
    ("other auth scheme", request(headers=[(b"Authorization", b"Bearer abc")]),
     {"auth": FakeAuth()}, 401, {"www-authenticate": 'Basic realm="etherws"'}),
    ("two Authorization headers", request(headers=[(b"Authorization", BASIC_GOOD)] * 2),
     {"auth": FakeAuth()}, 401, {"www-authenticate": 'Basic realm="etherws"'}),
    ("origin allowed", request(headers=[(b"Origin", b"https://VM.example")]),
     {"origins": frozenset({"https://vm.example"})}, 101, {}),
    ("origin refused", request(headers=[(b"Origin", b"https://evil.example")]),
     {"origins": frozenset({"https://vm.example"})}, 403, {}),
    ("origin absent", request(), {"origins": frozenset({"https://vm.example"})}, 101, {}),
    ("two origins", request(headers=[(b"Origin", b"https://vm.example")] * 2),
     {"origins": frozenset({"https://vm.example"})}, 403, {}),
    ("any origin without an allow-list", request(headers=[(b"Origin", b"null")]), {}, 101, {}),
    ("origin checked before auth", request(headers=[(b"Origin", b"https://evil.example")]),
     {"origins": frozenset({"https://vm.example"}), "auth": FakeAuth()}, 403, {}),
]


@pytest.mark.parametrize("chunk", [0, 1, 7])
@pytest.mark.parametrize(("name", "raw", "kwargs", "status", "required"), CASES,
                         ids=[c[0] for c in CASES])
def test_request_table(name: str, raw: bytes, kwargs: dict[str, object], status: int,
                       required: dict[str, str], chunk: int) -> None:
    decision = decide(ServerHandshake(**kwargs), raw, chunk)  # type: ignore[arg-type]
    assert decision is not None, name
    got_status, headers, body = parse_response(decision.response)
    assert got_status == status
    for header, value in required.items():
        assert value in headers.get(header, []), (header, headers)
    if status == 101:
        assert isinstance(decision, Accepted)
        assert decision.trailing == b""
        assert "sec-websocket-extensions" not in headers
        assert "sec-websocket-protocol" not in headers
        assert headers["sec-websocket-accept"] == [accept_token(KEY).decode()]
        assert body == b""
    else:
        assert isinstance(decision, Rejected) and decision.status == status
        assert headers["connection"] == ["close"]
        assert decision.reason
        assert PASSWORD not in decision.reason


def test_rfc_6455_example_accept_token() -> None:
    assert accept_token(KEY) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("offer_deflate", [False, True])
def test_a_real_client_handshake_accepts_the_response(offer_deflate: bool) -> None:
    client = H11Handshake(ConnectionType.CLIENT)
    extensions = [PerMessageDeflate()] if offer_deflate else []
    raw = client.send(Request(host="switch.example", target="/tunnel?x=1",
                              extensions=extensions, subprotocols=[]))
    if offer_deflate:
        assert b"permessage-deflate" in raw
    decision = ServerHandshake("/tunnel").receive(raw)
    assert isinstance(decision, Accepted)
    assert b"sec-websocket-extensions" not in decision.response.lower()
    client.receive_data(decision.response)
    events = list(client.events())
    assert len(events) == 1 and isinstance(events[0], AcceptConnection)
    assert events[0].extensions == []


@pytest.mark.parametrize("status", [408, 503])
def test_responses_for_refusals_without_a_handshake(status: int) -> None:
    got, headers, body = parse_response(http_response(status, body=b"busy\n"))
    assert (got, headers["connection"], body) == (status, ["close"], b"busy\n")


def test_auth_gets_the_raw_value_or_none() -> None:
    auth = FakeAuth()
    decide(ServerHandshake(auth=auth), request(headers=[(b"Authorization", BASIC_BAD)]))
    decide(ServerHandshake(auth=auth), request())
    decide(ServerHandshake(auth=auth), request(headers=[(b"Authorization", BASIC_GOOD)] * 2))
    decision = decide(ServerHandshake(auth=auth), request(headers=[(b"Authorization",
                                                                     BASIC_GOOD)]))
    assert auth.calls == [BASIC_BAD, None, None, BASIC_GOOD]
    assert isinstance(decision, Accepted) and decision.user == "alice"


def test_auth_is_not_consulted_for_a_broken_request() -> None:
    auth = FakeAuth()
    decide(ServerHandshake(auth=auth), request(b"/wrong", headers=[(b"Authorization",
                                                                      BASIC_GOOD)]))
    decide(ServerHandshake(auth=auth), request(drop=(b"Sec-WebSocket-Key",)))
    assert auth.calls == []


def test_with_a_real_htpasswd_table() -> None:
    table = htpasswd.parse("alice:{SHA}" + base64.b64encode(
        hashlib.sha1(PASSWORD.encode()).digest()).decode() + "\n")

    def auth(value: bytes | None) -> str | None:
        return htpasswd.authenticate(table, value)

    good = decide(ServerHandshake(auth=auth), request(headers=[(b"Authorization", BASIC_GOOD)]))
    bad = decide(ServerHandshake(auth=auth), request(headers=[(b"Authorization", BASIC_BAD)]))
    assert isinstance(good, Accepted) and good.user == "alice"
    assert isinstance(bad, Rejected) and bad.status == 401
    assert "alice" in bad.reason and PASSWORD not in bad.reason


def test_reasons_never_quote_a_password_from_a_malformed_header() -> None:
    # h11 quotes the offending line in its error message; the reason must not.
    raw = request(headers=[(b"Authorization", BASIC_GOOD)]).replace(
        b"Authorization:", b"Authorization :")
    decision = decide(ServerHandshake(auth=FakeAuth()), raw)
    assert isinstance(decision, Rejected) and decision.status == 400
    assert BASIC_GOOD.split()[1].decode() not in decision.reason
    assert "Authorization" not in decision.reason


def test_reason_omits_the_query_string() -> None:
    decision = decide(ServerHandshake("/t"), request(b"/x?token=abc123"))
    assert isinstance(decision, Rejected) and "abc123" not in decision.reason


def test_oversize_head_in_small_chunks_stops_at_the_limit() -> None:
    hs = ServerHandshake(max_head=1024)
    raw = request(headers=[(b"X-Pad", b"p" * 4000)])
    fed = 0
    decision = None
    while decision is None:
        decision = hs.receive(raw[fed:fed + 10])
        fed += 10
    assert isinstance(decision, Rejected) and decision.status == 431
    assert 1024 <= fed < 1024 + 10  # decided as the limit was reached, not later


def test_oversize_head_in_one_chunk() -> None:
    raw = request(headers=[(b"X-Pad", b"p" * 9000)])
    decision = ServerHandshake().receive(raw)
    assert isinstance(decision, Rejected) and decision.status == 431


def test_head_exactly_at_the_limit_is_accepted() -> None:
    raw = request()
    decision = ServerHandshake(max_head=len(raw)).receive(raw + b"\x82\x00")
    assert isinstance(decision, Accepted) and decision.trailing == b"\x82\x00"
    too_long = ServerHandshake(max_head=len(raw) - 1).receive(raw)
    assert isinstance(too_long, Rejected) and too_long.status == 431


@pytest.mark.parametrize("chunk", [0, 1, 5])
def test_bytes_after_the_head_are_surfaced(chunk: int) -> None:
    raw = request() + b"\x82\x85early"
    hs = ServerHandshake()
    decision = decide(hs, raw, chunk)
    assert isinstance(decision, Accepted)
    # Fed in pieces, the decision comes with the piece that ends the head, and
    # carries what followed the head in that piece; later pieces were never given.
    end = raw.index(b"\r\n\r\n") + 4
    given_up_to = -(-end // chunk) * chunk if chunk else len(raw)
    assert decision.trailing == raw[end:given_up_to]


def test_method_is_refused_before_the_head_ends() -> None:
    hs = ServerHandshake()
    assert hs.receive(b"GE") is None
    assert hs.receive(b"T / HT") is None
    decision = ServerHandshake().receive(b"DELETE /")
    assert isinstance(decision, Rejected) and decision.status == 405
    decision = ServerHandshake().receive(b"A" * 17)
    assert isinstance(decision, Rejected) and decision.status == 400


def test_misuse_is_a_bug() -> None:
    hs = ServerHandshake()
    with pytest.raises(ValueError):
        hs.receive(b"")
    assert hs.receive(request()) is not None
    with pytest.raises(RuntimeError):
        hs.receive(b"more")
    with pytest.raises(ValueError):
        ServerHandshake("tunnel")


def test_module_is_pure() -> None:
    assert violations("etherws.wshandshake") == []


@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=60))
def test_any_split_of_a_valid_request_gives_the_same_answer(cuts: list[int]) -> None:
    raw = request(headers=[(b"Authorization", BASIC_GOOD)])
    hs = ServerHandshake(auth=FakeAuth())
    pos, decision = 0, None
    for n in cuts + [len(raw)]:
        if pos >= len(raw):
            break
        decision = hs.receive(raw[pos:pos + n])
        pos += n
        if decision is not None:
            break
    assert decision == Accepted(decide(ServerHandshake(auth=FakeAuth()), raw).response,
                                b"", "alice")  # type: ignore[union-attr]


@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=40))
def test_arbitrary_bytes_never_raise(chunks: list[bytes]) -> None:
    hs = ServerHandshake(max_head=2048, auth=FakeAuth(), origins=frozenset({"x"}))
    for data in chunks:
        decision = hs.receive(data)
        if decision is not None:
            status, _, _ = parse_response(decision.response)
            assert status in (101, 400, 401, 403, 404, 405, 426, 431)
            return


@given(st.binary(max_size=200))
def test_arbitrary_bytes_after_a_request_line(tail: bytes) -> None:
    hs = ServerHandshake(max_head=1024)
    decision = decide(hs, b"GET / HTTP/1.1\r\n" + tail + b"\r\n\r\n")
    assert decision is None or isinstance(decision, (Accepted, Rejected))


# --- the offload subprotocol ----------------------------------------------------------------
GSO = "etherws.gso.1"


@pytest.mark.parametrize(("offered", "ours", "chosen"), [
    ([b"etherws.gso.1"], (GSO,), GSO),
    ([b"chat, etherws.gso.1"], (GSO,), GSO),                 # a list in one line
    ([b"chat", b" etherws.gso.1 "], (GSO,), GSO),            # several lines
    ([b"etherws.gso.2"], (GSO,), None),                      # a later version: plain
    ([b"etherws.gso.1"], (), None),                          # --no-offload
    ([], (GSO,), None),                                      # etherws 1.3, a browser VM
])
def test_the_offload_protocol_is_chosen_only_when_both_sides_offer_it(
        offered: list[bytes], ours: tuple[str, ...], chosen: str | None) -> None:
    raw = request(headers=[(b"Sec-WebSocket-Protocol", v) for v in offered])
    decision = ServerHandshake(protocols=ours).receive(raw)
    assert isinstance(decision, Accepted) and decision.protocol == chosen
    _, headers, _ = parse_response(decision.response)
    assert headers.get("sec-websocket-protocol", []) == ([chosen] if chosen else [])


def test_a_real_client_offering_the_protocol_accepts_the_answer() -> None:
    client = H11Handshake(ConnectionType.CLIENT)
    raw = client.send(Request(host="switch.example", target="/", subprotocols=[GSO]))
    decision = ServerHandshake(protocols=(GSO,)).receive(raw)
    assert isinstance(decision, Accepted)
    client.receive_data(decision.response)
    events = list(client.events())
    assert isinstance(events[0], AcceptConnection) and events[0].subprotocol == GSO

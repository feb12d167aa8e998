"""The server side of the WebSocket opening handshake (pure: no I/O, no clock).

A peer worker feeds the bytes it reads from an accepted connection (after TLS) into
:class:`ServerHandshake` until it returns a decision:

- :class:`Accepted`: send ``response`` (``101 Switching Protocols``, RFC 6455 §4.2.2),
  then speak WebSocket frames; ``trailing`` holds bytes that arrived after the request
  head. A conforming client sends nothing before it has read the 101, so the caller may
  treat them as early frames or as a protocol error, but must not drop them silently.
- :class:`Rejected`: send ``response`` (a complete HTTP/1.1 answer with
  ``Connection: close``), then close. ``reason`` is one line for the log; it never holds a
  password, a query string or a header's raw bytes.

The checks, first failure wins (cheap ones first, the password hash last):

=====================================================  ======  ===========================
request                                                status  extra response headers
=====================================================  ======  ===========================
not HTTP, malformed, missing/duplicate ``Host``          400
method other than ``GET`` (RFC 6455 §4.1)                405   ``Allow: GET``
head longer than ``max_head`` or > MAX_HEADERS lines     431
HTTP version other than 1.1 (RFC 6455 §4.1)              400
a request body (``Content-Length``/``Transfer-Enc.``)    400
path other than the configured one (query ignored)       404
no ``Upgrade: websocket`` + ``Connection: upgrade``      426   ``Upgrade: websocket``
``Sec-WebSocket-Version`` missing or not 13 (§4.2.2)     426   ``Sec-WebSocket-Version: 13``
``Sec-WebSocket-Key`` missing or not 16 bytes (§4.2.1)   400
``Origin`` not in the allow-list (when one is given)     403
over MAX_QUERY_FIELDS query fields (when tokens are on)  400
more than one token, or a token refused (when on)        401   ``WWW-Authenticate: Basic…``
no token, credentials missing or refused (auth on)       401   ``WWW-Authenticate: Basic…``
=====================================================  ======  ===========================

Tokens (``etherws.token``), for peers that cannot send an Authorization header (browsers):
with a ``token_check``, a token in the request target's query (``?token=T``) or offered as
the subprotocol ``etherws.token.T`` is checked instead of the credentials, and one that
passes is accepted even when Basic auth is on; a token offered as a subprotocol is the
protocol named in the 101 (a browser fails a connection whose 101 names none of the
protocols it offered). A request without a token takes the Basic-auth path unchanged.
``Accepted.claims`` holds what the token grants. The query string is never logged: it
holds the token.

Never negotiated: extensions (no permessage-deflate: a compressed tunnel is a
decompression-bomb surface and Ethernet payloads rarely compress). Subprotocols: the
first of the server's ``protocols`` that the client offers is chosen and named in the 101
(§4.2.2 item 5.4); a client offering none of them gets a 101 without one, as before.
``OFFLOAD_PROTOCOL`` is the one etherws offers: every message is a 10-byte virtio-net
header and a frame, which may be a super-frame (``etherws.gso``). Plain clients (etherws
1.3, browser VMs) never offer it and get one standard Ethernet frame per message.

Why h11 directly rather than wsproto's ``H11Handshake``: after the 101 etherws frames
with its own codec (``etherws.wsframe``), so it needs the bytes that followed the
request head, which ``H11Handshake`` hands only to its own wsproto ``Connection``;
wsproto's checks answer 400 for almost everything (RFC 6455 wants 426 for a version
mismatch) and cannot bound the request head; and the purity check
(``tests/unit/test_purity.py``) keeps wsproto out of pure modules. h11 parses the
untrusted HTTP; the checks and the fixed responses are written out here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import h11

from etherws.htpasswd import CHALLENGE, parse_basic_authorization
from etherws.token import PROTOCOL_PREFIX, QUERY_KEY, Claims, TokenError

#: The subprotocol of a tunnel whose messages carry a virtio-net header (see above).
OFFLOAD_PROTOCOL = "etherws.gso.1"
#: RFC 6455 §1.3: appended to the client's key before hashing into Sec-WebSocket-Accept.
WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: Default bound on the request line plus headers (websockets uses 8 KiB lines too).
MAX_HEAD = 8192
#: Header lines allowed in a request (websockets allows 128; a real client sends ~10).
MAX_HEADERS = 100
#: The longest method token waited for before the request is called "not HTTP".
_MAX_METHOD = 16

Auth = Callable[[bytes | None], str | None]
"""Checks a raw ``Authorization`` value (None when absent): the user, or None to refuse."""
TokenCheck = Callable[[str], Claims]
"""Checks a token's text: its claims, or TokenError with the reason (expired, in use...)."""
#: Query fields parsed at most (the head is bounded anyway; this bounds the work).
MAX_QUERY_FIELDS = 32

_REASON_PHRASES = {
    101: "Switching Protocols", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
    426: "Upgrade Required", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}
_TOKEN_CHARS = rb"!#$%&'*+.^_`|~0-9A-Za-z-"  # RFC 9110 §5.6.2 tchar
_METHOD_RE = re.compile(rb"([" + _TOKEN_CHARS + rb"]*)(.?)", re.DOTALL)
_ABSOLUTE_FORM_RE = re.compile(rb"[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*")  # RFC 9112 §3.2.2
_UPGRADE_HEADERS = [("Upgrade", b"websocket"), ("Sec-WebSocket-Version", b"13")]


@dataclass(frozen=True)
class Accepted:
    """Send ``response`` (the 101), then exchange frames; see the module docstring."""

    response: bytes
    trailing: bytes
    user: str | None
    """The authenticated user, None when authentication is off."""
    protocol: str | None = None
    """The subprotocol chosen (named in the 101), None for none."""
    claims: Claims | None = None
    """What the peer's token grants; None when it presented none."""


@dataclass(frozen=True)
class Rejected:
    """Send ``response``, then close the connection; log ``reason``."""

    status: int
    response: bytes
    reason: str


Decision = Accepted | Rejected


class _Refusal(Exception):
    def __init__(self, status: int, reason: str,
                 headers: Iterable[tuple[str, bytes]] = ()) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = list(headers)


def accept_token(key: bytes) -> bytes:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (RFC 6455 §4.2.2 step 5.4)."""
    return base64.b64encode(hashlib.sha1(key + WEBSOCKET_GUID).digest())


def http_response(status: int, headers: Iterable[tuple[str, bytes]] = (),
                  body: bytes = b"") -> bytes:
    """A serialized HTTP/1.1 response; refusals carry a body and ``Connection: close``.

    Also for shells that refuse without a handshake: 408 when the head does not arrive
    in time, 503 over the peer limit (``http_response(503, body=b"busy\\n")``).
    """
    lines = [f"HTTP/1.1 {status} {_REASON_PHRASES[status]}".encode("ascii")]
    lines += [name.encode("ascii") + b": " + value for name, value in headers]
    if status != 101:
        lines += [b"Content-Type: text/plain; charset=utf-8",
                  b"Content-Length: " + str(len(body)).encode("ascii"), b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _shown(value: bytes, limit: int = 64) -> str:
    """Untrusted bytes made safe for one log line: escaped and shortened."""
    text = value[:limit].decode("ascii", "backslashreplace")
    return repr(text + ("..." if len(value) > limit else ""))


def _tokens(values: Iterable[bytes]) -> set[bytes]:
    """Lower-cased tokens of comma-separated header values (RFC 9110 §5.6.1)."""
    return {t.strip().lower() for v in values for t in v.split(b",") if t.strip()}


def _is_upgrade(headers: dict[bytes, list[bytes]]) -> bool:
    """``Upgrade: websocket`` (a protocol may carry a ``/version``) and ``Connection: upgrade``."""
    protocols = {token.partition(b"/")[0] for token in _tokens(headers.get(b"upgrade", []))}
    return b"websocket" in protocols and b"upgrade" in _tokens(headers.get(b"connection", []))


def _offered(request: h11.Request) -> list[str]:
    """The subprotocols a client offers: every Sec-WebSocket-Protocol line (§4.1 item
    10), each a comma-separated list of tokens."""
    return [t.strip().decode("latin-1") for name, value in request.headers
            if name == b"sec-websocket-protocol" for t in value.split(b",") if t.strip()]


def _query_tokens(target: bytes) -> list[str]:
    """The ``token`` values of a request target's query; _Refusal for a query that is
    not one (too many fields). Never quoted in a reason: it holds the token."""
    query = target.partition(b"?")[2].partition(b"#")[0].decode("latin-1")
    try:
        fields = urllib.parse.parse_qs(query, keep_blank_values=True,
                                        max_num_fields=MAX_QUERY_FIELDS)
    except ValueError:
        raise _Refusal(400, "malformed query (too many fields)") from None
    return fields.get(QUERY_KEY, [])


def _path_of(target: bytes) -> bytes:
    """The path of a request target, without query; absolute-form reduced to its path."""
    path = target.partition(b"?")[0].partition(b"#")[0]
    scheme_host = _ABSOLUTE_FORM_RE.match(path)
    if scheme_host:
        path = path[scheme_host.end():] or b"/"
    return path


class ServerHandshake:
    """One connection's opening handshake, server side; see the module docstring.

    ``path`` is compared with the request target's path (exact, raw bytes; the query is
    ignored). ``auth`` is called once per request with the ``Authorization`` value, or
    None when there is none or more than one; None as ``auth`` turns authentication off.
    ``origins`` is an allow-list of ``Origin`` values (compared case-insensitively): a
    browser sends Origin and cannot forge it, so a listed page's scripts get in and other
    pages' do not. A request without Origin is not from a browser and is let through —
    any non-browser client can send whatever Origin it likes, so refusing it would keep
    no one out. None (the default) checks no Origin at all (browser-based VMs connect).
    ``token_check`` (None: tokens are off) is called with the one token a request
    presents; see the module docstring.
    """

    def __init__(self, path: str = "/", auth: Auth | None = None,
                 origins: frozenset[str] | None = None, max_head: int = MAX_HEAD,
                 protocols: tuple[str, ...] = (),
                 token_check: TokenCheck | None = None) -> None:
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/': {path!r}")
        if max_head < 64:
            raise ValueError(f"max_head too small: {max_head}")
        self.path = path.encode("utf-8")
        self.auth = auth
        self.origins = None if origins is None else frozenset(o.lower() for o in origins)
        self.max_head = max_head
        self.protocols = protocols
        self.token_check = token_check
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head)
        self._fed = 0  # bytes given to h11, never more than max_head
        self._start = b""  # the first bytes, until the method is known
        self._method_ok = False
        self._decided = False

    def receive(self, data: bytes) -> Decision | None:
        """Feed bytes read from the connection; the decision, or None to read more.

        ``data`` must not be empty: at end of file there is nobody left to answer.
        Bytes past ``max_head`` are never buffered. Once a decision is returned the
        handshake is over and further calls are a bug (RuntimeError).
        """
        if self._decided:
            raise RuntimeError("the handshake is already decided")
        if not data:
            raise ValueError("no data: end of file is the caller's business")
        room = self.max_head - self._fed
        head, extra = data[:room], data[room:]
        self._fed += len(head)
        try:
            request = self._parse(head)
            if request is None:
                if self._fed >= self.max_head:
                    raise _Refusal(431, f"request head longer than {self.max_head} bytes")
                return None
            nonce, user, claims, protocol = self._check(request)
        except _Refusal as refusal:
            return self._reject(refusal)
        self._decided = True
        headers = [("Upgrade", b"websocket"), ("Connection", b"Upgrade"),
                   ("Sec-WebSocket-Accept", accept_token(nonce))]
        if protocol is None:
            protocol = self._protocol(request)
        if protocol is not None:
            # latin-1: a token protocol is echoed byte for byte as it was offered
            headers.append(("Sec-WebSocket-Protocol", protocol.encode("latin-1")))
        trailing = bytes(self._conn.trailing_data[0]) + bytes(extra)
        return Accepted(http_response(101, headers), trailing, user, protocol, claims)

    def _protocol(self, request: h11.Request) -> str | None:
        """The first of ours the client offered, or None."""
        if not self.protocols:
            return None
        offered = set(_offered(request))
        return next((p for p in self.protocols if p in offered), None)

    def _reject(self, refusal: _Refusal) -> Rejected:
        self._decided = True
        status = refusal.status
        body = f"{status} {_REASON_PHRASES[status]}\n".encode("ascii")
        return Rejected(status, http_response(status, refusal.headers, body), refusal.reason)

    def _parse(self, head: bytes) -> h11.Request | None:
        """The request once its head is complete and bodiless, else None (need more)."""
        if not self._method_ok:
            self._check_method(head)
        if head:
            self._conn.receive_data(head)
        try:
            event = self._conn.next_event()
            if event is h11.NEED_DATA:
                return None
            assert isinstance(event, h11.Request), event  # h11: the first event of a server
            self._check_framing(event)
            end = self._conn.next_event()
        except h11.RemoteProtocolError as e:
            # h11's message may quote the offending line (an Authorization header, say):
            # log only its gist, the words before the first colon.
            gist = str(e).split(":", 1)[0]
            raise _Refusal(431 if e.error_status_hint == 431 else 400,
                           f"malformed HTTP request ({gist})") from None
        if not isinstance(end, h11.EndOfMessage):  # cannot happen without a body
            raise _Refusal(400, "request with a body")
        return event

    def _check_method(self, head: bytes) -> None:
        # Decide on the method from the first bytes: a TLS ClientHello sent to a plain
        # port, or a POST, is answered at once instead of waiting for a head that may
        # never end (and then for the handshake timeout).
        self._start = (self._start + head)[:_MAX_METHOD + 1]
        match = _METHOD_RE.match(self._start)
        assert match is not None  # the pattern matches every string
        method, after = match.groups()
        if after == b" " and method:
            if method != b"GET":
                raise _Refusal(405, f"method {_shown(method)}", [("Allow", b"GET")])
            self._method_ok = True
        elif after or len(method) > _MAX_METHOD:
            raise _Refusal(400, "not an HTTP request")

    def _check_framing(self, request: h11.Request) -> None:
        """Bounds, version and body: checks of the HTTP message itself."""
        if len(request.headers) > MAX_HEADERS:
            raise _Refusal(431, f"{len(request.headers)} header lines (at most {MAX_HEADERS})")
        if request.http_version != b"1.1":
            raise _Refusal(400, f"HTTP/{request.http_version.decode('ascii')} "
                                "(WebSocket needs HTTP/1.1)")
        for name, value in request.headers:
            if name == b"transfer-encoding" or (name == b"content-length"
                                                and value.strip() != b"0"):
                raise _Refusal(400, "request with a body")

    def _check(self, request: h11.Request
               ) -> tuple[bytes, str | None, Claims | None, str | None]:
        """The WebSocket checks in order: ``(key, user, claims, protocol)``: user None
        when auth is off or a token got in, claims None without a token, protocol the
        token's subprotocol when it came as one."""
        headers: dict[bytes, list[bytes]] = {}
        for name, value in request.headers:
            headers.setdefault(name, []).append(value)
        path = _path_of(request.target)
        if path != self.path:
            raise _Refusal(404, f"wrong path {_shown(path)}")
        if not _is_upgrade(headers):
            raise _Refusal(426, "not a WebSocket upgrade", _UPGRADE_HEADERS)
        version = headers.get(b"sec-websocket-version", [])
        if [v.strip() for v in version] != [b"13"]:
            shown = _shown(b", ".join(version)) if version else "missing"
            raise _Refusal(426, f"Sec-WebSocket-Version {shown}", _UPGRADE_HEADERS)
        key = _valid_key(headers.get(b"sec-websocket-key", []))
        if key is None:
            raise _Refusal(400, "missing or malformed Sec-WebSocket-Key")
        self._check_origin(headers.get(b"origin", []))
        if self.token_check is not None:
            presented = self._token(request)
            if presented is not None:
                claims, protocol = presented
                return key, None, claims, protocol
        return key, self._authenticate(headers.get(b"authorization", [])), None, None

    def _token(self, request: h11.Request) -> tuple[Claims, str | None] | None:
        """The claims of the token the request presents and the subprotocol it came as
        (None: in the query); None when it presents none. _Refusal (401) for a token
        refused, or more than one."""
        assert self.token_check is not None
        in_query = _query_tokens(request.target)
        as_protocol = [p for p in _offered(request) if p.startswith(PROTOCOL_PREFIX)]
        if not in_query and not as_protocol:
            return None
        challenge = [("WWW-Authenticate", CHALLENGE)]
        if len(in_query) + len(as_protocol) > 1:
            raise _Refusal(401, "more than one token presented", challenge)
        protocol = as_protocol[0] if as_protocol else None
        text = protocol[len(PROTOCOL_PREFIX):] if protocol is not None else in_query[0]
        where = "subprotocol" if protocol is not None else "query"
        try:
            return self.token_check(text), protocol
        except TokenError as e:
            raise _Refusal(401, f"token ({where}) refused: {e}", challenge) from None

    def _check_origin(self, values: list[bytes]) -> None:
        if self.origins is None or not values:
            return
        origin = values[0].strip().decode("latin-1").lower()
        if len(values) > 1 or origin not in self.origins:
            raise _Refusal(403, f"origin {_shown(b', '.join(values))} not allowed")

    def _authenticate(self, values: list[bytes]) -> str | None:
        if self.auth is None:
            return None
        value = values[0] if len(values) == 1 else None
        user = self.auth(value)  # called on None too: a refusal costs the same either way
        if user is not None:
            return user
        credentials = parse_basic_authorization(value) if value is not None else None
        if credentials is not None:
            reason = f"authentication failed for user {_shown(credentials[0].encode())}"
        elif values:
            reason = "unusable Authorization header"
        else:
            reason = "no credentials"
        raise _Refusal(401, reason, [("WWW-Authenticate", CHALLENGE)])


def _valid_key(values: list[bytes]) -> bytes | None:
    """The one key, if it is base64 of 16 bytes (RFC 6455 §4.1 item 7, §4.2.1 item 5)."""
    if len(values) != 1:
        return None
    key = values[0].strip()
    try:
        return key if len(base64.b64decode(key, validate=True)) == 16 else None
    except binascii.Error:
        return None

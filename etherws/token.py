"""Peer tokens: short-lived HMAC tokens for peers that cannot send an Authorization
header, browsers above all (pure: no I/O, no clock; ``now`` is wall-clock seconds).

``etherws-ctl token`` has the supervisor mint one with the switch's secret key; a peer
presents it in the request target's query (``ws://host/path?token=T``) or, when it cannot
change the URL, as the ``Sec-WebSocket-Protocol`` value ``etherws.token.T``; the peer
worker verifies it with the same key. Wall-clock time, not a monotonic clock: a token
must stay good across a restart of the supervisor, and a reboot.

Format (a contract; version 1)::

    token   = b64url(payload) "." b64url(tag)         (RFC 4648 §5, without padding)
    payload = version     1 byte   (1)
              expires     8 bytes  big-endian unix seconds: refused from this second on
              vlan        2 bytes  the VLAN the peer is bound to (0: none)
              max_macs    2 bytes  most source MACs the peer may use (0: no own limit)
              nonce       8 bytes  random: the token's id (one connection at a time)
    tag     = HMAC-SHA256(key, payload), first 16 bytes

Every character is an RFC 9110 tchar (letters, digits, ``-``, ``_``, ``.``), so a token is
valid as a subprotocol name and needs no escaping in a URL. A token is bearer
credentials: whoever holds it gets in until it expires, so it is never logged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from dataclasses import dataclass

from etherws.errors import EtherwsError

VERSION = 1
KEY_BYTES = 32
"""Length of a secret key the supervisor makes; shorter keys are refused."""
NONCE_BYTES = 8
TAG_BYTES = 16
"""128 bits of HMAC-SHA256: far beyond what an online guesser can try."""
MAX_VLAN = 4094
MAX_MACS = 4096
"""Bound on a token's MAC quota (a quota is further bounded by the broker's per-port limit)."""
PROTOCOL_PREFIX = "etherws.token."
"""A ``Sec-WebSocket-Protocol`` value ``etherws.token.<token>`` carries a token."""
QUERY_KEY = "token"
"""``?token=<token>`` in the request target carries a token."""

_PAYLOAD = struct.Struct(">BQHH8s")
_PAYLOAD_CHARS = (_PAYLOAD.size * 4 + 2) // 3  # base64 without padding
_TAG_CHARS = (TAG_BYTES * 4 + 2) // 3
TOKEN_CHARS = _PAYLOAD_CHARS + 1 + _TAG_CHARS
"""The length of every version-1 token."""
MAX_TEXT = 256
"""Longer input is refused before any decoding (a later version may be longer)."""
_B64URL = re.compile(r"[A-Za-z0-9_-]+")


class TokenError(EtherwsError):
    """A token that is refused; the message is one line for the log, never the token."""


@dataclass(frozen=True)
class Claims:
    """What a good token grants."""

    expires: int
    """Unix seconds from which it is refused."""
    vlan: int
    """The VLAN its peer is bound to (0: none)."""
    max_macs: int
    """Most source MACs its peer may use (0: no limit of its own)."""
    nonce: bytes
    """The token's id, 8 random bytes."""

    @property
    def id(self) -> str:
        """The token's id as 16 hex digits: safe to log and to name a lock file after."""
        return self.nonce.hex()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    """Decode unpadded base64url; TokenError for anything else."""
    if not _B64URL.fullmatch(text):
        raise TokenError("malformed token")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("malformed token") from None
    if _b64(data) != text:  # non-canonical trailing bits: one token, one spelling
        raise TokenError("malformed token")
    return data


def _tag(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()[:TAG_BYTES]


def _check_key(key: bytes) -> None:
    if len(key) < KEY_BYTES:
        raise ValueError(f"a token key has at least {KEY_BYTES} bytes, not {len(key)}")


def mint(key: bytes, now: float, ttl_s: float, vlan: int = 0, max_macs: int = 0,
         nonce: bytes = b"") -> str:
    """A token good from ``now`` for ``ttl_s`` seconds (its expiry rounded up to a whole
    second), binding its peer to ``vlan`` (0: none) and ``max_macs`` source MACs (0: no
    limit of its own); ``nonce``: NONCE_BYTES random bytes (the caller's, so this stays
    pure). ValueError for arguments out of range."""
    _check_key(key)
    if not ttl_s > 0:
        raise ValueError(f"the lifetime must be positive, not {ttl_s!r}")
    if not 0 <= vlan <= MAX_VLAN:
        raise ValueError(f"a token's VLAN is 1..{MAX_VLAN} (0: none), not {vlan}")
    if not 0 <= max_macs <= MAX_MACS:
        raise ValueError(f"a token's MAC quota is 1..{MAX_MACS} (0: none), not {max_macs}")
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"a nonce has {NONCE_BYTES} bytes, not {len(nonce)}")
    expires = -int(-(now + ttl_s) // 1)  # ceil: a token never expires before its ttl
    payload = _PAYLOAD.pack(VERSION, expires, vlan, max_macs, nonce)
    return f"{_b64(payload)}.{_b64(_tag(key, payload))}"


def verify(key: bytes, text: str, now: float) -> Claims:
    """The claims of ``text`` if it is a good token at ``now``; TokenError (malformed,
    bad signature, unknown version, expired) otherwise.

    Cheap checks first, the HMAC before any field is believed, compared in constant time
    (``hmac.compare_digest``): how long a refusal takes says nothing about the tag."""
    _check_key(key)
    if len(text) > MAX_TEXT:
        raise TokenError(f"malformed token (longer than {MAX_TEXT} characters)")
    body, dot, tag_text = text.partition(".")
    if not dot or len(body) != _PAYLOAD_CHARS or len(tag_text) != _TAG_CHARS:
        raise TokenError("malformed token")
    payload, tag = _unb64(body), _unb64(tag_text)
    if not hmac.compare_digest(_tag(key, payload), tag):
        raise TokenError("bad token signature")
    version, expires, vlan, max_macs, nonce = _PAYLOAD.unpack(payload)
    if version != VERSION:
        raise TokenError(f"token of unknown version {version}")
    if vlan > MAX_VLAN or max_macs > MAX_MACS:
        raise TokenError("malformed token (claims out of range)")
    if now >= expires:
        raise TokenError(f"token expired {int(now - expires)} s ago")
    return Claims(expires, vlan, max_macs, nonce)

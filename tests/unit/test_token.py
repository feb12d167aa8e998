"""Peer tokens: minted and verified with ``now`` passed in; any change refuses them."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etherws import token
from etherws.token import Claims, TokenError, mint, verify

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
NONCE = b"\x01\x02\x03\x04\x05\x06\x07\x08"
NOW = 1_800_000_000.0
TCHAR = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 §5.6.2


def test_a_token_gives_back_its_claims() -> None:
    text = mint(KEY, NOW, 3600, vlan=10, max_macs=2, nonce=NONCE)
    assert verify(KEY, text, NOW) == Claims(int(NOW) + 3600, 10, 2, NONCE)
    assert verify(KEY, text, NOW).id == "0102030405060708"


def test_a_token_is_one_fixed_length_string_of_tchars() -> None:
    text = mint(KEY, NOW, 60, nonce=NONCE)
    assert len(text) == token.TOKEN_CHARS
    assert TCHAR.fullmatch(text)
    assert TCHAR.fullmatch(token.PROTOCOL_PREFIX + text)


def test_expiry_is_rounded_up_and_refused_from_its_second_on() -> None:
    text = mint(KEY, NOW + 0.25, 10, nonce=NONCE)
    expires = int(NOW) + 11
    assert verify(KEY, text, NOW).expires == expires
    assert verify(KEY, text, expires - 0.001).expires == expires
    with pytest.raises(TokenError, match="expired 0 s ago"):
        verify(KEY, text, expires)
    with pytest.raises(TokenError, match="expired 100 s ago"):
        verify(KEY, text, expires + 100)


def test_another_key_refuses_it() -> None:
    with pytest.raises(TokenError, match="bad token signature"):
        verify(OTHER_KEY, mint(KEY, NOW, 60, nonce=NONCE), NOW)


@pytest.mark.parametrize("text", [
    "", ".", "abc", "a.b", "x" * 1000,
    "A" * 28 + "." + "A" * 21,            # a tag too short
    "A" * 28 + "A" + "A" * 22,            # no dot
    "A" * 28 + ".." + "A" * 21,
    "A" * 27 + "=." + "A" * 22,           # padding is not a token character
    "A" * 27 + "+." + "A" * 22,           # base64 (not url) alphabet
    "A" * 28 + "." + "A" * 21 + "B",      # non-canonical trailing bits
    "A" * 28 + "." + "A" * 21 + "\u00e9",
])
def test_malformed_text_is_refused_as_malformed(text: str) -> None:
    with pytest.raises(TokenError, match="malformed"):
        verify(KEY, text, NOW)


def test_input_length_is_bounded_before_decoding() -> None:
    with pytest.raises(TokenError, match="longer than 256"):
        verify(KEY, "A" * 10_000_000, NOW)


def _resigned(payload: bytes) -> str:
    """A token with ``payload`` and a good tag: checks behind the signature."""
    tag = token._tag(KEY, payload)
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
    return f"{b64(payload)}.{b64(tag)}"


def test_an_unknown_version_is_refused_even_when_signed() -> None:
    payload = token._PAYLOAD.pack(2, int(NOW) + 60, 0, 0, NONCE)
    with pytest.raises(TokenError, match="unknown version 2"):
        verify(KEY, _resigned(payload), NOW)


@pytest.mark.parametrize("vlan,max_macs", [(4095, 0), (65535, 0), (0, token.MAX_MACS + 1)])
def test_claims_out_of_range_are_refused_even_when_signed(vlan: int, max_macs: int) -> None:
    payload = token._PAYLOAD.pack(1, int(NOW) + 60, vlan, max_macs, NONCE)
    with pytest.raises(TokenError, match="out of range"):
        verify(KEY, _resigned(payload), NOW)


@pytest.mark.parametrize("kwargs,match", [
    ({"ttl_s": 0}, "positive"), ({"ttl_s": -1}, "positive"),
    ({"ttl_s": float("nan")}, "positive"),
    ({"vlan": -1}, "VLAN"), ({"vlan": 4095}, "VLAN"),
    ({"max_macs": -1}, "quota"), ({"max_macs": token.MAX_MACS + 1}, "quota"),
    ({"nonce": b"short"}, "nonce"), ({"key": b"k" * 31}, "at least 32"),
])
def test_mint_refuses_arguments_out_of_range(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"key": KEY, "now": NOW, "ttl_s": 60, "nonce": NONCE, **kwargs}
    with pytest.raises(ValueError, match=match):
        mint(**args)  # type: ignore[arg-type]


def test_verify_refuses_a_short_key() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        verify(b"short", mint(KEY, NOW, 60, nonce=NONCE), NOW)


def test_refusals_never_quote_the_token() -> None:
    text = mint(KEY, NOW, 1, nonce=NONCE)
    for t, now in [(text, NOW + 5), (text[:-1] + "A", NOW), (text + "x", NOW)]:
        with pytest.raises(TokenError) as info:
            verify(KEY, t, now)
        assert text[:10] not in str(info.value) and text[-10:] not in str(info.value)


claims = st.tuples(st.integers(0, token.MAX_VLAN), st.integers(0, token.MAX_MACS),
                   st.binary(min_size=8, max_size=8), st.floats(1, 86400 * 30))


@given(claims, st.floats(0, 4e9))
def test_every_minted_token_verifies_until_it_expires(c: tuple[int, int, bytes, float],
                                                      now: float) -> None:
    vlan, max_macs, nonce, ttl = c
    text = mint(KEY, now, ttl, vlan, max_macs, nonce)
    got = verify(KEY, text, now)
    assert (got.vlan, got.max_macs, got.nonce) == (vlan, max_macs, nonce)
    assert now + ttl <= got.expires < now + ttl + 1
    with pytest.raises(TokenError, match="expired"):
        verify(KEY, text, got.expires)


@given(claims, st.data())
def test_changing_any_character_refuses_the_token(c: tuple[int, int, bytes, float],
                                                  data: st.DataObject) -> None:
    vlan, max_macs, nonce, ttl = c
    text = mint(KEY, NOW, ttl, vlan, max_macs, nonce)
    i = data.draw(st.integers(0, len(text) - 1))
    new = data.draw(st.characters(codec="ascii").filter(lambda ch: ch != text[i]))
    with pytest.raises(TokenError):
        verify(KEY, text[:i] + new + text[i + 1:], NOW)


@given(claims, st.data())
def test_flipping_any_bit_of_payload_or_tag_refuses_the_token(
        c: tuple[int, int, bytes, float], data: st.DataObject) -> None:
    vlan, max_macs, nonce, ttl = c
    text = mint(KEY, NOW, ttl, vlan, max_macs, nonce)
    body, _, tag = text.partition(".")
    raw = bytearray(base64.urlsafe_b64decode(body + "=") + base64.urlsafe_b64decode(tag + "=="))
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
    with pytest.raises(TokenError, match="signature"):
        verify(KEY, f"{b64(bytes(raw[:21]))}.{b64(bytes(raw[21:]))}", NOW)


@given(st.text(max_size=300))
def test_arbitrary_text_is_refused_with_a_token_error(text: str) -> None:
    with pytest.raises(TokenError):
        verify(KEY, text, NOW)

"""HTTP Basic authentication against an Apache htpasswd table (pure: no I/O, no clock).

File format (what Apache's ``htpasswd`` writes, read the way ``mod_authn_file`` reads it):
one ``user:hash`` a line; leading and trailing white space is ignored; blank lines and
lines starting with ``#`` are comments; anything after a second ``:`` is ignored (Apache
ignores it too). Accepted hashes:

=================  ===================  ==========================================
scheme             ``htpasswd`` option  verified by
=================  ===================  ==========================================
``$2y$/$2b$/$2a$`` ``-B`` (bcrypt)      pyca ``bcrypt`` (``checkpw``, constant time)
``$apr1$``         ``-m`` (default)     libpass ``apr_md5_crypt``
``$5$``            ``-2`` (SHA-256)     libpass ``sha256_crypt``
``$6$``            ``-5`` (SHA-512)     libpass ``sha512_crypt``
``{SHA}``          ``-s``               ``hashlib`` + ``hmac.compare_digest``
=================  ===================  ==========================================

``{SHA}`` is unsalted and cheap to brute-force; it is accepted because etherws 1.3 used it.

**Unsupported entries refuse the whole file.** DES ``crypt()`` (``-d``, 8-character
limit), plain text (``-p``), ``$1$`` and anything unknown make :func:`parse` raise
:class:`HtpasswdError` naming the line, never the content (it could be a password). We
refuse rather than skip the user: a file that silently loses users is worse than one
that is loudly rejected while the last good table stays in force (``etherws.runtime.authfile``).

Passlib 1.7.4 is deliberately not used: with bcrypt 5 its backend self-test dies on a
>72-byte password, so it cannot even hash "secret" (pypiserver issue #668); libpass is
its maintained fork and imports as ``passlib``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import bcrypt

# libpass ships no type information (the ignore is for mypy --strict).
from passlib.handlers.md5_crypt import apr_md5_crypt  # type: ignore[import-untyped]
from passlib.handlers.sha2_crypt import sha256_crypt, sha512_crypt  # type: ignore[import-untyped]

from etherws.errors import EtherwsError

#: The value of the ``WWW-Authenticate`` header that goes with a 401 answer.
CHALLENGE = b'Basic realm="etherws"'

#: bcrypt looks at 72 bytes only. bcrypt 5 raises on longer input and older versions
#: truncated silently (so a long password's prefix would log in): we refuse instead.
BCRYPT_MAX_PASSWORD_BYTES = 72
#: Longer passwords are refused by every scheme: SHA-crypt work grows with the length.
MAX_PASSWORD_BYTES = 1024
#: Longest ``Authorization`` header value parsed (enough for 767 bytes of user:password).
MAX_AUTHORIZATION_LEN = 1024

_B64CRYPT = "[./0-9A-Za-z]"  # the crypt(3) base-64 alphabet
_BCRYPT_RE = re.compile(rf"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\${_B64CRYPT}{{53}}")
_SHA1_RE = re.compile(r"\{SHA\}[A-Za-z0-9+/]{27}=")
_ROUNDS_RE = re.compile(r"\$[56]\$rounds=([1-9][0-9]{0,8})\$")
_DES_RE = re.compile(f"{_B64CRYPT}{{13}}")
_TOKEN68_RE = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_CTL_RE = re.compile(r"[\x00-\x1f\x7f]")  # RFC 7617 §2: no control characters

#: What unknown users are checked against when the table is empty (so that an empty
#: table costs the same as htpasswd's default). Made with bcrypt cost 5; the password
#: is irrelevant because the result of a dummy check is always thrown away.
_EMPTY_TABLE_DUMMY = "$2b$05$3iro/MBFGPsWrKpABXlRIOqy6WaHFLOg3YPHN9xYj4.6kDI3D1/jG"
#: The password used for dummy checks (no NUL, under 72 bytes: valid for every scheme).
_DUMMY_SECRET = b"etherws: dummy password"


class HtpasswdError(EtherwsError):
    """An htpasswd file that cannot be used; names the line, never its content."""

    def __init__(self, lineno: int, reason: str) -> None:
        super().__init__(f"line {lineno}: {reason}")
        self.lineno = lineno


def _check_bcrypt(secret: bytes, stored: str) -> bool:
    return bcrypt.checkpw(secret, stored.encode("ascii"))


def _check_sha1(secret: bytes, stored: str) -> bool:
    expected = base64.b64decode(stored[len("{SHA}"):], validate=True)
    return hmac.compare_digest(hashlib.sha1(secret).digest(), expected)


def _libpass_parses(handler: Any) -> Callable[[str], bool]:
    def well_formed(stored: str) -> bool:
        try:
            handler.from_string(stored)
        except ValueError:
            return False
        return True
    return well_formed


def _libpass_checks(handler: Any) -> Callable[[bytes, str], bool]:
    def check(secret: bytes, stored: str) -> bool:
        return bool(handler.verify(secret, stored))
    return check


def _bcrypt_work(stored: str) -> float:
    return 2.0 ** int(stored[4:6])  # the cost field is log2 of the key-setup rounds


def _sha_crypt_work(per_round: float) -> Callable[[str], float]:
    def work(stored: str) -> float:
        rounds = _ROUNDS_RE.match(stored)
        return per_round * (int(rounds.group(1)) if rounds else 5000)  # crypt(3) default
    return work


@dataclass(frozen=True)
class _Scheme:
    """One accepted hash scheme: how to recognise, validate, verify and price it."""

    name: str
    prefixes: tuple[str, ...]
    well_formed: Callable[[str], bool]
    check: Callable[[bytes, str], bool]  # may raise ValueError on odd input
    #: Relative verification cost (≈ 47 µs units, measured with bcrypt 5.0 and libpass
    #: 1.9.4), only to pick the costliest entry as the unknown-user dummy.
    work: Callable[[str], float]
    max_password_bytes: int = MAX_PASSWORD_BYTES


_SCHEMES = (
    _Scheme("bcrypt", ("$2y$", "$2b$", "$2a$"), lambda h: bool(_BCRYPT_RE.fullmatch(h)),
            _check_bcrypt, _bcrypt_work, BCRYPT_MAX_PASSWORD_BYTES),
    _Scheme("apr1", ("$apr1$",), _libpass_parses(apr_md5_crypt),
            _libpass_checks(apr_md5_crypt), lambda h: 6.0),
    _Scheme("SHA-256-crypt", ("$5$",), _libpass_parses(sha256_crypt),
            _libpass_checks(sha256_crypt), _sha_crypt_work(0.0057)),
    _Scheme("SHA-512-crypt", ("$6$",), _libpass_parses(sha512_crypt),
            _libpass_checks(sha512_crypt), _sha_crypt_work(0.0079)),
    _Scheme("{SHA}", ("{SHA}",), lambda h: bool(_SHA1_RE.fullmatch(h)),
            _check_sha1, lambda h: 0.02),
)


def _scheme_of(stored: str) -> _Scheme | None:
    for scheme in _SCHEMES:
        if stored.startswith(scheme.prefixes):
            return scheme
    return None


def _unsupported(stored: str) -> str:
    """Why ``stored`` is refused, naming the scheme but never quoting the text."""
    if stored.startswith("$1$"):
        return "unsupported hash scheme MD5-crypt ($1$)"
    if _DES_RE.fullmatch(stored):
        return "unsupported hash scheme DES crypt (or a plain-text password)"
    return "unsupported hash (plain text or an unknown scheme)"


def _costliest(hashes: Iterable[object]) -> str:
    """The most expensive well-formed hash of ``hashes`` (the empty-table dummy if none)."""
    best, best_work = _EMPTY_TABLE_DUMMY, -1.0
    for stored in hashes:
        scheme = _scheme_of(stored) if isinstance(stored, str) else None
        if scheme is not None and isinstance(stored, str) and scheme.well_formed(stored):
            work = scheme.work(stored)
            if work > best_work:
                best, best_work = stored, work
    return best


class HtpasswdTable(Mapping[str, str]):
    """An immutable ``user -> hash`` table, as :func:`parse` returns it.

    It also carries :attr:`dummy_hash`, the costliest entry, computed once: unknown users
    are checked against it so that they take as long as the slowest known user. In a file
    that mixes schemes, users of a cheaper scheme are still distinguishable by timing;
    keep one scheme per file for full protection.
    """

    __slots__ = ("_entries", "dummy_hash")

    def __init__(self, entries: Mapping[str, str] | None = None) -> None:
        self._entries: dict[str, str] = dict(entries or {})
        self.dummy_hash: str = _costliest(self._entries.values())

    def __getitem__(self, user: str) -> str:
        return self._entries[user]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        # Users only: hashes have no business in logs or tracebacks.
        return f"HtpasswdTable(users={sorted(self._entries)!r})"


def parse(text: str) -> HtpasswdTable:
    """Parse htpasswd text into a table; raises :class:`HtpasswdError` on any bad line.

    Bad lines: no ``:``, an empty user or hash, a duplicate user, a malformed hash of an
    accepted scheme, or an unsupported scheme (see the module docstring).
    """
    entries: dict[str, str] = {}
    first_seen: dict[str, int] = {}
    for lineno, raw in enumerate(text.split("\n"), start=1):
        # Apache's ap_cfg_getline strips leading and trailing white space (and \r).
        line = raw.strip(" \t\r\v\f")
        if not line or line.startswith("#"):
            continue
        user, colon, rest = line.partition(":")
        stored = rest.partition(":")[0]  # mod_authn_file ignores any further fields
        if not colon or not user or not stored:
            raise HtpasswdError(lineno, "expected user:hash")
        scheme = _scheme_of(stored)
        if scheme is None:
            raise HtpasswdError(lineno, _unsupported(stored))
        if not scheme.well_formed(stored):
            raise HtpasswdError(lineno, f"malformed {scheme.name} hash")
        if user in entries:
            # Apache would silently use the first; a duplicate is almost always a mistake.
            raise HtpasswdError(lineno, f"duplicate user (first on line {first_seen[user]})")
        entries[user] = stored
        first_seen[user] = lineno
    return HtpasswdTable(entries)


def dump(table: Mapping[str, str]) -> str:
    """htpasswd text that :func:`parse` reads back into the same table."""
    return "".join(f"{user}:{stored}\n" for user, stored in table.items())


def dummy_hash(table: Mapping[str, str]) -> str:
    """The hash an unknown user's attempt is checked against (see :class:`HtpasswdTable`)."""
    if isinstance(table, HtpasswdTable):
        return table.dummy_hash
    return _costliest(table.values())  # a plain mapping: found on every call


def _secret(password: object) -> bytes | None:
    """The password's bytes, or None when no htpasswd entry could ever match it."""
    if not isinstance(password, str):
        return None
    try:
        secret = password.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: not text any client could have sent
        return None
    # htpasswd is C: a password cannot contain NUL, and some bcrypt builds stop at one.
    return None if b"\x00" in secret else secret


def _check(stored: str, secret: bytes) -> bool:
    """One verification of ``secret`` against ``stored``; False for anything odd."""
    scheme = _scheme_of(stored)
    if scheme is None or len(secret) > scheme.max_password_bytes:
        return False
    try:
        return scheme.check(secret, stored)
    except ValueError:  # a malformed hash (the libraries raise ValueError subclasses)
        return False


def verify(table: Mapping[str, str], user: str, password: str) -> bool:
    """True when ``password`` is ``user``'s; never raises, whatever the input.

    Every call does exactly one hash verification, so failures cost the same whatever
    the reason: an unknown user, a password too long for the scheme (over 72 bytes for
    bcrypt), non-UTF-8 text or NUL, or a garbage hash all spend a check of the same cost
    (against the user's own hash, or :func:`dummy_hash` for unknown users) and return
    False. The comparisons inside the libraries are constant-time.
    """
    stored = table.get(user) if isinstance(user, str) else None
    secret = _secret(password)
    scheme = _scheme_of(stored) if isinstance(stored, str) else None
    if (stored is None or scheme is None or secret is None
            or len(secret) > scheme.max_password_bytes):
        # Spend the same work as a real check and throw the answer away: a refusal must
        # not be faster than a wrong password (no user enumeration by timing).
        burn = stored if isinstance(stored, str) and scheme is not None else dummy_hash(table)
        _check(burn, _DUMMY_SECRET)
        return False
    return _check(stored, secret)


def parse_basic_authorization(header_value: bytes | str) -> tuple[str, str] | None:
    """``(user, password)`` from an ``Authorization`` value (RFC 7617), or None.

    ``Basic`` is matched case-insensitively (RFC 7235 §2.1), followed by one or more
    spaces and standard, padded base64 of UTF-8 ``user:password`` (split at the first
    ``:``; the password may contain more). None for anything else: another scheme, a
    value over :data:`MAX_AUTHORIZATION_LEN`, non-ASCII header bytes, bad base64, no
    colon, non-UTF-8 credentials, or control characters (RFC 7617 §2). Callers that
    want uniform timing use :func:`authenticate`, which spends a check on None too.
    """
    if isinstance(header_value, (bytes, bytearray)):
        try:
            value = bytes(header_value).decode("ascii")
        except UnicodeDecodeError:
            return None
    elif isinstance(header_value, str):
        value = header_value
    else:
        return None
    if len(value) > MAX_AUTHORIZATION_LEN or not value.isascii():
        return None
    scheme, space, token = value.strip(" \t").partition(" ")
    token = token.lstrip(" ")
    if not space or scheme.lower() != "basic" or not _TOKEN68_RE.fullmatch(token):
        return None
    try:
        text = base64.b64decode(token, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = text.partition(":")
    if not colon or _CTL_RE.search(text):
        return None
    return user, password


def authenticate(table: Mapping[str, str], header_value: bytes | str | None) -> str | None:
    """The authenticated user for an ``Authorization`` value, or None (answer 401).

    A missing or unparseable header costs one dummy verification like every other
    failure, so the answer time says nothing about why it failed. On None the caller
    answers ``401`` with ``WWW-Authenticate:`` :data:`CHALLENGE`.
    """
    credentials = parse_basic_authorization(header_value) if header_value is not None else None
    if credentials is None:
        _check(dummy_hash(table), _DUMMY_SECRET)
        return None
    user, password = credentials
    return user if verify(table, user, password) else None

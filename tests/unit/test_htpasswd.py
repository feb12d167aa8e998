"""htpasswd parsing, password verification and Basic-auth header parsing (pure).

The fixtures in tests/fixtures/htpasswd were written by Debian's real ``htpasswd``
(apache2-utils 2.4.71, see regenerate.sh) from passwords.tsv, which these tests read too.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import bcrypt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from etherws import htpasswd
from etherws.errors import EtherwsError
from etherws.htpasswd import (
    CHALLENGE,
    HtpasswdError,
    HtpasswdTable,
    authenticate,
    dummy_hash,
    parse,
    parse_basic_authorization,
    verify,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "htpasswd"
SCHEMES = ["sha1", "bcrypt", "apr1", "sha256", "sha512"]


def _passwords() -> dict[str, str]:
    rows = (line.split("\t", 1) for line in
            (FIXTURES / "passwords.tsv").read_text(encoding="utf-8").splitlines()
            if line and not line.startswith("#"))
    return {user: password for user, password in rows}


PASSWORDS = _passwords()
LONG72, LONG73 = PASSWORDS["long72"], PASSWORDS["long73"]


def load(name: str) -> HtpasswdTable:
    """A fixture file, parsed."""
    return parse((FIXTURES / f"{name}.htpasswd").read_text(encoding="utf-8"))


def basic(credentials: bytes) -> str:
    """An Authorization header value for raw ``user:password`` bytes."""
    return "Basic " + base64.b64encode(credentials).decode("ascii")


# --- the fixtures, scheme by scheme ------------------------------------------------

def test_passwords_list_covers_the_edge_cases() -> None:
    assert len(LONG72.encode()) == 72 and len(LONG73.encode()) == 73
    assert ":" in PASSWORDS["colon"] and not PASSWORDS["unicode"].isascii()
    assert PASSWORDS["empty"] == "" and not "jürgen".isascii()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_fixture_user_logs_in(scheme: str) -> None:
    table = load(scheme)
    assert set(PASSWORDS) <= set(table)
    for user, password in PASSWORDS.items():
        if scheme == "bcrypt" and user == "long73":
            continue  # refused by design, see test_bcrypt_refuses_over_72_bytes
        assert verify(table, user, password), (scheme, user)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_wrong_passwords_and_unknown_users_are_refused(scheme: str) -> None:
    table = load(scheme)
    for user, password in PASSWORDS.items():
        assert not verify(table, user, password + "x"), (scheme, user)
        assert not verify(table, user, password.upper() + "X"), (scheme, user)
    assert not verify(table, "alice", "")
    assert not verify(table, "alice", "s3cret")  # a prefix
    assert not verify(table, "colon", "pa")  # the part before the password's first ':'
    assert not verify(table, "mallory", "s3cret!")
    assert not verify(table, "Alice", "s3cret!")  # user names are case-sensitive
    assert not verify(table, "", "")


@pytest.mark.parametrize("scheme, prefix", [
    ("sha1", "{SHA}"), ("bcrypt", "$2y$05$"), ("apr1", "$apr1$"),
    ("sha256", "$5$"), ("sha512", "$6$"),
])
def test_fixtures_are_what_htpasswd_writes(scheme: str, prefix: str) -> None:
    assert all(h.startswith(prefix) for h in load(scheme).values())


def test_explicit_rounds_are_accepted() -> None:
    for scheme, prefix in (("sha256", "$5$rounds=6000$"), ("sha512", "$6$rounds=6000$")):
        table = load(scheme)
        assert table["rounds"].startswith(prefix)
        assert verify(table, "rounds", "s3cret!") and not verify(table, "rounds", "s3cret?")


def test_bcrypt_refuses_over_72_bytes() -> None:
    table = load("bcrypt")
    assert verify(table, "long72", LONG72)  # exactly 72 bytes: fine
    # htpasswd hashed only the first 72 of long73's bytes (bcrypt's limit), so the full
    # 73-byte password is refused, never an error; its 72-byte prefix is what was stored.
    assert not verify(table, "long73", LONG73)
    assert verify(table, "long73", LONG73[:72])
    assert not verify(table, "long72", LONG72 + "c")
    assert not verify(table, "alice", "s3cret!" + "x" * 100)
    # Multi-byte characters count in bytes: 37 × 'é' is 74 bytes.
    assert not verify(table, "alice", "é" * 37)


def test_other_schemes_take_long_passwords() -> None:
    for scheme in ("sha1", "apr1", "sha256", "sha512"):
        assert verify(load(scheme), "long73", LONG73), scheme


def test_very_long_passwords_are_refused_everywhere() -> None:
    table = {"u": "{SHA}" + base64.b64encode(hashlib.sha1(b"a" * 2000).digest()).decode()}
    assert not verify(table, "u", "a" * 2000)  # over MAX_PASSWORD_BYTES, even if right
    assert htpasswd.MAX_PASSWORD_BYTES == 1024


def test_known_answer_from_the_research_notes() -> None:
    table = parse("alice:$apr1$Xfpw34cI$iN5mAjaKmkbMCKObogHL//\n"
                  "bob:$2y$05$HXY3o9E6I41F8Rjnpj3/7.YDzMzk6z2Vp9aSqAYf9HYJ/XOAXyW6C\n"
                  "carol:$5$GejR1eqpcfm/i.1A$bF7Vc56FjffIIMVgp0Woj3uk4OE/cvPpkSgGL2SSx58\n"
                  "dave:$6$R5l7i0JabOh4vxHU$Rs2eJiv6jA0GxsWA28NNjRrCvUo6oeYAl7C2PXbNHZoY"
                  "/xwWODNI9fJdob7txqvMJfxCzxX0Q3DNxa.XMOfZ41\n"
                  "eve:{SHA}YWXIkDPDfrJ6I4yV+0kqTJdT5SE=\n")
    for user in table:
        assert verify(table, user, "s3cret!") and not verify(table, user, "s3cret?"), user


def test_2b_and_2a_bcrypt_prefixes() -> None:
    made = bcrypt.hashpw(b"s3cret!", bcrypt.gensalt(4)).decode()
    assert made.startswith("$2b$")
    table = parse(f"b:{made}\na:{'$2a$' + made[4:]}\n")
    assert verify(table, "b", "s3cret!") and verify(table, "a", "s3cret!")


# --- refusals never raise --------------------------------------------------------------

@pytest.mark.parametrize("stored", [
    "$2y$05$garbage", "$2y$99$" + "a" * 53, "$apr1$x", "$apr1$$", "$5$", "$6$rounds=10$a$b",
    "{SHA}", "{SHA}not base64!", "{SHA}" + "A" * 27 + "=", "plain", "", "$1$abc$def",
    "pEMmLj1eGW8vU", "\udcff", "$2y$05$" + "é" * 53,
])
def test_garbage_hashes_are_refusals(stored: str) -> None:
    assert verify({"u": stored}, "u", "s3cret!") is False
    assert verify({"u": stored}, "u", "") is False


@pytest.mark.parametrize("user, password", [
    ("alice", "s3cret!\x00"),   # NUL: htpasswd cannot have stored it
    ("alice", "\udcff"),        # a lone surrogate: not UTF-8-encodable text
    ("alice", None), ("alice", b"s3cret!"), (None, "s3cret!"), (b"alice", "s3cret!"),
    ("alice\x00", "s3cret!"),
])
def test_odd_inputs_are_refusals(user: object, password: object) -> None:
    for scheme in SCHEMES:
        assert verify(load(scheme), user, password) is False  # type: ignore[arg-type]


@given(user=st.text(max_size=20), password=st.text(max_size=100),
       stored=st.text(max_size=80))
def test_verify_never_raises(user: str, password: str, stored: str) -> None:
    table = {user: stored, "alice": "$apr1$Xfpw34cI$iN5mAjaKmkbMCKObogHL//"}
    assert verify(table, user, password) in (True, False)
    assert verify(table, "nobody" + user, password) is False


# --- unknown users cost the same as wrong passwords -----------------------------------

def _count_checkpw(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    calls: list[bytes] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(password)
        return real(password, hashed)
    monkeypatch.setattr(bcrypt, "checkpw", counting)
    return calls


@pytest.mark.parametrize("attempt", [
    pytest.param(lambda t: verify(t, "alice", "s3cret!"), id="right-password"),
    pytest.param(lambda t: verify(t, "alice", "wrong"), id="wrong-password"),
    pytest.param(lambda t: verify(t, "mallory", "wrong"), id="unknown-user"),
    pytest.param(lambda t: verify(t, "long73", LONG73), id="73-bytes"),
    pytest.param(lambda t: verify(t, "alice", "x" * 5000), id="5000-bytes"),
    pytest.param(lambda t: verify(t, "alice", "nul\x00"), id="nul"),
    pytest.param(lambda t: verify(t, "alice", "\udcff"), id="not-utf8"),
    pytest.param(lambda t: verify(t, None, None), id="not-str"),  # type: ignore[arg-type]
    pytest.param(lambda t: authenticate(t, None), id="no-header"),
    pytest.param(lambda t: authenticate(t, b"Basic !!!"), id="bad-base64"),
    pytest.param(lambda t: authenticate(t, "Bearer abc"), id="other-scheme"),
    pytest.param(lambda t: authenticate(t, basic(b"mallory:x")), id="header-unknown-user"),
    pytest.param(lambda t: authenticate(t, basic(b"alice:s3cret!")), id="header-right"),
])
def test_exactly_one_hash_verification_per_attempt(
        monkeypatch: pytest.MonkeyPatch, attempt: Callable[[HtpasswdTable], object]) -> None:
    table = load("bcrypt")
    calls = _count_checkpw(monkeypatch)
    attempt(table)
    assert len(calls) == 1
    # bcrypt never sees more than 72 bytes (bcrypt < 5 would silently truncate them).
    assert len(calls[0]) <= 72


def test_dummy_is_the_costliest_entry() -> None:
    apr1, bcrypt5 = load("apr1")["alice"], load("bcrypt")["alice"]
    bcrypt7 = bcrypt.hashpw(b"x", bcrypt.gensalt(7)).decode()
    sha512 = load("sha512")["rounds"]
    assert parse(f"a:{apr1}\nb:{bcrypt5}\nc:{bcrypt7}\nd:{sha512}\n").dummy_hash == bcrypt7
    assert parse(f"a:{apr1}\nd:{sha512}\n").dummy_hash == sha512
    assert dummy_hash({"a": apr1, "junk": "$2y$05$bad", "n": 5}) == apr1  # type: ignore[dict-item]
    # An empty table still spends a bcrypt check, at htpasswd's default cost.
    assert HtpasswdTable().dummy_hash.startswith("$2b$05$")
    assert dummy_hash({}).startswith("$2b$05$")


def _median_s(attempt: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        attempt()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def test_unknown_user_is_not_faster_than_wrong_password() -> None:
    table = load("bcrypt")
    wrong = _median_s(lambda: verify(table, "alice", "wrong"), 15)
    unknown = _median_s(lambda: verify(table, "mallory", "wrong"), 15)
    too_long = _median_s(lambda: verify(table, "alice", "x" * 100), 15)
    no_header = _median_s(lambda: authenticate(table, None), 15)
    # Generous factor, no absolute times: this catches a missing dummy check (a ~1000x
    # difference), not scheduler noise. The structural test above is the precise one.
    assert unknown >= 0.3 * wrong
    assert too_long >= 0.3 * wrong
    assert no_header >= 0.3 * wrong


# --- parsing files -------------------------------------------------------------------

def test_comments_blank_lines_and_whitespace() -> None:
    sha = load("sha1")["alice"]
    table = parse(f"# a comment\n\n   \n  alice:{sha}  \r\n\tbob:{sha}:extra:fields\r\n"
                  f"#carol:{sha}\n")
    assert dict(table) == {"alice": sha, "bob": sha}


def test_table_is_a_read_only_mapping_without_hashes_in_repr() -> None:
    table = load("bcrypt")
    assert table == dict(table) and len(table) == len(PASSWORDS)
    assert "$2y$" not in repr(table) and "alice" in repr(table)
    with pytest.raises(TypeError):
        table["mallory"] = "x"  # type: ignore[index]
    assert parse("") == {} and parse("# only a comment\n") == {}


@pytest.mark.parametrize("text, lineno, reason", [
    ("alice\n", 1, "expected user:hash"),
    ("# c\n:{SHA}YWXIkDPDfrJ6I4yV+0kqTJdT5SE=\n", 2, "expected user:hash"),
    ("alice:\n", 1, "expected user:hash"),
    ("alice::x\n", 1, "expected user:hash"),
    ("alice:$2y$05$tooshort\n", 1, "malformed bcrypt hash"),
    ("alice:$2y$03$" + "a" * 53 + "\n", 1, "malformed bcrypt hash"),
    ("alice:$apr1$Xfpw34cI$short\n", 1, "malformed apr1 hash"),
    ("alice:$5$rounds=999$abc$" + "a" * 43 + "\n", 1, "malformed SHA-256-crypt hash"),
    ("alice:$6$abc$short\n", 1, "malformed SHA-512-crypt hash"),
    ("alice:{SHA}c2hvcnQ=\n", 1, "malformed {SHA} hash"),
    ("alice:$1$abcdefgh$0123456789012345678901\n", 1, "MD5-crypt"),
    ("alice:pEMmLj1eGW8vU\n", 1, "DES crypt"),
    ("alice:hunter2\n", 1, "plain text or an unknown scheme"),
    ("alice:$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA\n", 1, "unknown scheme"),
    ("a:{SHA}YWXIkDPDfrJ6I4yV+0kqTJdT5SE=\n\na:{SHA}YWXIkDPDfrJ6I4yV+0kqTJdT5SE=\n",
     3, "duplicate user (first on line 1)"),
])
def test_bad_lines_are_named_by_number(text: str, lineno: int, reason: str) -> None:
    with pytest.raises(HtpasswdError) as caught:
        parse(text)
    assert caught.value.lineno == lineno
    assert str(caught.value).startswith(f"line {lineno}: ") and reason in str(caught.value)
    assert isinstance(caught.value, EtherwsError) and not isinstance(caught.value, ValueError)


@pytest.mark.parametrize("name, secret", [("des", "pEMmLj1eGW8vU"), ("plain", "s3cret!")])
def test_unsupported_fixtures_refuse_the_file_without_quoting_it(name: str, secret: str) -> None:
    with pytest.raises(HtpasswdError, match="^line 1: unsupported") as caught:
        load(name)
    assert secret not in str(caught.value) and "alice" not in str(caught.value)


def test_one_bad_line_refuses_the_whole_file() -> None:
    good = (FIXTURES / "bcrypt.htpasswd").read_text(encoding="utf-8")
    with pytest.raises(HtpasswdError, match="^line 8: unsupported"):
        parse(good + "mallory:plaintext\n")


# --- the Authorization header ----------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    (basic(b"alice:s3cret!"), ("alice", "s3cret!")),
    (basic(b"alice:s3cret!").encode(), ("alice", "s3cret!")),
    ("basic " + basic(b"alice:s3cret!")[6:], ("alice", "s3cret!")),
    ("BASIC " + basic(b"alice:s3cret!")[6:], ("alice", "s3cret!")),
    ("  Basic    " + basic(b"alice:s3cret!")[6:] + " \t", ("alice", "s3cret!")),
    (basic(b"colon:pa:ss:word"), ("colon", "pa:ss:word")),
    (basic("jürgen:pässwörd-✓".encode()), ("jürgen", "pässwörd-✓")),
    (basic(b"alice:"), ("alice", "")),
    (basic(b":"), ("", "")),
    ("Basic YWxpY2U6czNjcmV0IQ==", ("alice", "s3cret!")),
    # --- refusals ---
    (basic(b"alice"), None),                     # no colon
    ("Basic", None), ("Basic ", None), ("", None), (b"", None),
    ("Basic !!!!", None),                          # not base64
    ("Basic YWxpY2U6czNjcmV0IQ", None),            # padding missing
    ("Basic YWxp Y2U6czNjcmV0IQ==", None),         # space inside the token
    ("Basic YWxpY2U6czNjcmV0IQ==x", None),
    ("Bearer YWxpY2U6czNjcmV0IQ==", None),         # another scheme
    ("BasicYWxpY2U6czNjcmV0IQ==", None),
    ("Basic\tYWxpY2U6czNjcmV0IQ==", None),         # RFC 7235: 1*SP, not a tab
    (basic(b"alice:\xff\xfe"), None),              # not UTF-8
    (basic(b"alice:s3cret!\x00"), None),           # control characters (RFC 7617 §2)
    (basic(b"ali\nce:s3cret!"), None),
    (basic(b"alice:s3\x7fcret!"), None),
    ("Basic YWxpY2U6czNjcmV0IQ==é", None),         # non-ASCII header text
    (b"Basic YWxpY2U6czNjcmV0IQ==\xe9", None),
    (basic(b"alice:" + b"x" * 700), ("alice", "x" * 700)),
    (basic(b"alice:" + b"x" * 800), None),         # over MAX_AUTHORIZATION_LEN
    ("Basic " + "A" * 1_000_000, None),            # huge header
    (None, None), (42, None),
])
def test_parse_basic_authorization(value: object, expected: tuple[str, str] | None) -> None:
    assert parse_basic_authorization(value) == expected  # type: ignore[arg-type]


@given(st.binary(max_size=300))
def test_header_parsing_round_trips_or_refuses(credentials: bytes) -> None:
    parsed = parse_basic_authorization(basic(credentials))
    if parsed is not None:
        assert ":".join(parsed).encode("utf-8") == credentials


@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_header_parsing_never_raises(value: str | bytes) -> None:
    assert parse_basic_authorization(value) is None or isinstance(
        parse_basic_authorization(value), tuple)


def test_authenticate_and_challenge() -> None:
    table = load("apr1")
    assert authenticate(table, basic("jürgen:s3cret!".encode())) == "jürgen"
    assert authenticate(table, basic(b"colon:pa:ss:word").encode()) == "colon"
    assert authenticate(table, basic(b"alice:wrong")) is None
    assert authenticate(table, basic(b"mallory:s3cret!")) is None
    assert authenticate(table, None) is None
    assert authenticate(HtpasswdTable(), basic(b"alice:s3cret!")) is None
    assert CHALLENGE == b'Basic realm="etherws"'


# --- purity -------------------------------------------------------------------------

def _imports(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield (node.module or "").split(".")[0]


def test_module_is_pure() -> None:
    # Deciding code does no I/O (tests/unit/test_purity.py checks every module the same way).
    source = Path(htpasswd.__file__).read_text()
    forbidden = {"os", "sys", "socket", "time", "logging", "subprocess", "threading",
                 "select", "signal", "asyncio", "importlib"}
    assert not forbidden & set(_imports(ast.parse(source)))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_dump_reads_back_as_the_same_table(scheme: str) -> None:
    table = parse((FIXTURES / f"{scheme}.htpasswd").read_text(encoding="utf-8"))
    again = parse(htpasswd.dump(table))
    assert dict(again) == dict(table) and again.dummy_hash == table.dummy_hash
    assert htpasswd.dump(HtpasswdTable()) == ""

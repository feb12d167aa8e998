"""The client's handshake preparation: secrets, URLs, proxy choice, error lines (no sockets)."""

from __future__ import annotations

import base64
import socket
import ssl

import pytest
import websocket

from etherws.workers.wsconnect import (Connector, Proxy, Secrets, Target, bypasses_proxy,
                                       parse_proxy, take_proxy_env)

PASSWORD = "pw-Zq9"


@pytest.mark.parametrize("text, want", [
    ("", Secrets()),
    ("  \n", Secrets()),
    ('{"user": "u", "passwd": "p"}', Secrets("u", "p")),
    ('{"user": null, "passwd": null, "proxy": "http://h:1"}', Secrets(proxy="http://h:1")),
])
def test_secrets_parse(text: str, want: Secrets) -> None:
    assert Secrets.from_json(text) == want


@pytest.mark.parametrize("text, error", [
    ("[1]", "not one JSON object"),
    (f'{{"user": "u", "passwd": "{PASSWORD}", "x": 1}}', "unknown keys in the secrets on stdin: x"),
    (f'{{"user": "u", "passwd": ["{PASSWORD}"]}}', "'passwd' must be a string or null"),
    (f'{{"passwd": "{PASSWORD}"', "not one JSON object"),
])
def test_bad_secrets_are_refused_without_echoing_them(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error) as info:
        Secrets.from_json(text)
    assert PASSWORD not in str(info.value)


@pytest.mark.parametrize("url, want, text", [
    ("ws://example.org", Target(False, "example.org", 80, "/"), "ws://example.org:80/"),
    ("wss://example.org/a/b?c=d", Target(True, "example.org", 443, "/a/b?c=d"),
     "wss://example.org:443/a/b?c=d"),
    ("ws://[::1]:8080/x", Target(False, "::1", 8080, "/x"), "ws://[::1]:8080/x"),
])
def test_targets(url: str, want: Target, text: str) -> None:
    assert Target.parse(url) == want and str(want) == text


@pytest.mark.parametrize("url", ["http://h/", "ws:///x", "ws://h:99999/", "ws://u:p@h/"])
def test_bad_targets(url: str) -> None:
    with pytest.raises(ValueError):
        Target.parse(url)


@pytest.mark.parametrize("url, want", [
    ("http://proxy:3128", Proxy("proxy", 3128)),
    ("proxy:3128", Proxy("proxy", 3128)),
    ("http://proxy", Proxy("proxy", 80)),
    ("http://u%40x:p%3Aw@10.0.0.1:8080/", Proxy("10.0.0.1", 8080, "u@x", "p:w")),
])
def test_proxy_urls(url: str, want: Proxy) -> None:
    assert parse_proxy(url) == want


@pytest.mark.parametrize("url", ["https://proxy:3128", "socks5://p:1", "http://:80", "http://p:x"])
def test_bad_proxy_urls(url: str) -> None:
    with pytest.raises(ValueError):
        parse_proxy(url)


@pytest.mark.parametrize("host, port, no_proxy, bypass", [
    ("example.org", 80, "", False),
    ("example.org", 80, "*", True),
    ("example.org", 80, "example.org", True),
    ("www.example.org", 80, "example.org", True),
    ("www.example.org", 80, ".example.org", True),
    ("evilexample.org", 80, ".example.org", False),  # websocket-client says True
    ("evilexample.org", 80, "example.org", False),
    ("example.org", 80, "example.org:443", False),
    ("example.org", 443, "example.org:443", True),
    ("10.1.2.3", 80, "10.0.0.0/8", True),
    ("11.1.2.3", 80, "10.0.0.0/8", False),
    ("10.1.2.3", 80, "10.1.2.3", True),
    ("::1", 80, "::1", True),
    ("::1", 80, "[::1]:80", True),
    ("::1", 81, "[::1]:80", False),
    ("EXAMPLE.org", 80, " foo.com , Example.ORG ", True),
])
def test_no_proxy(host: str, port: int, no_proxy: str, bypass: bool) -> None:
    assert bypasses_proxy(host, port, no_proxy) is bypass


def test_take_proxy_env_removes_both_spellings_lowercase_wins() -> None:
    env = {"HTTP_PROXY": "http://up:1", "http_proxy": "http://low:1", "HTTPS_PROXY": "http://s:2",
           "NO_PROXY": "a", "PATH": "/bin"}
    assert take_proxy_env(env) == {"http_proxy": "http://low:1", "https_proxy": "http://s:2",
                                   "no_proxy": "a"}
    assert env == {"PATH": "/bin"}


@pytest.mark.parametrize("url, env, want", [
    ("ws://h/", {"http_proxy": "http://p:1"}, Proxy("p", 1)),
    ("wss://h/", {"http_proxy": "http://p:1"}, None),
    ("wss://h/", {"https_proxy": "http://p:2"}, Proxy("p", 2)),
    ("ws://h/", {"http_proxy": "http://p:1", "no_proxy": "h"}, None),
])
def test_environment_proxy_choice(url: str, env: dict[str, str], want: Proxy | None) -> None:
    assert Connector(url, Secrets(), None, False, env).proxy == want


def test_explicit_proxy_wins_over_the_environment_and_no_proxy() -> None:
    c = Connector("ws://h/", Secrets(proxy="http://a:b@q:3"), None, False,
                  {"http_proxy": "http://p:1", "no_proxy": "*"})
    assert c.proxy == Proxy("q", 3, "a", "b")
    kw = c.options()
    assert (kw["http_proxy_host"], kw["http_proxy_port"], kw["http_proxy_auth"],
            kw["proxy_type"]) == ("q", 3, ("a", "b"), "http")


def test_options() -> None:
    c = Connector("wss://h/", Secrets("alice", PASSWORD), "/ca.pem", False, {})
    kw = c.options()
    token = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    assert kw["header"] == {"Authorization": f"Basic {token}"}
    assert kw["sslopt"] == {"ca_certs": "/ca.pem"}
    assert kw["redirect_limit"] == 0 and kw["timeout"] == 10
    assert "http_proxy_host" not in kw
    insecure = Connector("wss://h/", Secrets(), None, True, {}).options()
    assert insecure["sslopt"] == {"cert_reqs": ssl.CERT_NONE, "check_hostname": False}
    assert "header" not in insecure and "sslopt" not in Connector(
        "ws://h/", Secrets(), "/ca.pem", True, {}).options()


def _cert_error() -> ssl.SSLCertVerificationError:
    e = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] ...")
    e.verify_message = "unable to get local issuer certificate"
    return e


@pytest.mark.parametrize("exc, want", [
    (websocket.WebSocketBadStatusException("x", 401), "authentication failed (HTTP 401)"),
    (websocket.WebSocketBadStatusException("x", 404, "Not Found"),
     "server refused the upgrade (HTTP 404 Not Found)"),
    (_cert_error(), "certificate verify failed: unable to get local issuer certificate"),
    (websocket.WebSocketException("Redirect limit exhausted"),
     "server answered with a redirect (not followed)"),
    (ConnectionRefusedError(111, "Connection refused"), "h:80: Connection refused"),
    (socket.gaierror(-2, "Name or service not known"),
     "cannot resolve h: [Errno -2] Name or service not known"),
    (websocket.WebSocketTimeoutException("timed out"), "timed out connecting to ws://h:80/"),
    (websocket.WebSocketException(f"echo {PASSWORD}\nline"), "handshake failed: echo *** line"),
    (KeyError("bug"), None),
])
def test_describe(exc: BaseException, want: str | None) -> None:
    assert Connector("ws://h/", Secrets("u", PASSWORD), None, False, {}).describe(exc) == want


def test_scrub_removes_every_secret() -> None:
    c = Connector("ws://h/", Secrets("u", PASSWORD, f"http://pu:{PASSWORD}x@p:1"), None, False, {})
    token = base64.b64encode(f"u:{PASSWORD}".encode()).decode()
    assert c.scrub(f"a {PASSWORD} b {PASSWORD}x c {token}") == "a *** b *** c ***"

"""Tunnel URLs, proxy URLs, no_proxy and the client's secrets on stdin (pure)."""

from __future__ import annotations

import pytest

from etherws.wsurl import (
    Proxy,
    Secrets,
    Target,
    UrlError,
    bypasses_proxy,
    env_proxy,
    parse_proxy,
    proxy_with_auth,
    split_proxy,
    take_proxy_env,
)

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
    with pytest.raises(UrlError, match=error) as info:
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
    with pytest.raises(UrlError):
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
    with pytest.raises(UrlError):
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


@pytest.mark.parametrize("url, env, proxy", [
    ("wss://h.example/", {"https_proxy": "http://p:1", "http_proxy": "http://q:2"}, "http://p:1"),
    ("ws://h.example/", {"https_proxy": "http://p:1", "http_proxy": "http://q:2"}, "http://q:2"),
    ("ws://h.example/", {"http_proxy": "http://q:2", "no_proxy": ".example"}, None),
    ("ws://h.example/", {}, None),
])
def test_env_proxy(url: str, env: dict[str, str], proxy: str | None) -> None:
    assert env_proxy(Target.parse(url), env) == proxy


def test_proxy_credentials_in_and_out() -> None:
    url = proxy_with_auth("http://px:3128", "proxy user:p@ss/word")
    assert url == "http://proxy%20user:p%40ss%2Fword@px:3128"
    assert split_proxy(url) == ("http://px:3128", "proxy user:p@ss/word")
    assert split_proxy("http://px:3128") == ("http://px:3128", None)
    with pytest.raises(UrlError):
        proxy_with_auth("http://px:3128", "no colon")

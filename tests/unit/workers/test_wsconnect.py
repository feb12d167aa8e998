"""The client's handshake preparation: secrets, URLs, proxy choice, error lines (no sockets)."""

from __future__ import annotations

import base64
import socket
import ssl

import pytest
import websocket

from etherws.workers.wsconnect import Connector
from etherws.wsurl import Proxy, Secrets

PASSWORD = "pw-Zq9"


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

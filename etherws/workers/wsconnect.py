"""The opening handshake of a client tunnel port, done by websocket-client (I/O).

websocket-client does the connect, proxy CONNECT, TLS and HTTP upgrade; its socket
(``ws.sock``) is then handed to ``wsmedium.WsMedium`` and websocket-client is out of
the picture (its per-message API tops out at 100-120k frames/s a worker; whole-buffer
framing was measured 3x faster). What this module adds around it:

- secrets (Basic-auth user and password, proxy URL with credentials) come from the
  worker's stdin as one JSON object, never from argv; nothing here puts them in a
  message (``Connector.scrub`` removes them from library text too);
- the proxy decision is ours (``etherws.wsurl``): websocket-client gets an explicit
  proxy or none at all;
- redirects are not followed (websocket-client follows three by default and sends our
  Authorization header to wherever ``Location`` points);
- errors become one line for the operator (``describe``): "authentication failed
  (HTTP 401)", "certificate verify failed: ...".
"""

from __future__ import annotations

import base64
import socket
import ssl
from typing import Any

import websocket

from etherws.wshandshake import OFFLOAD_PROTOCOL
from etherws.wsurl import Proxy, Secrets, Target, env_proxy, parse_proxy

CONNECT_TIMEOUT_S = 10.0
"""websocket-client's socket timeout: TCP connect, proxy CONNECT, TLS, upgrade, each."""


class Connector:
    """Everything one connection attempt needs; ``connect`` blocks (run it in a thread)."""

    def __init__(self, url: str, secrets: Secrets, cacerts: str | None, insecure: bool,
                 proxy_env: dict[str, str], offload: bool = False) -> None:
        self.target = Target.parse(url)
        self.offload = offload
        """Offer OFFLOAD_PROTOCOL."""
        self.offloaded = False
        """The last connection's server chose it: messages carry a virtio-net header."""
        self.secrets = secrets
        self.cacerts = cacerts
        self.insecure = insecure
        self.proxy = self._choose_proxy(secrets, proxy_env)

    def _choose_proxy(self, secrets: Secrets, env: dict[str, str]) -> Proxy | None:
        """The explicit proxy for every host; else the environment's, minus no_proxy."""
        value = secrets.proxy or env_proxy(self.target, env)
        return parse_proxy(value) if value else None

    def options(self) -> dict[str, Any]:
        """Keyword arguments for ``websocket.create_connection``."""
        kw: dict[str, Any] = {
            "timeout": CONNECT_TIMEOUT_S,
            "sockopt": [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            "redirect_limit": 0,  # never carry the Authorization header elsewhere
            "enable_multithread": False,
            "skip_utf8_validation": True,
            # websocket-client sends "Origin: http://host" by default; we are no browser,
            # and a server with an --origin allow-list refuses an Origin it does not list
            "suppress_origin": True,
        }
        # websocket-client offers no extensions, so permessage-deflate is never
        # negotiated; a server that answers with one anyway fails at its first
        # RSV1 frame (wsframe: 1002).
        header = {}
        if self.secrets.user is not None:
            token = f"{self.secrets.user}:{self.secrets.passwd or ''}".encode()  # RFC 7617
            header["Authorization"] = "Basic " + base64.b64encode(token).decode()
        if self.offload:
            # Not websocket-client's ``subprotocols``: it fails the handshake when the
            # server chooses none, and a server without offload (etherws 1.3, --no-offload)
            # must still get a plain tunnel. ``connect`` reads the answer itself.
            header["Sec-WebSocket-Protocol"] = OFFLOAD_PROTOCOL
        if header:
            kw["header"] = header
        if self.target.secure:
            if self.insecure:
                kw["sslopt"] = {"cert_reqs": ssl.CERT_NONE, "check_hostname": False}
            elif self.cacerts:
                kw["sslopt"] = {"ca_certs": self.cacerts}
        if self.proxy is not None:
            p = self.proxy
            kw.update(http_proxy_host=p.host, http_proxy_port=p.port, proxy_type="http",
                      http_proxy_auth=(p.user, p.passwd or "") if p.user else None)
        return kw

    def connect(self) -> socket.socket:
        """Connect and upgrade; the raw (maybe TLS) socket, blocking with a timeout."""
        ws = websocket.create_connection(str(self.target), **self.options())
        sock, ws.sock = ws.sock, None  # ours now: websocket-client must not close it
        if sock is None:  # create_connection returns connected or raises; never seen
            raise OSError("websocket-client returned no socket")
        chosen = (ws.getheaders() or {}).get("sec-websocket-protocol", "")
        self.offloaded = self.offload and chosen.strip() == OFFLOAD_PROTOCOL
        return sock

    def scrub(self, text: str) -> str:
        """``text`` with every secret (and its Basic-auth encoding) replaced by ``***``."""
        s, p = self.secrets, self.proxy
        secrets = [s.passwd, p.passwd if p else None, s.proxy]
        if s.user is not None:
            secrets.append(base64.b64encode(f"{s.user}:{s.passwd or ''}".encode()).decode())
        if p is not None and p.user:
            secrets.append(base64.b64encode(f"{p.user}:{p.passwd or ''}".encode()).decode())
        for secret in sorted(filter(None, secrets), key=len, reverse=True):  # longest first
            text = text.replace(secret, "***")
        return text

    def describe(self, exc: BaseException) -> str | None:
        """One line for an attempt's failure; None when it is no network failure (a bug)."""
        text = _describe(exc, self)
        return None if text is None else self.scrub(" ".join(text.split()))


def _describe(exc: BaseException, c: Connector) -> str | None:
    """The operator's line for ``exc`` (unscrubbed)."""
    if isinstance(exc, websocket.WebSocketBadStatusException):
        if exc.status_code == 401:
            return "authentication failed (HTTP 401)"
        return f"server refused the upgrade (HTTP {exc.status_code} {exc.status_message or ''})"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, websocket.WebSocketProxyException):
        return f"proxy {c.proxy}: {exc}"
    if isinstance(exc, (websocket.WebSocketAddressException, socket.gaierror)):
        return f"cannot resolve {c.proxy.host if c.proxy else c.target.host}: {exc}"
    if isinstance(exc, (websocket.WebSocketTimeoutException, TimeoutError)):
        return f"timed out connecting to {c.proxy or c.target}"
    if isinstance(exc, websocket.WebSocketException):
        if str(exc) == "Redirect limit exhausted":
            return "server answered with a redirect (not followed)"
        return f"handshake failed: {exc}"
    if isinstance(exc, OSError):
        where = f"proxy {c.proxy}" if c.proxy else f"{c.target.host}:{c.target.port}"
        return f"{where}: {exc.strerror or exc}"
    return None

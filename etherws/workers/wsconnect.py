"""The opening handshake of a client tunnel port, done by websocket-client (I/O).

websocket-client does the connect, proxy CONNECT, TLS and HTTP upgrade; its socket
(``ws.sock``) is then handed to ``wsmedium.WsMedium`` and websocket-client is out of
the picture (library-fit §6). What this module adds around it:

- secrets (Basic-auth user and password, proxy URL with credentials) come from the
  worker's stdin as one JSON object, never from argv; nothing here puts them in a
  message (``Connector.scrub`` removes them from library text too);
- the proxy decision is ours. websocket-client reads ``http_proxy``/``https_proxy``
  on its own, and honours ``no_proxy`` only from the environment (its
  ``http_no_proxy`` option is ignored unless ``http_proxy_host`` is given,
  library-fit §2; its ``.domain`` entries also match ``evildomain``). So the worker
  takes the proxy variables out of its environment (``take_proxy_env``) and passes
  websocket-client an explicit proxy or none at all;
- redirects are not followed (websocket-client follows three by default and sends our
  Authorization header to wherever ``Location`` points);
- errors become one line for the operator (``describe``): "authentication failed
  (HTTP 401)", "certificate verify failed: ...".
"""

from __future__ import annotations

import base64
import ipaddress
import json
import socket
import ssl
from dataclasses import dataclass
from typing import Any, MutableMapping
from urllib.parse import unquote, urlsplit

import websocket

CONNECT_TIMEOUT_S = 10.0
"""websocket-client's socket timeout: TCP connect, proxy CONNECT, TLS, upgrade, each."""
PROXY_VARIABLES = ("http_proxy", "https_proxy", "no_proxy")


@dataclass(frozen=True)
class Secrets:
    """What the worker reads from stdin: ``{"user": .., "passwd": .., "proxy": ..,
    "proxy_env": ..}``.

    ``proxy_env`` holds ``http_proxy``/``https_proxy``/``no_proxy`` of whoever asked for
    the port (etherws-ctl sends its own environment's); null means the worker's own
    environment. Every other value is a string or null; a missing key is null; any
    other key is an error.
    """

    user: str | None = None
    passwd: str | None = None
    proxy: str | None = None
    proxy_env: dict[str, str] | None = None

    @classmethod
    def from_json(cls, text: str) -> Secrets:
        """Parse stdin's text ("" means no secrets). ValueError names no value."""
        if not text.strip():
            return cls()
        try:
            data = json.loads(text)
        except ValueError:
            raise ValueError("secrets on stdin are not one JSON object") from None
        if not isinstance(data, dict):
            raise ValueError("secrets on stdin are not one JSON object")
        unknown = sorted(set(data) - {"user", "passwd", "proxy", "proxy_env"})
        if unknown:
            raise ValueError(f"unknown keys in the secrets on stdin: {', '.join(unknown)}")
        for key, value in data.items():
            if key == "proxy_env":
                check_proxy_env(value)
            elif value is not None and not isinstance(value, str):
                raise ValueError(f"secret {key!r} must be a string or null")
        return cls(**data)


def check_proxy_env(value: object) -> None:
    """ValueError unless ``value`` is null or maps proxy variable names to strings."""
    if value is None:
        return
    if not isinstance(value, dict) or not all(
            k in PROXY_VARIABLES and isinstance(v, str) for k, v in value.items()):
        raise ValueError("proxy_env must map http_proxy, https_proxy or no_proxy to strings")


@dataclass(frozen=True)
class Proxy:
    """An HTTP proxy that tunnels with CONNECT."""

    host: str
    port: int
    user: str | None = None
    passwd: str | None = None

    def __str__(self) -> str:
        """``host:port`` (never the credentials)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_proxy(url: str) -> Proxy:
    """``http://[user:pass@]host[:port]`` (scheme optional, port 80 by default)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http":
        raise ValueError(f"proxy scheme {parts.scheme!r} is not supported (http:// only)")
    try:
        port = parts.port or 80
    except ValueError:
        raise ValueError("proxy URL has an invalid port") from None
    if not parts.hostname:
        raise ValueError("proxy URL has no host")
    user = unquote(parts.username) if parts.username else None
    passwd = unquote(parts.password) if parts.password is not None else None
    return Proxy(parts.hostname, port, user, passwd)


def take_proxy_env(environ: MutableMapping[str, str]) -> dict[str, str]:
    """Remove the proxy variables from ``environ`` (both cases); return them, lower-case.

    The lower-case spelling wins, as in websocket-client and curl.
    """
    found: dict[str, str] = {}
    for name in PROXY_VARIABLES:
        upper, lower = environ.pop(name.upper(), ""), environ.pop(name, "")
        if lower or upper:
            found[name] = (lower or upper).strip()
    return found


def _no_proxy_entry(entry: str) -> tuple[str, int | None]:
    """``(host or network, port or None)`` of one no_proxy entry."""
    if entry.startswith("["):  # [v6] or [v6]:port
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    host, sep, port = entry.rpartition(":")
    if sep and host.count(":") == 0 and port.isdigit():
        return host, int(port)
    return entry, None


def bypasses_proxy(host: str, port: int, no_proxy: str) -> bool:
    """True when ``no_proxy`` (curl's syntax) exempts ``host:port`` from the proxy.

    Entries: ``*``; a name, matching itself and its subdomains (a leading dot is
    optional); an IP address or CIDR network, matching IP hosts; each optionally
    ``:port``.
    """
    host = host.lower().strip("[]").rstrip(".")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    for raw in no_proxy.replace(" ", "").lower().split(","):
        if raw == "*":
            return True
        if not raw:
            continue
        name, entry_port = _no_proxy_entry(raw)
        if entry_port is not None and entry_port != port:
            continue
        name = name.lstrip(".").rstrip(".")
        if ip is not None:
            try:
                if ip in ipaddress.ip_network(name, strict=False):
                    return True
            except ValueError:
                pass
            continue
        if host == name or host.endswith("." + name):
            return True
    return False


@dataclass(frozen=True)
class Target:
    """A parsed ``ws://`` or ``wss://`` URL."""

    secure: bool
    host: str
    port: int
    resource: str

    @classmethod
    def parse(cls, url: str) -> Target:
        """Parse; ValueError for another scheme, no host, a bad port or credentials."""
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss"):
            raise ValueError(f"URL scheme must be ws or wss, not {parts.scheme!r}")
        if parts.username is not None or parts.password is not None:
            raise ValueError("credentials in the URL are not supported: use --user")
        try:
            port = parts.port or (443 if parts.scheme == "wss" else 80)
        except ValueError:
            raise ValueError("URL has an invalid port") from None
        if not parts.hostname:
            raise ValueError("URL has no host")
        resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(parts.scheme == "wss", parts.hostname, port, resource)

    def __str__(self) -> str:
        """The URL as logged (it never holds credentials)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'wss' if self.secure else 'ws'}://{host}:{self.port}{self.resource}"


class Connector:
    """Everything one connection attempt needs; ``connect`` blocks (run it in a thread)."""

    def __init__(self, url: str, secrets: Secrets, cacerts: str | None, insecure: bool,
                 proxy_env: dict[str, str]) -> None:
        self.target = Target.parse(url)
        self.secrets = secrets
        self.cacerts = cacerts
        self.insecure = insecure
        self.proxy = self._choose_proxy(secrets, proxy_env)

    def _choose_proxy(self, secrets: Secrets, env: dict[str, str]) -> Proxy | None:
        """The explicit proxy for every host; else the environment's, minus no_proxy."""
        if secrets.proxy:
            return parse_proxy(secrets.proxy)
        t = self.target
        value = env.get("https_proxy" if t.secure else "http_proxy")
        if not value or bypasses_proxy(t.host, t.port, env.get("no_proxy", "")):
            return None
        return parse_proxy(value)

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
        if self.secrets.user is not None:
            token = f"{self.secrets.user}:{self.secrets.passwd or ''}".encode()  # RFC 7617
            kw["header"] = {"Authorization": "Basic " + base64.b64encode(token).decode()}
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

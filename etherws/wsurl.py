"""Tunnel URLs, HTTP proxies and no_proxy, and the secrets a client worker reads (pure).

The proxy decision is ours, not websocket-client's: it reads ``http_proxy``/``https_proxy``
on its own and honours ``no_proxy`` only from the environment (its ``http_no_proxy``
option is ignored unless ``http_proxy_host`` is given; its ``.domain`` entries also match
``evildomain``). So the client worker takes the proxy variables out of its environment
(``take_proxy_env``), decides here (``bypasses_proxy``, curl's syntax) and passes
websocket-client an explicit proxy or none at all. etherws-ctl and the supervisor check
an ``addport client`` request with the same parsers before any worker starts.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Mapping, MutableMapping
from urllib.parse import quote, unquote, urlsplit

from etherws.errors import EtherwsError

PROXY_VARIABLES = ("http_proxy", "https_proxy", "no_proxy")


class UrlError(EtherwsError):
    """A tunnel URL, proxy, proxy variable or secrets record that cannot be used; the
    message never repeats a value that could hold a password."""


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
        """Parse stdin's text ("" means no secrets). UrlError names no value."""
        if not text.strip():
            return cls()
        try:
            data = json.loads(text)
        except ValueError:
            raise UrlError("secrets on stdin are not one JSON object") from None
        if not isinstance(data, dict):
            raise UrlError("secrets on stdin are not one JSON object")
        unknown = sorted(set(data) - {"user", "passwd", "proxy", "proxy_env"})
        if unknown:
            raise UrlError(f"unknown keys in the secrets on stdin: {', '.join(unknown)}")
        for key, value in data.items():
            if key == "proxy_env":
                check_proxy_env(value)
            elif value is not None and not isinstance(value, str):
                raise UrlError(f"secret {key!r} must be a string or null")
        return cls(**data)


def check_proxy_env(value: object) -> None:
    """UrlError unless ``value`` is null or maps proxy variable names to strings."""
    if value is None:
        return
    if not isinstance(value, dict) or not all(
            k in PROXY_VARIABLES and isinstance(v, str) for k, v in value.items()):
        raise UrlError("proxy_env must map http_proxy, https_proxy or no_proxy to strings")


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
        raise UrlError(f"proxy scheme {parts.scheme!r} is not supported (http:// only)")
    try:
        port = parts.port or 80
    except ValueError:
        raise UrlError("proxy URL has an invalid port") from None
    if not parts.hostname:
        raise UrlError("proxy URL has no host")
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
        """Parse; UrlError for another scheme, no host, a bad port or credentials."""
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss"):
            raise UrlError(f"URL scheme must be ws or wss, not {parts.scheme!r}")
        if parts.username is not None or parts.password is not None:
            raise UrlError("credentials in the URL are not supported: use --user")
        try:
            port = parts.port or (443 if parts.scheme == "wss" else 80)
        except ValueError:
            raise UrlError("URL has an invalid port") from None
        if not parts.hostname:
            raise UrlError("URL has no host")
        resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(parts.scheme == "wss", parts.hostname, port, resource)

    def __str__(self) -> str:
        """The URL as logged (it never holds credentials)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'wss' if self.secure else 'ws'}://{host}:{self.port}{self.resource}"


def env_proxy(target: Target, env: Mapping[str, str]) -> str | None:
    """The proxy URL the proxy variables ``env`` choose for ``target`` (https_proxy for
    wss://, http_proxy for ws://), or None: none set, or no_proxy matches."""
    value = env.get("https_proxy" if target.secure else "http_proxy")
    if not value or bypasses_proxy(target.host, target.port, env.get("no_proxy", "")):
        return None
    return value


def split_proxy(url: str) -> tuple[str, str | None]:
    """A proxy URL without its credentials, and the ``user:password`` taken out of it
    (decoded, as a proxy-auth file holds it)."""
    scheme, sep, rest = url.rpartition("://")
    auth, at, hostport = rest.rpartition("@")
    if not at:
        return url, None
    user, _, word = auth.partition(":")
    return f"{scheme}{sep}{hostport}", f"{unquote(user)}:{unquote(word)}"


def proxy_with_auth(url: str, auth: str) -> str:
    """``url`` with the ``user:password`` of a proxy-auth file in it (percent-encoded);
    UrlError when ``auth`` has no colon."""
    user, colon, word = auth.partition(":")
    if not colon:
        raise UrlError("a proxy-auth file holds user:password")
    scheme, _, rest = url.rpartition("://")
    return f"{scheme or 'http'}://{quote(user, safe='')}:{quote(word, safe='')}@{rest}"

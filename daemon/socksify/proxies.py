"""Proxy addresses as users write them: socks4://[USER@]HOST:PORT, socks4a://…,
socks5://[USER[:PASSWORD]@]HOST:PORT, http://[USER[:PASSWORD]@]HOST:PORT (HTTP
CONNECT), and https://… / socks5+tls://… (the same inside TLS to the proxy)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from .errors import ConfigError

SCHEMES = ("socks4", "socks4a", "socks5", "http", "https", "socks5+tls")
URL_HINT = ("write a hop as socks4://HOST:PORT, socks4a://USER@HOST:PORT, "
            "socks5://USER:PASSWORD@HOST:PORT, http://USER:PASSWORD@HOST:PORT, "
            "https://HOST:PORT or socks5+tls://HOST:PORT")
_PROTOCOL = {"socks4": "socks4", "socks4a": "socks4", "socks5": "socks5",
             "socks5+tls": "socks5", "http": "http", "https": "http"}


@dataclass(frozen=True)
class Proxy:
    scheme: str
    host: str
    port: int
    user: str = ""
    password: str = field(default="", repr=False, compare=False)
    tls_verify: bool = True           # https / socks5+tls: check the certificate
    ca_file: str | None = None        # ... against this CA bundle (else the system's)

    @property
    def protocol(self) -> str:
        """What is spoken to the hop (inside TLS, if any): socks4, socks5 or http."""
        return _PROTOCOL[self.scheme]

    @property
    def tls(self) -> bool:
        """True if the hop is reached over TLS (https://, socks5+tls://)."""
        return self.scheme in ("https", "socks5+tls")

    @property
    def carries_names(self) -> bool:
        """True if this hop can be asked for a host name (SOCKS4a, SOCKS5, HTTP)."""
        return self.scheme != "socks4"

    @property
    def carries_ipv6(self) -> bool:
        return self.protocol in ("socks5", "http")

    def __str__(self) -> str:
        """The URL, without the password (this is what logs and tables show)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.user}@" if self.user else ""
        return f"{self.scheme}://{user}{host}:{self.port}"

    @classmethod
    def parse(cls, url: str) -> Proxy:
        """Parse a hop URL; raise ConfigError naming what is wrong and the accepted form."""
        shown = _redact(url)
        if "://" not in url:
            raise ConfigError(f"{shown!r} has no scheme", hint=URL_HINT)
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            raise ConfigError(f"{shown!r}: unsupported proxy type {parts.scheme!r}, "
                              f"expected one of {', '.join(SCHEMES)}", hint=URL_HINT)
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ConfigError(f"{shown!r}: a hop URL has no path or query", hint=URL_HINT)
        if parts.password is not None and _PROTOCOL[scheme] == "socks4":
            raise ConfigError(f"{shown!r}: SOCKS4 has no password, only a user "
                              "id", hint=URL_HINT)
        host = parts.hostname
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(f"{shown!r}: the port is not a number in 1..65535",
                              hint=URL_HINT) from None
        if not host or port is None or port == 0:
            raise ConfigError(f"{shown!r}: needs a host and a port", hint=URL_HINT)
        user = unquote(parts.username or "")
        password = unquote(parts.password or "")
        if _PROTOCOL[scheme] == "http" and (
                ":" in user or (password and not user)
                or any(c in user + password for c in "\r\n\0")):
            raise ConfigError(f"{shown!r}: an HTTP proxy user has no ':', a password "
                              "needs a user, and neither holds a line break",
                              hint=URL_HINT)
        if _PROTOCOL[scheme] == "socks5" and (len(user.encode()) > 255 or
                                   len(password.encode()) > 255 or (password and not user)):
            raise ConfigError(f"{shown!r}: a SOCKS5 user and password are 1..255 "
                              "bytes each, and a password needs a user", hint=URL_HINT)
        return cls(scheme, host, port, user, password)


def _redact(url: str) -> str:
    """The URL with any password replaced, for error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


@functools.lru_cache(maxsize=256)
def route_text(route: tuple[Proxy, ...]) -> tuple[str, tuple[str, ...]]:
    """A route as the log and the live table show it ("direct" for none), and its
    hops' "host:port" (cached: a chain's connections take the same few routes)."""
    return (" > ".join(str(h) for h in route) or "direct",
            tuple(f"[{h.host}]:{h.port}" if ":" in h.host else f"{h.host}:{h.port}"
                  for h in route))

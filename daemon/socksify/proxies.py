"""Proxy addresses as users write them: socks4://[user@]host:port and socks4a://…"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from .errors import ConfigError

SCHEMES = ("socks4", "socks4a")
URL_HINT = "write a hop as socks4://HOST:PORT or socks4a://USER@HOST:PORT"


@dataclass(frozen=True)
class Proxy:
    scheme: str
    host: str
    port: int
    user: str = ""

    @property
    def carries_names(self) -> bool:
        """True if this hop can be asked for a host name (SOCKS4a)."""
        return self.scheme == "socks4a"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.user}@" if self.user else ""
        return f"{self.scheme}://{user}{host}:{self.port}"

    @classmethod
    def parse(cls, url: str) -> Proxy:
        """Parse a hop URL; raise ConfigError naming what is wrong and the accepted form."""
        if "://" not in url:
            raise ConfigError(f"{url!r} has no scheme", hint=URL_HINT)
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            raise ConfigError(f"{url!r}: unsupported proxy type {parts.scheme!r}, "
                              f"expected one of {', '.join(SCHEMES)}", hint=URL_HINT)
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ConfigError(f"{url!r}: a hop URL has no path or query", hint=URL_HINT)
        if parts.password is not None:
            raise ConfigError(f"{url!r}: SOCKS4 has no password, only a user id",
                              hint=URL_HINT)
        host = parts.hostname
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(f"{url!r}: the port is not a number in 1..65535",
                              hint=URL_HINT) from None
        if not host or port is None or port == 0:
            raise ConfigError(f"{url!r}: needs a host and a port", hint=URL_HINT)
        try:
            if ipaddress.ip_address(host).version == 6:
                raise ConfigError(f"{url!r}: SOCKS4 hops are reached over IPv4 only",
                                  hint=URL_HINT)
        except ValueError:
            pass  # a host name
        return cls(scheme, host, port, unquote(parts.username or ""))

"""A [proxies] entry written as a table, for the options of a TLS hop:

    [proxies]
    office = { url = "https://proxy.example:443", ca_file = "office-ca.pem" }
    lab = { url = "https://10.0.0.9:8443", tls_verify = false }

ca_file (relative to the policy file) replaces the system's CA store for that hop;
tls_verify = false turns certificate checks off, and only a policy file can say so."""

from __future__ import annotations

import dataclasses
import ssl
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..proxies import Proxy

KEYS = {"url", "ca_file", "tls_verify"}
HINT = ('write { url = "https://HOST:PORT", ca_file = "ca.pem" } or '
        '{ url = "https://HOST:PORT", tls_verify = false }')


def tls_proxy(body: dict[str, Any], source: str) -> Proxy:
    unknown = set(body) - KEYS
    if unknown:
        raise ConfigError(f"unknown key {sorted(unknown)[0]!r}; accepted keys: "
                          f"{', '.join(sorted(KEYS))}", hint=HINT)
    if not isinstance(body.get("url"), str):
        raise ConfigError('needs url = "SCHEME://HOST:PORT"', hint=HINT)
    proxy = Proxy.parse(body["url"])
    verify, ca_file = body.get("tls_verify", True), body.get("ca_file")
    if not isinstance(verify, bool):
        raise ConfigError("tls_verify is true or false", hint=HINT)
    if ca_file is not None and not isinstance(ca_file, str):
        raise ConfigError("ca_file is the path of a PEM file", hint=HINT)
    if not proxy.tls and (ca_file is not None or "tls_verify" in body):
        raise ConfigError(f"{proxy} is not a TLS hop: ca_file and tls_verify are for "
                          "https:// and socks5+tls:// hops", hint=HINT)
    if ca_file is not None:
        path = Path(ca_file).expanduser()
        if not path.is_absolute() and source and not source.startswith("<"):
            path = Path(source).resolve().parent / path
        try:
            ssl.create_default_context(cafile=str(path))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"ca_file {str(path)!r} cannot be loaded: {exc}",
                              hint="a PEM file of CA certificates") from None
        ca_file = str(path)
    return dataclasses.replace(proxy, tls_verify=verify, ca_file=ca_file)

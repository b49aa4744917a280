"""Stream isolation: SOCKS5 credentials derived from who makes a connection, so that
a Tor SOCKS port (IsolateSOCKSAuth, Tor's default) gives each app, process or
connection its own circuit. No I/O.

A chain's `isolate` mode names the key: "app" (user and executable), "process"
(user, pid and the process's start time, so a reused pid is another process) or
"connection" (the daemon's connection id). The key never leaves the daemon: the user
name and password are an HMAC-SHA256 of it under a secret drawn at random when the
daemon starts, written with the letters a-p only, so they hold no pid, name or digit
in clear and mean nothing after a restart. Hops written with credentials keep them
(explicit credentials win); SOCKS4 and SOCKS4a hops carry no password and are not
isolated.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from ..proxies import Proxy

USER_PREFIX = "sk"
_LETTERS = "abcdefghijklmnop"          # one letter per hex digit: no digits at all
_SECRET = secrets.token_bytes(32)      # drawn once per daemon process


@dataclass(frozen=True)
class StreamAuth:
    """A SOCKS5 user name and password for one isolation key."""

    user: str
    password: str = field(repr=False)


def isolatable(hop: Proxy) -> bool:
    """Will `hop` be given derived credentials: it speaks SOCKS5 and has none."""
    return hop.protocol == "socks5" and not hop.user


def stream_key(mode: str, chain: str, uid: int, pid: int, start: object, exe: str,
               conn: str) -> str | None:
    """The isolation key of a connection under `mode` (None for "none")."""
    if mode == "app":
        return f"app\0{chain}\0{uid}\0{exe}"
    if mode == "process":
        return f"process\0{chain}\0{uid}\0{pid}\0{start}"
    if mode == "connection":
        return f"connection\0{chain}\0{conn}"
    return None


def derive(key: str, secret: bytes = _SECRET) -> StreamAuth:
    """The credentials for an isolation key: 24 letters of user name (96 bits) and 24
    of password, both from HMAC-SHA256(secret, key)."""
    digest = hmac.new(secret, key.encode("utf-8", "surrogateescape"),
                      hashlib.sha256).hexdigest()
    letters = digest.translate(str.maketrans("0123456789abcdef", _LETTERS))
    return StreamAuth(USER_PREFIX + letters[:24], letters[24:48])

"""The errors socksify raises, each carrying the errno the application should see."""

from __future__ import annotations

import errno


class SocksifyError(OSError):
    """Base of every error that reaches an application as an errno."""

    default_errno = errno.ECONNREFUSED

    def __init__(self, message: str, err: int | None = None) -> None:
        super().__init__(err if err is not None else self.default_errno, message)

    def __str__(self) -> str:
        return str(self.strerror)


class PolicyBlocked(SocksifyError):
    """The policy says this connection must not be made."""

    default_errno = errno.EACCES


class ChainError(SocksifyError):
    """Building the chain failed. `hop` is the index of the hop that could not be
    reached (len(route) when the final target failed), so a dynamic chain knows which
    hop to skip."""

    def __init__(self, message: str, hop: int, err: int | None = None) -> None:
        super().__init__(message, err)
        self.hop = hop


class HopUnreachable(ChainError):
    """A TCP connection to a hop (or through the chain to the target) failed."""


class HopRefused(ChainError):
    """A hop rejected a SOCKS request (SOCKS4 codes 91-93), or closed without a reply."""


class RequestRefused(HopRefused):
    """A hop answered a request with a refusal (a SOCKS reply code, an HTTP status):
    its own word, which asking again through a fresh chain would only hear again."""


class HopTimeout(ChainError):
    """A hop did not connect or answer within the chain's timeout."""

    default_errno = errno.ETIMEDOUT


class HopProtocolError(ChainError):
    """A hop answered with bytes that are not a valid reply."""


class Unsupported(SocksifyError):
    """The chain cannot carry this destination (an IPv6 target on a SOCKS4 hop)."""

    default_errno = errno.ENETUNREACH


class ConfigError(Exception):
    """A policy file or command line that cannot be used; the message says where and
    what would be accepted."""

    def __init__(self, message: str, source: str | None = None,
                 line: int | None = None, hint: str | None = None) -> None:
        where = source or ""
        if source and line:
            where = f"{source}:{line}"
        text = f"{where}: {message}" if where else message
        if hint:
            text += f" (hint: {hint})"
        super().__init__(text)
        self.source = source
        self.line = line
        self.hint = hint

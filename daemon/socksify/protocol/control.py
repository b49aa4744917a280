"""The control wire format between the shim and the daemon (docs/wire.md), no I/O."""

from __future__ import annotations

import enum
import errno
import ipaddress
import struct
from dataclasses import dataclass

MAGIC = b"SKFY"
VERSION = 1
REQUEST_SIZE = 48
REPLY_SIZE = 32
TOKEN_SIZE = 16
SESSION_SIZE = 8

_REQUEST = struct.Struct("!4sBBBBHH16s8s12x")
_REPLY = struct.Struct("!4sBBBxHH16s4x")
assert _REQUEST.size == REQUEST_SIZE and _REPLY.size == REPLY_SIZE


class WireError(ValueError):
    """Bytes that do not follow docs/wire.md."""


class Op(enum.IntEnum):
    CONNECT = 1


class SockType(enum.IntEnum):
    STREAM = 1
    DGRAM = 2


class Verdict(enum.IntEnum):
    RELAY = 0
    DIRECT = 1
    FAIL = 2


class Code(enum.IntEnum):
    """Portable error codes carried in a FAIL reply."""

    NONE = 0
    CONNREFUSED = 1
    TIMEDOUT = 2
    ACCES = 3
    NETUNREACH = 4
    HOSTUNREACH = 5
    CONNRESET = 6
    PROTO = 7
    AFNOSUPPORT = 8

    @classmethod
    def from_errno(cls, err: int) -> Code:
        return _CODE_BY_ERRNO.get(err, cls.CONNREFUSED)

    def to_errno(self) -> int:
        return _ERRNO_BY_CODE[self]


_ERRNO_BY_CODE = {
    Code.NONE: 0,
    Code.CONNREFUSED: errno.ECONNREFUSED,
    Code.TIMEDOUT: errno.ETIMEDOUT,
    Code.ACCES: errno.EACCES,
    Code.NETUNREACH: errno.ENETUNREACH,
    Code.HOSTUNREACH: errno.EHOSTUNREACH,
    Code.CONNRESET: errno.ECONNRESET,
    Code.PROTO: errno.EPROTO,
    Code.AFNOSUPPORT: errno.EAFNOSUPPORT,
}
_CODE_BY_ERRNO = {e: c for c, e in _ERRNO_BY_CODE.items() if e}


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class ConnectRequest:
    addr: IPAddress
    port: int
    socktype: SockType = SockType.STREAM
    session: bytes = bytes(SESSION_SIZE)

    def dumps(self) -> bytes:
        family = 4 if self.addr.version == 4 else 6
        raw = self.addr.packed.ljust(16, b"\0")
        return _REQUEST.pack(MAGIC, VERSION, Op.CONNECT, family, self.socktype,
                             self.port, 0, raw, self.session)

    @classmethod
    def loads(cls, data: bytes) -> ConnectRequest:
        """Parse a request header (exactly REQUEST_SIZE bytes); raise WireError."""
        if len(data) != REQUEST_SIZE:
            raise WireError(f"request is {len(data)} bytes, expected {REQUEST_SIZE}")
        magic, version, op, family, socktype, port, body_len, raw, session = \
            _REQUEST.unpack(data)
        if magic != MAGIC:
            raise WireError(f"bad magic {magic!r}, expected {MAGIC!r}")
        if version != VERSION:
            raise WireError(f"wire version {version}, this daemon speaks {VERSION}")
        if op != Op.CONNECT:
            raise WireError(f"unknown op {op}")
        if body_len != 0:
            raise WireError(f"CONNECT carries no body, got body_len {body_len}")
        addr: IPAddress
        if family == 4:
            addr = ipaddress.IPv4Address(raw[:4])
        elif family == 6:
            addr = ipaddress.IPv6Address(raw)
        else:
            raise WireError(f"unknown address family {family}")
        try:
            kind = SockType(socktype)
        except ValueError:
            raise WireError(f"unknown socket type {socktype}") from None
        return cls(addr, port, kind, session)


@dataclass(frozen=True)
class Reply:
    verdict: Verdict
    code: Code = Code.NONE
    relay_port4: int = 0
    relay_port6: int = 0
    token: bytes = bytes(TOKEN_SIZE)

    def dumps(self) -> bytes:
        return _REPLY.pack(MAGIC, VERSION, self.verdict, self.code,
                           self.relay_port4, self.relay_port6, self.token)

    @classmethod
    def loads(cls, data: bytes) -> Reply:
        if len(data) != REPLY_SIZE:
            raise WireError(f"reply is {len(data)} bytes, expected {REPLY_SIZE}")
        magic, version, verdict, code, port4, port6, token = _REPLY.unpack(data)
        if magic != MAGIC or version != VERSION:
            raise WireError("bad magic or version in reply")
        try:
            v = Verdict(verdict)
        except ValueError:
            raise WireError(f"unknown verdict {verdict}") from None
        try:
            c = Code(code)
        except ValueError:
            c = Code.PROTO
        return cls(v, c, port4, port6, token)

    @classmethod
    def fail(cls, err: int) -> Reply:
        return cls(Verdict.FAIL, Code.from_errno(err))

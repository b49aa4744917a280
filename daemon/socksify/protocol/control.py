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
CARRY_TOKEN_SIZE = 8
SESSION_SIZE = 8

_REQUEST = struct.Struct("!4sBBBBHH16s8s12x")
_REPLY = struct.Struct("!4sBBBBHH16s4x")
assert _REQUEST.size == REQUEST_SIZE and _REPLY.size == REPLY_SIZE


class WireError(ValueError):
    """Bytes that do not follow docs/wire.md."""


class Op(enum.IntEnum):
    CONNECT = 1    # how do I reach addr:port?
    PEERNAME = 2   # addr:port is my socket's local end: what did it connect to?
    RESOLVE = 3    # the body is a host name: resolve it myself, or which address?
    NAMEOF = 4     # addr is an address the app looks up: what is it called?
    HANDOFF = 5    # CONNECT, with the app's own socket attached (SCM_RIGHTS)
    WRAP = 6       # datagram CONNECT, with the app's UDP socket attached (SCM_RIGHTS)
    UNWRAP = 7     # the app closes its wrapped UDP socket, attached (SCM_RIGHTS)


MAX_NAME = 255


class SockType(enum.IntEnum):
    STREAM = 1
    DGRAM = 2


class Verdict(enum.IntEnum):
    RELAY = 0
    DIRECT = 1
    FAIL = 2
    PEER = 3       # an address: answers PEERNAME and RESOLVE (see PeerReply)
    NAME = 4       # a host name: answers NAMEOF (see NameReply)
    READY = 5      # HANDOFF: the app's socket is connected through the chain
    SWAP = 6       # HANDOFF: the attached socket is, put it in place of the app's
    CARRY = 7      # datagrams: envelope them to the carrier port (protocol/datagram.py)
    WRAP = 8       # WRAP: send datagrams to hop 1's relay yourself (datagram.WrapReply)


FLAG_CACHE = 0x01
"""Reply flag: a DIRECT answer the shim may reuse for the same destination until the
policy generation (the first 8 token bytes) changes (docs/wire.md, "Caching")."""


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


def pack_addr(addr: IPAddress) -> tuple[int, bytes]:
    return (4 if addr.version == 4 else 6), addr.packed.ljust(16, b"\0")


def unpack_addr(family: int, raw: bytes) -> IPAddress:
    if family == 4:
        return ipaddress.IPv4Address(raw[:4])
    if family == 6:
        return ipaddress.IPv6Address(raw)
    raise WireError(f"unknown address family {family}")


@dataclass(frozen=True)
class ConnectRequest:
    """CONNECT (addr:port is where the app connects), PEERNAME (addr:port is the
    local end of a relayed socket) or NAMEOF (addr is the address the app asks the
    name of; port 0)."""

    addr: IPAddress
    port: int
    socktype: SockType = SockType.STREAM
    session: bytes = bytes(SESSION_SIZE)
    op: Op = Op.CONNECT

    def dumps(self) -> bytes:
        family, raw = pack_addr(self.addr)
        return _REQUEST.pack(MAGIC, VERSION, self.op, family, self.socktype,
                             self.port, 0, raw, self.session)

    @classmethod
    def loads(cls, data: bytes) -> ConnectRequest:
        """Parse a CONNECT, PEERNAME or NAMEOF request header; raise WireError."""
        return cls.from_header(Header.loads(data))

    @classmethod
    def from_header(cls, head: Header) -> ConnectRequest:
        if head.op is Op.RESOLVE:
            raise WireError("a RESOLVE request is read with ResolveRequest")
        return cls(unpack_addr(head.family, head.raw), head.port, head.socktype,
                   head.session, head.op)


@dataclass(frozen=True)
class Header:
    """The 48-byte head of every request; body_len bytes follow it."""

    op: Op
    family: int
    socktype: SockType
    port: int
    body_len: int
    raw: bytes
    session: bytes

    @classmethod
    def loads(cls, data: bytes) -> Header:
        if len(data) != REQUEST_SIZE:
            raise WireError(f"request is {len(data)} bytes, expected {REQUEST_SIZE}")
        magic, version, op, family, socktype, port, body_len, raw, session = \
            _REQUEST.unpack(data)
        if magic != MAGIC:
            raise WireError(f"bad magic {magic!r}, expected {MAGIC!r}")
        if version != VERSION:
            raise WireError(f"wire version {version}, this daemon speaks {VERSION}")
        try:
            kind_of_op = Op(op)
        except ValueError:
            raise WireError(f"unknown op {op}") from None
        try:
            kind = SockType(socktype)
        except ValueError:
            raise WireError(f"unknown socket type {socktype}") from None
        if kind_of_op is Op.RESOLVE:
            if not 1 <= body_len <= MAX_NAME:
                raise WireError(f"RESOLVE carries a 1..{MAX_NAME} byte name, got "
                                f"body_len {body_len}")
        elif body_len != 0:
            raise WireError(f"{kind_of_op.name} carries no body, got body_len {body_len}")
        if kind_of_op in (Op.WRAP, Op.UNWRAP) and kind is not SockType.DGRAM:
            raise WireError(f"{kind_of_op.name} is about a datagram socket (socktype 2)")
        return cls(kind_of_op, family, kind, port, body_len, raw, session)


@dataclass(frozen=True)
class ResolveRequest:
    """RESOLVE: a host name the app looks up; family 0 (either), 4 or 6."""

    name: str
    family: int = 0
    session: bytes = bytes(SESSION_SIZE)

    def dumps(self) -> bytes:
        raw = self.name.encode("ascii")
        return _REQUEST.pack(MAGIC, VERSION, Op.RESOLVE, self.family, SockType.STREAM,
                             0, len(raw), bytes(16), self.session) + raw

    @classmethod
    def from_header(cls, head: Header, body: bytes) -> ResolveRequest:
        if head.op is not Op.RESOLVE or len(body) != head.body_len:
            raise WireError("not a RESOLVE request with its body")
        if head.family not in (0, 4, 6):
            raise WireError(f"unknown address family {head.family}")
        if not all(33 <= b < 127 for b in body):
            raise WireError("a host name is printable ASCII without spaces")
        return cls(body.decode("ascii"), head.family, head.session)


@dataclass(frozen=True)
class Reply:
    verdict: Verdict
    code: Code = Code.NONE
    relay_port4: int = 0
    relay_port6: int = 0
    token: bytes = bytes(TOKEN_SIZE)
    flags: int = 0

    def dumps(self) -> bytes:
        return _REPLY.pack(MAGIC, VERSION, self.verdict, self.code, self.flags,
                           self.relay_port4, self.relay_port6, self.token)

    @classmethod
    def cached_direct(cls, generation: int) -> Reply:
        """DIRECT, and the shim may remember it while the policy generation holds."""
        return cls(Verdict.DIRECT, token=generation.to_bytes(8, "big") + bytes(8),
                   flags=FLAG_CACHE)

    @classmethod
    def carry(cls, port4: int, port6: int, generation: int, token: bytes) -> Reply:
        """CARRY: the carrier's loopback ports, the policy generation (bytes 12-19) and
        the grant's 8-byte token (bytes 20-27) (docs/wire.md, "Carried datagrams")."""
        if len(token) != CARRY_TOKEN_SIZE:
            raise WireError(f"a grant's token is {CARRY_TOKEN_SIZE} bytes")
        return cls(Verdict.CARRY, relay_port4=port4, relay_port6=port6,
                   token=generation.to_bytes(8, "big") + token)

    @property
    def generation(self) -> int:
        """CARRY, DIRECT with CACHE: the policy generation in bytes 12-19."""
        return int.from_bytes(self.token[:8], "big")

    @property
    def carry_token(self) -> bytes:
        """CARRY: the grant's token, bytes 20-27."""
        return self.token[8:]

    @classmethod
    def loads(cls, data: bytes) -> Reply:
        if len(data) != REPLY_SIZE:
            raise WireError(f"reply is {len(data)} bytes, expected {REPLY_SIZE}")
        magic, version, verdict, code, flags, port4, port6, token = _REPLY.unpack(data)
        if magic != MAGIC or version != VERSION:
            raise WireError("bad magic or version in reply")
        try:
            v = Verdict(verdict)
        except ValueError:
            raise WireError(f"unknown verdict {verdict}") from None
        if v is Verdict.PEER:
            raise WireError("a PEER reply is read with PeerReply.loads")
        if v is Verdict.NAME:
            raise WireError("a NAME reply is read with NameReply.loads")
        if v is Verdict.WRAP:
            raise WireError("a WRAP reply is read with datagram.WrapReply.loads")
        try:
            c = Code(code)
        except ValueError:
            c = Code.PROTO
        return cls(v, c, port4, port6, token, flags)

    @classmethod
    def fail(cls, err: int) -> Reply:
        return cls(Verdict.FAIL, Code.from_errno(err))


_PEER_REPLY = struct.Struct("!4sBBBxHH16s4x")  # same size and head as a Reply


@dataclass(frozen=True)
class PeerReply:
    """Answer to PEERNAME: the destination the app asked for (verdict PEER); the bytes
    where a Reply has code, relay_port4 and token carry family, port and address."""

    addr: IPAddress
    port: int

    def dumps(self) -> bytes:
        family, raw = pack_addr(self.addr)
        return _PEER_REPLY.pack(MAGIC, VERSION, Verdict.PEER, family, self.port, 0, raw)

    @classmethod
    def loads(cls, data: bytes) -> PeerReply:
        if len(data) != REPLY_SIZE:
            raise WireError(f"reply is {len(data)} bytes, expected {REPLY_SIZE}")
        magic, version, verdict, family, port, _, raw = _PEER_REPLY.unpack(data)
        if magic != MAGIC or version != VERSION or verdict != Verdict.PEER:
            raise WireError("not a PEER reply")
        return cls(unpack_addr(family, raw), port)


_NAME_HEAD = struct.Struct("!4sBB4xH20x")  # the 32-byte head of a NAME reply
assert _NAME_HEAD.size == REPLY_SIZE


def _check_name(raw: bytes) -> None:
    if not 1 <= len(raw) <= MAX_NAME:
        raise WireError(f"a name is 1..{MAX_NAME} bytes, got {len(raw)}")
    if not all(33 <= b < 127 for b in raw):
        raise WireError("a host name is printable ASCII without spaces")


@dataclass(frozen=True)
class NameReply:
    """Answer to NAMEOF (verdict NAME): the 32-byte head with body_len in bytes 10-11,
    then that many bytes of the name the address stands for."""

    name: str

    def dumps(self) -> bytes:
        try:
            raw = self.name.encode("ascii")
        except UnicodeEncodeError:
            raise WireError("a host name is printable ASCII without spaces") from None
        _check_name(raw)
        return _NAME_HEAD.pack(MAGIC, VERSION, Verdict.NAME, len(raw)) + raw

    @staticmethod
    def body_len(head: bytes) -> int:
        """How many bytes of name follow this 32-byte NAME reply head; raise
        WireError if it is not one."""
        if len(head) != REPLY_SIZE:
            raise WireError(f"reply is {len(head)} bytes, expected {REPLY_SIZE}")
        magic, version, verdict, body_len = _NAME_HEAD.unpack(head)
        if magic != MAGIC or version != VERSION or verdict != Verdict.NAME:
            raise WireError("not a NAME reply")
        if not 1 <= body_len <= MAX_NAME:
            raise WireError(f"a NAME reply carries a 1..{MAX_NAME} byte name, got "
                            f"body_len {body_len}")
        return int(body_len)

    @classmethod
    def loads(cls, data: bytes) -> NameReply:
        """Parse a whole NAME reply: the head, then exactly body_len bytes of name."""
        body_len = cls.body_len(data[:REPLY_SIZE])
        body = data[REPLY_SIZE:]
        if len(body) != body_len:
            raise WireError(f"a NAME reply's name is {body_len} bytes, got {len(body)}")
        _check_name(body)
        return cls(body.decode("ascii"))

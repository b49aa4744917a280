"""SOCKS4 and SOCKS4a CONNECT, as bytes: requests out, replies in. No I/O.

Request:  VN=4, CD=1, DSTPORT (2), DSTIP (4), USERID, NUL
          SOCKS4a: DSTIP = 0.0.0.x (x != 0), then after USERID's NUL: HOSTNAME, NUL
Reply:    VN (0; some servers send 4), CD (90 granted, 91 rejected or failed,
          92 no identd, 93 identd mismatch), DSTPORT (2), DSTIP (4)
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import struct
from dataclasses import dataclass

VERSION = 4
CMD_CONNECT = 1
REPLY_SIZE = 8
MAX_FIELD = 255
_SOCKS4A_MARKER = bytes([0, 0, 0, 1])


class ProtocolError(ValueError):
    """Bytes from a SOCKS4 server that are not a SOCKS4 reply."""


class ReplyCode(enum.IntEnum):
    GRANTED = 90
    REJECTED = 91
    NO_IDENTD = 92
    IDENTD_MISMATCH = 93

    def describe(self) -> str:
        return _DESCRIPTIONS[self]


_GRANTED = int(ReplyCode.GRANTED)

_DESCRIPTIONS = {
    ReplyCode.GRANTED: "request granted",
    ReplyCode.REJECTED: "request rejected or failed",
    ReplyCode.NO_IDENTD: "rejected: server cannot reach the client's identd",
    ReplyCode.IDENTD_MISMATCH: "rejected: identd reports a different user id",
}


def _field(value: str, what: str) -> bytes:
    raw = value.encode()
    if b"\0" in raw or len(raw) > MAX_FIELD:
        raise ValueError(f"SOCKS4 {what} must be at most {MAX_FIELD} bytes with no NUL")
    return raw + b"\0"


@dataclass(frozen=True)
class ConnectRequest:
    """CONNECT to an IPv4 address (SOCKS4) or a host name (SOCKS4a)."""

    host: str
    port: int
    userid: str = ""

    def dumps(self) -> bytes:
        if not 0 <= self.port <= 0xFFFF:
            raise ValueError(f"port {self.port} out of range")
        head = struct.pack("!BBH", VERSION, CMD_CONNECT, self.port)
        packed = _packed(self.host)
        if packed is None:
            if ":" in self.host:
                raise ValueError("SOCKS4 cannot carry an IPv6 address")
            return (head + _SOCKS4A_MARKER + _field(self.userid, "user id")
                    + _field(self.host, "host name"))
        if packed[:3] == b"\0\0\0" and packed[3]:
            raise ValueError(f"{self.host} cannot be sent in SOCKS4: 0.0.0.x means "
                             "SOCKS4a")
        return head + packed + _field(self.userid, "user id")


@functools.lru_cache(maxsize=1024)
def connect_request(host: str, port: int, userid: str = "") -> bytes:
    """ConnectRequest(host, port, userid).dumps(), cached: a chain sends its hops the
    same few requests on every connection (ValueError, not cached, as dumps())."""
    return ConnectRequest(host, port, userid).dumps()


def is_grant(data: bytes) -> bool:
    """Whether data is a well-formed reply granting the request: what Reply.loads()
    would accept with code 90, without building it (the success path)."""
    return len(data) == REPLY_SIZE and data[0] in (0, VERSION) \
        and data[1] == _GRANTED


@functools.lru_cache(maxsize=1024)
def _packed(host: str) -> bytes | None:
    """host's 4 bytes if it is an IPv4 address, else None (cached: a chain asks its
    hops for the same few addresses on every connection)."""
    try:
        return ipaddress.IPv4Address(host).packed
    except ValueError:
        return None


@dataclass(frozen=True)
class Reply:
    code: int
    port: int
    addr: ipaddress.IPv4Address

    @property
    def granted(self) -> bool:
        return self.code == ReplyCode.GRANTED

    def describe(self) -> str:
        try:
            return f"{self.code} ({ReplyCode(self.code).describe()})"
        except ValueError:
            return f"{self.code} (unknown reply code)"

    @classmethod
    def loads(cls, data: bytes) -> Reply:
        if len(data) != REPLY_SIZE:
            raise ProtocolError(f"SOCKS4 reply is {REPLY_SIZE} bytes, got {len(data)}")
        vn, code, port = struct.unpack("!BBH", data[:4])
        if vn not in (0, VERSION):
            raise ProtocolError(f"SOCKS4 reply version {vn}, expected 0 (or 4)")
        if not 90 <= code <= 93:
            raise ProtocolError(f"SOCKS4 reply code {code} is not 90..93")
        return cls(code, port, ipaddress.IPv4Address(data[4:8]))

    def dumps(self) -> bytes:
        return struct.pack("!BBH", 0, self.code, self.port) + self.addr.packed


def parse_request(data: bytes) -> tuple[int, ConnectRequest | BindRequest] | None:
    """Server side: parse one request from the start of `data`. Returns (bytes
    used, request), or None if more bytes are needed; raises ProtocolError for a
    request that can never be valid. Bytes after the request belong to the client's
    data stream (a client may pipeline them)."""
    if len(data) < 8:
        if data and data[0] != VERSION:
            raise ProtocolError(f"SOCKS version {data[0]}, expected 4")
        return None
    vn, cd, port = struct.unpack("!BBH", data[:4])
    if vn != VERSION:
        raise ProtocolError(f"SOCKS version {vn}, expected 4")
    if cd not in (CMD_CONNECT, CMD_BIND):
        raise ProtocolError(f"SOCKS4 command {cd} is neither CONNECT nor BIND")
    userid_end = data.find(b"\0", 8)
    if userid_end == -1:
        if len(data) - 8 > MAX_FIELD:
            raise ProtocolError("SOCKS4 user id longer than 255 bytes")
        return None
    userid = data[8:userid_end].decode(errors="replace")
    ip = data[4:8]
    host = str(ipaddress.IPv4Address(ip))
    used = userid_end + 1
    if ip[:3] == b"\0\0\0" and ip[3] != 0:       # SOCKS4a: a host name follows
        host_end = data.find(b"\0", used)
        if host_end == -1:
            if len(data) - used > MAX_FIELD:
                raise ProtocolError("SOCKS4a host name longer than 255 bytes")
            return None
        raw = data[used:host_end]
        if not raw or not all(33 <= b < 127 for b in raw):
            raise ProtocolError("SOCKS4a host name is empty or not printable ASCII")
        host = raw.decode()
        used = host_end + 1
    if cd == CMD_BIND:
        return used, BindRequest(host, port, userid)
    return used, ConnectRequest(host, port, userid)


CMD_BIND = 2


@dataclass(frozen=True)
class BindRequest:
    """Recognised so that it can be refused properly (only CONNECT is served)."""

    host: str
    port: int
    userid: str = ""

"""SOCKS5 CONNECT (RFC 1928) with no-auth and username/password (RFC 1929), as bytes.
No I/O: a client sends Greeting, reads a MethodChoice (2 bytes), optionally sends
UserPassAuth and reads an AuthReply (2 bytes), sends a ConnectRequest, then reads a
reply in two steps: Reply.head_size bytes, then Reply.rest_size(head) more."""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass

VERSION = 5
CMD_CONNECT = 1
METHOD_NO_AUTH = 0x00
METHOD_USERPASS = 0x02
METHOD_NONE_ACCEPTABLE = 0xFF
AUTH_VERSION = 1
MAX_FIELD = 255


class ProtocolError(ValueError):
    """Bytes from a SOCKS5 server that do not follow RFC 1928/1929."""


class UnsupportedAddress(ProtocolError):
    """An address type this server cannot read: answered with reply code 8."""


class AddrType(enum.IntEnum):
    IPV4 = 1
    DOMAIN = 3
    IPV6 = 4


def address_size(atyp: int, first: int, what: str = "SOCKS5") -> int:
    """The bytes of an address after its ATYP (DST.ADDR, BND.ADDR, a UDP header's):
    4 for IPv4, 16 for IPv6, and for a host name its length byte (`first`, the
    address's first byte) and the name. UnsupportedAddress for another ATYP; `what`
    names the message in its text."""
    if atyp == AddrType.IPV4:
        return 4
    if atyp == AddrType.IPV6:
        return 16
    if atyp == AddrType.DOMAIN:
        return 1 + first
    raise UnsupportedAddress(f"{what} address type {atyp} is not 1, 3 or 4")


class ReplyCode(enum.IntEnum):
    SUCCEEDED = 0
    GENERAL_FAILURE = 1
    NOT_ALLOWED = 2
    NETWORK_UNREACHABLE = 3
    HOST_UNREACHABLE = 4
    CONNECTION_REFUSED = 5
    TTL_EXPIRED = 6
    COMMAND_NOT_SUPPORTED = 7
    ADDRESS_TYPE_NOT_SUPPORTED = 8

    def describe(self) -> str:
        return self.name.lower().replace("_", " ")


def _field(value: str, what: str) -> bytes:
    raw = value.encode()
    if not 1 <= len(raw) <= MAX_FIELD:
        raise ValueError(f"SOCKS5 {what} must be 1..{MAX_FIELD} bytes")
    return bytes([len(raw)]) + raw


def encode_address(host: str, port: int) -> bytes:
    """ATYP, DST.ADDR, DST.PORT for an IPv4/IPv6 address or a host name."""
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port {port} out of range")
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return bytes([AddrType.DOMAIN]) + _field(host, "host name") + \
            struct.pack("!H", port)
    kind = AddrType.IPV4 if addr.version == 4 else AddrType.IPV6
    return bytes([kind]) + addr.packed + struct.pack("!H", port)


@dataclass(frozen=True)
class Greeting:
    methods: tuple[int, ...] = (METHOD_NO_AUTH,)

    def dumps(self) -> bytes:
        return bytes([VERSION, len(self.methods), *self.methods])


@dataclass(frozen=True)
class MethodChoice:
    method: int
    SIZE = 2

    @classmethod
    def loads(cls, data: bytes) -> MethodChoice:
        if len(data) != cls.SIZE:
            raise ProtocolError(f"method choice is 2 bytes, got {len(data)}")
        if data[0] != VERSION:
            raise ProtocolError(f"SOCKS5 version byte {data[0]}, expected 5")
        return cls(data[1])


@dataclass(frozen=True)
class UserPassAuth:
    user: str
    password: str

    def dumps(self) -> bytes:
        return bytes([AUTH_VERSION]) + _field(self.user, "user name") + \
            _field(self.password, "password")


@dataclass(frozen=True)
class AuthReply:
    status: int
    SIZE = 2

    @property
    def ok(self) -> bool:
        return self.status == 0

    @classmethod
    def loads(cls, data: bytes) -> AuthReply:
        if len(data) != cls.SIZE:
            raise ProtocolError(f"auth reply is 2 bytes, got {len(data)}")
        if data[0] != AUTH_VERSION:
            raise ProtocolError(f"auth reply version {data[0]}, expected 1")
        return cls(data[1])


@dataclass(frozen=True)
class ConnectRequest:
    host: str
    port: int
    command: int = CMD_CONNECT      # or 3, UDP ASSOCIATE (socks5udp.py)

    def dumps(self) -> bytes:
        return bytes([VERSION, self.command, 0]) + encode_address(self.host, self.port)


@dataclass(frozen=True)
class Reply:
    code: int
    host: str
    port: int

    head_size = 5   # VER REP RSV ATYP + first address byte (the length, for names)
    # What a reply usually is: an IPv4 bound address, which the servers at hand send
    # (danted, OpenSSH's ssh -D, Tor). A pipelined chain waits for one together with
    # the replies behind it counting on this many (chains/hops.py); a shorter one (a
    # name of under three characters as its bound address) only ends that wait
    # later (sockstream.GATHER_SECONDS): it is still read exactly.
    usual_size = 10

    @staticmethod
    def rest_size(head: bytes) -> int:
        """Bytes that follow the 5-byte head, from its ATYP (and length byte)."""
        if len(head) != Reply.head_size:
            raise ProtocolError("short SOCKS5 reply head")
        if head[0] != VERSION:
            raise ProtocolError(f"SOCKS5 reply version {head[0]}, expected 5")
        # the head holds the address's first byte already; then the port
        return address_size(head[3], head[4], "SOCKS5 reply") - 1 + 2

    @property
    def granted(self) -> bool:
        return self.code == ReplyCode.SUCCEEDED

    def describe(self) -> str:
        try:
            return f"{self.code} ({ReplyCode(self.code).describe()})"
        except ValueError:
            return f"{self.code} (unknown reply code)"

    @classmethod
    def loads(cls, data: bytes) -> Reply:
        if len(data) < cls.head_size:
            raise ProtocolError("short SOCKS5 reply")
        if len(data) != cls.head_size + cls.rest_size(data[:cls.head_size]):
            raise ProtocolError(f"SOCKS5 reply of {len(data)} bytes does not match "
                                "its address type")
        if data[2] != 0:
            raise ProtocolError(f"SOCKS5 reply reserved byte is {data[2]}, not 0")
        atyp, body = data[3], data[4:-2]
        (port,) = struct.unpack("!H", data[-2:])
        if atyp == AddrType.DOMAIN:
            host = body[1:].decode(errors="replace")
        else:
            host = str(ipaddress.ip_address(body))
        return cls(data[1], host, port)

    def dumps(self) -> bytes:
        return bytes([VERSION, self.code, 0]) + encode_address(self.host, self.port)


def parse_greeting(data: bytes) -> tuple[int, tuple[int, ...]] | None:
    """Server side: (bytes used, offered methods), None if incomplete."""
    if not data:
        return None
    if data[0] != VERSION:
        raise ProtocolError(f"SOCKS version {data[0]}, expected 5")
    if len(data) < 2:
        return None
    n = data[1]
    if n == 0:
        raise ProtocolError("a SOCKS5 greeting offers no method")
    if len(data) < 2 + n:
        return None
    return 2 + n, tuple(data[2:2 + n])


def parse_userpass(data: bytes) -> tuple[int, UserPassAuth] | None:
    """Server side: one RFC 1929 request, None if incomplete."""
    if not data:
        return None
    if data[0] != AUTH_VERSION:
        raise ProtocolError(f"username/password version {data[0]}, expected 1")
    if len(data) < 2:
        return None
    ulen = data[1]
    if len(data) < 3 + ulen:
        return None
    plen = data[2 + ulen]
    if len(data) < 3 + ulen + plen:
        return None
    user = data[2:2 + ulen].decode(errors="replace")
    password = data[3 + ulen:3 + ulen + plen].decode(errors="replace")
    return 3 + ulen + plen, UserPassAuth(user, password)


def parse_request(data: bytes) -> tuple[int, int, str, int] | None:
    """Server side: (bytes used, command, host, port), None if incomplete. Unknown
    commands parse (so they can be answered 'command not supported')."""
    if len(data) < 5:
        if data and data[0] != VERSION:
            raise ProtocolError(f"SOCKS version {data[0]}, expected 5")
        return None
    if data[0] != VERSION:
        raise ProtocolError(f"SOCKS version {data[0]}, expected 5")
    if data[2] != 0:
        raise ProtocolError(f"SOCKS5 request reserved byte is {data[2]}, not 0")
    atyp = data[3]
    end = 4 + address_size(atyp, data[4])
    if len(data) < end + 2:
        return None
    if atyp == AddrType.DOMAIN:
        raw = data[5:end]
        if not raw or not all(33 <= b < 127 for b in raw):
            raise ProtocolError("SOCKS5 host name is empty or not printable ASCII")
        host = raw.decode()
    else:
        host = str(ipaddress.ip_address(data[4:end]))
    (port,) = struct.unpack("!H", data[end:end + 2])
    return end + 2, data[1], host, port


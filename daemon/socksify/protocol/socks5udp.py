"""SOCKS5 UDP (RFC 1928 section 7) as bytes: the UDP ASSOCIATE command and the
header before each datagram, RSV(2) FRAG(1) ATYP DST.ADDR DST.PORT DATA. No I/O.

Through a chain, a datagram carries one header per hop it still has to cross
(wrap_layers): hop 1 reads the outermost, which names hop 2's relay, and so on; the
innermost names the destination."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from .socks5 import AddrType, ProtocolError, address_size, encode_address

CMD_UDP_ASSOCIATE = 3


class Fragmented(ProtocolError):
    """A datagram with FRAG != 0: fragments are not reassembled, the datagram is
    dropped (and counted)."""


@dataclass(frozen=True)
class Header:
    host: str          # an address (IPv4 or IPv6) or, for ATYP 3, a host name
    port: int
    size: int          # bytes the header took


def wrap(host: str, port: int, payload: bytes) -> bytes:
    """One header (FRAG 0) naming host:port, then the payload."""
    return b"\0\0\0" + encode_address(host, port) + payload


def wrap_layers(relays: list[tuple[str, int]], host: str, port: int,
                payload: bytes) -> bytes:
    """The datagram hop 1's relay gets through a chain: a header per further hop's
    relay (hop 2's outermost), then the destination's, then the payload."""
    head = b"".join(b"\0\0\0" + encode_address(h, p) for h, p in relays)
    return head + wrap(host, port, payload)


def read_header(data: bytes | memoryview, offset: int = 0) -> Header:
    """The header at data[offset:]; ProtocolError if malformed, Fragmented for
    FRAG != 0."""
    view = memoryview(data)[offset:]
    if len(view) < 4:
        raise ProtocolError(f"SOCKS5 UDP header of {len(view)} bytes")
    if view[0] != 0 or view[1] != 0:
        raise ProtocolError("SOCKS5 UDP header reserved bytes are not 0")
    if view[2] != 0:
        raise Fragmented(f"SOCKS5 UDP fragment {view[2]}")
    atyp = view[3]
    first = view[4] if len(view) > 4 else 0
    end = 4 + address_size(atyp, first, "SOCKS5 UDP")
    if atyp == AddrType.DOMAIN and first == 0:
        raise ProtocolError("SOCKS5 UDP header with an empty host name")
    if len(view) < end + 2:
        raise ProtocolError("SOCKS5 UDP header cut short")
    if atyp == AddrType.DOMAIN:
        host = bytes(view[5:end]).decode(errors="replace")
    else:
        host = str(ipaddress.ip_address(bytes(view[4:end])))
    (port,) = struct.unpack("!H", view[end:end + 2])
    return Header(host, port, end + 2)


def unwrap(data: bytes) -> tuple[str, int, bytes]:
    """(host, port, payload) of a datagram with one header."""
    head = read_header(data)
    return head.host, head.port, data[head.size:]


def unwrap_layers(data: bytes, layers: int) -> tuple[list[tuple[str, int]], bytes]:
    """The sources named by `layers` nested headers (outermost first), and the
    payload."""
    sources = []
    offset = 0
    for _ in range(layers):
        head = read_header(data, offset)
        sources.append((head.host, head.port))
        offset += head.size
    return sources, data[offset:]

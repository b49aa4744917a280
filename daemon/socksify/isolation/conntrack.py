"""Where a redirected datagram was going: one conntrack lookup (ctnetlink,
IPCTNL_MSG_CT_GET) on a NETLINK_NETFILTER socket the launcher made inside the
isolated namespace (netlink checks the opener's capabilities there, as for the
sock_diag socket).

A datagram the namespace's nft rules redirected and source-NATed (ruleset.py) reaches
the daemon's carrier socket from 127.0.0.1:X (or [::1]:X). Its conntrack entry is found
by its reply tuple -- from the carrier socket's address to 127.0.0.1:X -- and holds the
original tuple: the program's socket address and the destination it sent to. No I/O
but the one request and its answer; no SOCKS."""

from __future__ import annotations

import ipaddress
import itertools
import socket
import struct
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

NETLINK_NETFILTER = 12
_NFNL_SUBSYS_CTNETLINK = 1
_IPCTNL_MSG_CT_NEW, _IPCTNL_MSG_CT_GET = 0, 1
_NLM_F_REQUEST = 1
_NLMSG_ERROR = 2
_NLA_F_NESTED = 0x8000
_CTA_TUPLE_ORIG, _CTA_TUPLE_REPLY = 1, 2
_CTA_TUPLE_IP, _CTA_TUPLE_PROTO = 1, 2
_CTA_IP_V4_SRC, _CTA_IP_V4_DST, _CTA_IP_V6_SRC, _CTA_IP_V6_DST = 1, 2, 3, 4
_CTA_PROTO_NUM, _CTA_PROTO_SRC_PORT, _CTA_PROTO_DST_PORT = 1, 2, 3

_NLMSG = struct.Struct("=IHHII")       # len, type, flags, seq, pid
_NFGEN = struct.Struct("=BBH")         # family, version, res_id (big-endian, 0)
_NLA = struct.Struct("=HH")            # len, type
TIMEOUT = 0.5


@dataclass(frozen=True)
class Tuple:
    """One direction of a conntrack entry (UDP)."""
    src: IPAddress
    sport: int
    dst: IPAddress
    dport: int


def _attr(kind: int, payload: bytes) -> bytes:
    raw = _NLA.pack(_NLA.size + len(payload), kind) + payload
    return raw + bytes(-len(raw) % 4)


def get_request(reply: Tuple, seq: int = 1) -> bytes:
    """The CT_GET message asking for the UDP entry whose reply direction is `reply`."""
    v6 = reply.src.version == 6
    ips = _attr(_CTA_IP_V6_SRC if v6 else _CTA_IP_V4_SRC, reply.src.packed) + \
        _attr(_CTA_IP_V6_DST if v6 else _CTA_IP_V4_DST, reply.dst.packed)
    proto = _attr(_CTA_PROTO_NUM, bytes([socket.IPPROTO_UDP])) + \
        _attr(_CTA_PROTO_SRC_PORT, struct.pack(">H", reply.sport)) + \
        _attr(_CTA_PROTO_DST_PORT, struct.pack(">H", reply.dport))
    body = _NFGEN.pack(socket.AF_INET6 if v6 else socket.AF_INET, 0, 0) + _attr(
        _CTA_TUPLE_REPLY | _NLA_F_NESTED,
        _attr(_CTA_TUPLE_IP | _NLA_F_NESTED, ips) +
        _attr(_CTA_TUPLE_PROTO | _NLA_F_NESTED, proto))
    kind = (_NFNL_SUBSYS_CTNETLINK << 8) | _IPCTNL_MSG_CT_GET
    return _NLMSG.pack(_NLMSG.size + len(body), kind, _NLM_F_REQUEST, seq, 0) + body


def _attrs(data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    at = 0
    while at + _NLA.size <= len(data):
        length, kind = _NLA.unpack_from(data, at)
        if length < _NLA.size or at + length > len(data):
            break
        out[kind & ~_NLA_F_NESTED & 0xFFFF] = data[at + _NLA.size:at + length]
        at += (length + 3) & ~3
    return out


def answer_seq(data: bytes) -> int | None:
    """The sequence number an answer carries (None: too short)."""
    return _NLMSG.unpack_from(data)[3] if len(data) >= _NLMSG.size else None


def parse_reply(data: bytes) -> Tuple | None:
    """The original tuple in a CT_NEW answer; None for an error (ENOENT: no such
    entry) or anything malformed."""
    if len(data) < _NLMSG.size + _NFGEN.size:
        return None
    length, kind = _NLMSG.unpack_from(data)[:2]
    if kind == _NLMSG_ERROR or kind != (_NFNL_SUBSYS_CTNETLINK << 8) | _IPCTNL_MSG_CT_NEW:
        return None
    top = _attrs(data[_NLMSG.size + _NFGEN.size:min(length, len(data))])
    orig = _attrs(top.get(_CTA_TUPLE_ORIG, b""))
    ips, proto = _attrs(orig.get(_CTA_TUPLE_IP, b"")), \
        _attrs(orig.get(_CTA_TUPLE_PROTO, b""))
    try:
        if _CTA_IP_V4_SRC in ips:
            src: IPAddress = ipaddress.IPv4Address(ips[_CTA_IP_V4_SRC])
            dst: IPAddress = ipaddress.IPv4Address(ips[_CTA_IP_V4_DST])
        else:
            src = ipaddress.IPv6Address(ips[_CTA_IP_V6_SRC])
            dst = ipaddress.IPv6Address(ips[_CTA_IP_V6_DST])
        if proto[_CTA_PROTO_NUM][:1] != bytes([socket.IPPROTO_UDP]):
            return None
        sport = struct.unpack(">H", proto[_CTA_PROTO_SRC_PORT][:2])[0]
        dport = struct.unpack(">H", proto[_CTA_PROTO_DST_PORT][:2])[0]
    except (KeyError, ValueError, struct.error):
        return None
    return Tuple(src, sport, dst, dport)


_seq = itertools.count(1)


def original(nl: socket.socket, reply: Tuple) -> Tuple | None:
    """The original tuple of the UDP entry whose reply direction is `reply`, asked on
    nl (blocking, at most TIMEOUT); None when there is none or nl fails. An answer to
    an earlier request (one that timed out) is skipped by its sequence number."""
    seq = next(_seq) & 0xFFFFFFFF
    try:
        if nl.gettimeout() != TIMEOUT:
            nl.settimeout(TIMEOUT)
        nl.send(get_request(reply, seq))
        for _ in range(8):
            data = nl.recv(65536)
            if answer_seq(data) == seq:
                return parse_reply(data)
    except OSError:
        pass
    return None


def open_socket() -> socket.socket:
    """A ctnetlink socket, made by the launcher inside the namespace. Raises OSError."""
    return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_NETFILTER)

"""The isolation path's UDP pieces without a namespace: the conntrack request and its
answer (isolation/conntrack.py), the UDP redirect rule (ruleset.py), the handover's
new kinds (protocol/handover.py), and which flow a reply goes back through
(isolation/datagrams.py)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from typing import Any, cast

import pytest

from socksify.chains import ChainSpec
from socksify.core.records import UdpFlow
from socksify.isolation import conntrack, ruleset
from socksify.isolation.datagrams import Datagrams
from socksify.isolation.udpflows import Path as FlowPath
from socksify.isolation.udpflows import Program
from socksify.procinfo import uid_only
from socksify.protocol import handover
from socksify.proxies import Proxy
from socksify.protocol.control import SESSION_SIZE

V4 = ipaddress.IPv4Address
NLA = struct.Struct("=HH")


def attrs(data: bytes) -> dict[int, bytes]:
    out, at = {}, 0
    while at < len(data):
        length, kind = NLA.unpack_from(data, at)
        out[kind & 0x7FFF] = data[at + 4:at + length]
        at += (length + 3) & ~3
    return out


def nla(kind: int, payload: bytes) -> bytes:
    raw = NLA.pack(4 + len(payload), kind) + payload
    return raw + bytes(-len(raw) % 4)


def test_get_request_asks_by_the_reply_tuple() -> None:
    reply = conntrack.Tuple(V4("127.0.0.1"), 40000, V4("192.0.2.1"), 51515)
    msg = conntrack.get_request(reply, seq=7)
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", msg)
    assert (length, kind, flags, seq) == (len(msg), 0x101, 1, 7)   # CTNETLINK, CT_GET
    assert msg[16] == socket.AF_INET and msg[17] == 0
    top = attrs(msg[20:])
    assert set(top) == {2}                                      # CTA_TUPLE_REPLY
    tup = attrs(top[2])
    ips, proto = attrs(tup[1]), attrs(tup[2])
    assert ips == {1: V4("127.0.0.1").packed, 2: V4("192.0.2.1").packed}
    assert proto[1][:1] == bytes([socket.IPPROTO_UDP])
    assert proto[2][:2] == struct.pack(">H", 40000)
    assert proto[3][:2] == struct.pack(">H", 51515)


def answer(src: bytes, dst: bytes, sport: int, dport: int, v6: bool = False,
           proto: int = socket.IPPROTO_UDP, kind: int = 0x100) -> bytes:
    ips = nla(3 if v6 else 1, src) + nla(4 if v6 else 2, dst)
    ports = nla(1, bytes([proto])) + nla(2, struct.pack(">H", sport)) + \
        nla(3, struct.pack(">H", dport))
    body = struct.pack("=BBH", socket.AF_INET6 if v6 else socket.AF_INET, 0, 0) + \
        nla(1 | 0x8000, nla(1 | 0x8000, ips) + nla(2 | 0x8000, ports))
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 1, 0) + body


def test_answer_gives_the_original_tuple() -> None:
    got = conntrack.parse_reply(answer(V4("192.0.2.1").packed,
                                       V4("10.77.2.3").packed, 51515, 7))
    assert got == conntrack.Tuple(V4("192.0.2.1"), 51515, V4("10.77.2.3"), 7)
    six = ipaddress.IPv6Address("2001:db8::1"), ipaddress.IPv6Address("2001:db8:77::3")
    got = conntrack.parse_reply(answer(six[0].packed, six[1].packed, 1, 2, v6=True))
    assert got == conntrack.Tuple(six[0], 1, six[1], 2)
    assert conntrack.answer_seq(answer(b"\0" * 4, b"\0" * 4, 1, 2)) == 1


@pytest.mark.parametrize("data", [
    answer(b"\1" * 4, b"\2" * 4, 1, 2, proto=socket.IPPROTO_TCP),   # not UDP
    answer(b"\1" * 4, b"\2" * 4, 1, 2, kind=2),                     # NLMSG_ERROR
    answer(b"\1" * 3, b"\2" * 4, 1, 2),                             # a short address
    answer(b"\1" * 4, b"\2" * 4, 1, 2)[:30],                        # cut short
    b"",
])
def test_anything_else_is_no_answer(data: bytes) -> None:
    assert conntrack.parse_reply(data) is None


def test_udp_is_redirected_only_with_a_carrier_port() -> None:
    without = ruleset.text(1000, 1001)
    assert "l4proto udp" not in without
    lines = [ln.strip() for ln in ruleset.text(1000, 1001, 1002).splitlines()]
    udp = lines.index("meta l4proto udp redirect to :1002")
    # after port 53 and the namespace's own addresses, which stay as they were
    assert lines.index("udp dport 53 redirect to :1001") < udp
    assert lines.index("fib daddr type local accept") < udp
    assert [ln for ln in lines if ln not in ("meta l4proto udp redirect to :1002",)] == \
        [ln.strip() for ln in without.splitlines()]


def test_every_kind_fits_one_handover() -> None:
    k = handover.Kind
    kinds = (k.RELAY, k.RELAY, k.REDIRECT, k.REDIRECT, k.DNS_UDP, k.DNS_UDP, k.DNS_TCP,
             k.DNS_TCP, k.UDP_CARRIER, k.UDP_CARRIER, k.SOCK_DIAG, k.CONNTRACK)
    header = handover.Header(bytes(SESSION_SIZE), kinds)
    data = header.dumps()
    assert data.endswith(b"rrRRuuttUUdc")
    assert len(kinds) <= handover.MAX_FDS and len(data) <= handover.MAX_SIZE
    assert handover.loads(data, len(kinds)) == header


class FakeCarrier:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def is_closing(self) -> bool:
        return False

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent.append((data, addr))


def test_a_reply_goes_back_through_the_flow_it_answers() -> None:
    """By address and port; a by-name flow (the last hop knows its address) by port,
    the last used; from anywhere else: dropped."""
    chain = ChainSpec("u", (Proxy.parse("socks5://127.0.0.1:1080"),))
    carrier = FakeCarrier()
    program = Program((V4("192.0.2.1"), 5000), 0.0, (V4("10.0.0.1"), 7))
    flow = UdpFlow("c1", uid_only(0, "t"), None, 0, 0.0)
    program.flow = flow

    def path(peer: int, dst: str, port: int, host: str | None, last: float) -> FlowPath:
        p = FlowPath(cast(asyncio.DatagramTransport, carrier), ("127.0.0.1", peer),
                  V4(dst), port, program, last, host=host, chain=chain, decided=True)
        program.paths.append(p)
        return p

    path(1, "10.0.0.1", 7, None, 1.0)
    path(2, "10.0.0.2", 7, None, 2.0)
    path(3, "240.0.0.1", 9, "far.example", 3.0)
    d = Datagrams.__new__(Datagrams)
    d._deliver(program, "u", "10.0.0.1", 7, b"a")
    d._deliver(program, "u", "10.0.0.2", 7, b"b")
    d._deliver(program, "u", "10.9.9.9", 9, b"c")       # the name's address
    d._deliver(program, "u", "10.0.0.1", 8, b"d")       # another port: no flow
    d._deliver(program, "v", "10.0.0.1", 7, b"e")       # another chain's reply
    assert carrier.sent == [(b"a", ("127.0.0.1", 1)), (b"b", ("127.0.0.1", 2)),
                            (b"c", ("127.0.0.1", 3))]
    assert (flow.datagrams_down, flow.counters.down, flow.dropped) == (3, 3, 2)

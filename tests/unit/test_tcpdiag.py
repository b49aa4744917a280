"""tcpdiag: the sock_diag dump of the kernel's TCP sockets. Parsing is checked on
netlink bytes built here from the kernel's layouts (include/uapi/linux/inet_diag.h,
tcp.h), byte for byte; the dump against the live kernel on a loopback connection
(its state, 4-tuple, cookie and tcp_info byte counts as the socket's own getsockopt
reports them); and the handed-off table's bookkeeping on a real socket."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
import sys
import time

import pytest

from socksify import tcpdiag
from socksify.chains import HopHealth
from socksify.core.events import Events
from socksify.core.handed import HandedOff
from socksify.core.records import Connection
from socksify.procinfo import AppInfo
from socksify.proxies import Proxy

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux")


def _diag_message(family: int, state: int, src: str, sport: int, dst: str, dport: int,
                  *, cookie: int = 0x1122334455, uid: int = 1000, inode: int = 77,
                  timer: int = 0, retrans: int = 0,
                  info: bytes | None = None) -> bytes:
    """One SOCK_DIAG_BY_FAMILY netlink message as the kernel writes it."""
    a, b = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    body = bytes([family, state, timer, retrans])
    body += sport.to_bytes(2, "big") + dport.to_bytes(2, "big")
    body += a.ljust(16, b"\0") + b.ljust(16, b"\0")
    body += struct.pack("=I", 3)                                  # interface
    body += struct.pack("=II", cookie & 0xFFFFFFFF, cookie >> 32)
    body += struct.pack("=IIIII", 0, 0, 0, uid, inode)           # expires..inode
    assert len(body) == 72
    if info is not None:
        attr = struct.pack("=HH", 4 + len(info), 2) + info       # INET_DIAG_INFO
        body += attr + bytes(-len(attr) % 4)
    body += struct.pack("=HH", 5, 1) + b"\x07\0\0\0"             # INET_DIAG_MEMINFO-ish
    return struct.pack("=IHHII", 16 + len(body), 20, 2, 1, 0) + body


def _tcp_info(retransmits: int, acked: int, received: int, size: int = 232) -> bytes:
    info = bytearray(size)
    info[0], info[2] = 1, retransmits
    if size >= 136:
        struct.pack_into("=QQ", info, 120, acked, received)
    return bytes(info)


DONE = struct.pack("=IHHII", 20, 3, 2, 1, 0) + b"\0\0\0\0"


def test_parse_ipv4_and_ipv6_with_tcp_info() -> None:
    data = _diag_message(socket.AF_INET, 1, "10.0.0.1", 40000, "10.0.0.2", 1080,
                         info=_tcp_info(0, 123, 4567))
    data += _diag_message(socket.AF_INET6, 8, "::ffff:10.0.0.3", 40001, "2001:db8::9",
                          443, timer=1, retrans=4, inode=0, info=_tcp_info(4, 5, 6))
    socks, done = tcpdiag.parse(data + DONE)
    assert done
    first, second = socks
    assert first.key == ("10.0.0.1", 40000, "10.0.0.2", 1080)
    assert (first.state_name, first.uid, first.inode) == ("ESTABLISHED", 1000, 77)
    assert first.cookie == 0x1122334455
    assert (first.bytes_acked, first.bytes_received, first.retransmits) == (123, 4567, 0)
    # an IPv4-mapped address is keyed as IPv4, so either kind of socket matches
    assert second.local == "10.0.0.3" and second.remote == "2001:db8::9"
    assert (second.state_name, second.timer, second.retrans, second.retransmits,
            second.inode) == ("CLOSE_WAIT", 1, 4, 4, 0)


def test_parse_filters_before_reading_tcp_info() -> None:
    want = ("10.0.0.1", 40000, "10.0.0.2", 1080)
    data = _diag_message(socket.AF_INET, 1, "10.0.0.1", 40000, "10.0.0.2", 1080,
                         info=_tcp_info(0, 1, 2))
    data += _diag_message(socket.AF_INET, 1, "10.0.0.1", 40002, "10.0.0.2", 1080,
                          info=_tcp_info(0, 1, 2))
    socks, done = tcpdiag.parse(data, want.__eq__)
    assert not done and [s.key for s in socks] == [want]


def test_parse_old_kernel_tcp_info_has_no_byte_counts() -> None:
    data = _diag_message(socket.AF_INET, 1, "10.0.0.1", 1, "10.0.0.2", 2,
                         info=_tcp_info(2, 0, 0, size=104))
    (sock,), _ = tcpdiag.parse(data)
    assert sock.bytes_acked is None and sock.retransmits == 2


def test_parse_errors_and_truncation() -> None:
    err = struct.pack("=IHHII", 36, 2, 0, 1, 0) + struct.pack("=i", -1) + bytes(16)
    with pytest.raises(OSError) as exc:
        tcpdiag.parse(err)
    assert exc.value.errno == 1
    whole = _diag_message(socket.AF_INET, 1, "10.0.0.1", 1, "10.0.0.2", 2)
    with pytest.raises(OSError):
        tcpdiag.parse(whole[:-8])


def test_four_tuple_spellings() -> None:
    """getsockname's spellings and inet_ntop's meet in one key."""
    assert tcpdiag.plain("::ffff:10.1.2.3") == "10.1.2.3"
    assert tcpdiag.plain("::FFFF:10.1.2.3") == "10.1.2.3"
    assert tcpdiag.plain("fe80::1%eth0") == "fe80::1"
    assert tcpdiag.plain("::ffff:a00:1") == "::ffff:a00:1"   # not how Linux writes it
    packed = ipaddress.ip_address("::ffff:10.1.2.3").packed
    assert tcpdiag.plain(socket.inet_ntop(socket.AF_INET6, packed)) == "10.1.2.3"


def test_dump_request_layout() -> None:
    req = tcpdiag.dump_request(socket.AF_INET6, 0x0F)
    length, kind, flags = struct.unpack_from("=IHH", req)
    assert (length, kind, flags) == (len(req), 20, 0x301) and length == 16 + 56
    family, proto, ext, _pad, states = struct.unpack_from("=BBBBI", req, 16)
    assert (family, proto, ext, states) == (socket.AF_INET6, 6, 2, 0x0F)


@linux
def test_dump_finds_a_live_connection() -> None:
    lst = socket.create_server(("127.0.0.1", 0))
    cli = socket.create_connection(lst.getsockname())
    acc, _ = lst.accept()
    try:
        cli.sendall(b"x" * 5000)
        got = 0
        while got < 5000:
            got += len(acc.recv(65536))
        acc.sendall(b"y" * 300)
        assert cli.recv(300)
        deadline = time.monotonic() + 5
        key = tcpdiag.four_tuple(cli)
        while True:
            (found,) = list(tcpdiag.dump(socket.AF_INET, key.__eq__))
            # bytes_acked counts the SYN of the side that connected, too
            if found.bytes_acked == 5001 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert found.state_name == "ESTABLISHED" and found.inode > 0
        assert found.cookie == tcpdiag.cookie_of(cli)
        assert (found.bytes_acked, found.bytes_received) == (5001, 300)
        assert tcpdiag.bytes_of(cli) == (5001, 300)
    finally:
        for s in (cli, acc, lst):
            s.close()


@linux
def test_handed_off_table_follows_a_socket_until_it_closes() -> None:
    """HandedOff on a real connection: bytes counted from the handoff on (what was
    sent before is the chain's negotiation), the kernel state in the row, a close
    event once the program closes its socket."""
    async def main() -> None:
        lst = socket.create_server(("127.0.0.1", 0))
        cli = socket.create_connection(lst.getsockname())
        acc, _ = lst.accept()
        cli.sendall(b"negotiation")
        acc.recv(100)
        closed: list[Connection] = []
        handed = HandedOff(HopHealth(), closed.append)
        conn = Connection("c1", AppInfo(1, "prog", "", 0, "root", ()), None, 80,
                          time.monotonic(), host="far")
        time.sleep(0.05)
        handed.add(conn, cli, Proxy("socks4", "127.0.0.1", lst.getsockname()[1]))
        cli.sendall(b"z" * 1000)
        acc.recv(2000)
        time.sleep(0.05)
        handed.refresh()
        assert handed.connections() == [conn]
        assert conn.counters.up == 1000 and conn.state == "ESTABLISHED"
        cli.close()
        time.sleep(0.05)
        handed.refresh()
        assert handed.connections() == [] and closed == [conn]
        acc.close()
        lst.close()
    asyncio.run(main())


def test_events_cost_nothing_without_subscribers() -> None:
    events = Events()
    conn = Connection("c1", AppInfo(1, "prog", "", 0, "root", ()), None, 80, 0.0)
    events.emit("connect", conn)            # no subscriber: nothing built, no error

    async def main() -> None:
        sub = events.subscribe(uid=5)       # another user's: sees nothing of uid 0
        mine = events.subscribe(uid=None)
        events.emit("close", conn)
        assert sub.queue.empty()
        event = mine.queue.get_nowait()
        assert event is not None and event["kind"] == "close" and event["id"] == "c1"
        events.close()
        assert mine.queue.get_nowait() is None
    asyncio.run(main())

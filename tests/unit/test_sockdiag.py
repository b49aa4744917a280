"""sockdiag: the kernel's socket tables through sock_diag. Parsing is checked on netlink
bytes built here from the kernel's layouts (include/uapi/linux/inet_diag.h, tcp.h),
byte for byte; the dump against the live kernel on a loopback connection (its state,
4-tuple, cookie and tcp_info byte counts as the socket's own getsockopt reports them);
exact lookups of TCP and UDP sockets (the kernel's rules for UDP), ours and another
user's; and the handed-off table's bookkeeping on a real socket."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import struct
import sys
import time

import pytest

from socksify import sockdiag
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
    socks, done = sockdiag.parse(data + DONE)
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
    socks, done = sockdiag.parse(data, want.__eq__)
    assert not done and [s.key for s in socks] == [want]


def test_parse_old_kernel_tcp_info_has_no_byte_counts() -> None:
    data = _diag_message(socket.AF_INET, 1, "10.0.0.1", 1, "10.0.0.2", 2,
                         info=_tcp_info(2, 0, 0, size=104))
    (sock,), _ = sockdiag.parse(data)
    assert sock.bytes_acked is None and sock.retransmits == 2


def test_parse_errors_and_truncation() -> None:
    err = struct.pack("=IHHII", 36, 2, 0, 1, 0) + struct.pack("=i", -1) + bytes(16)
    with pytest.raises(OSError) as exc:
        sockdiag.parse(err)
    assert exc.value.errno == 1
    whole = _diag_message(socket.AF_INET, 1, "10.0.0.1", 1, "10.0.0.2", 2)
    with pytest.raises(OSError):
        sockdiag.parse(whole[:-8])


def test_four_tuple_spellings() -> None:
    """getsockname's spellings and inet_ntop's meet in one key."""
    assert sockdiag.plain("::ffff:10.1.2.3") == "10.1.2.3"
    assert sockdiag.plain("::FFFF:10.1.2.3") == "10.1.2.3"
    assert sockdiag.plain("fe80::1%eth0") == "fe80::1"
    assert sockdiag.plain("::ffff:a00:1") == "::ffff:a00:1"   # not how Linux writes it
    packed = ipaddress.ip_address("::ffff:10.1.2.3").packed
    assert sockdiag.plain(socket.inet_ntop(socket.AF_INET6, packed)) == "10.1.2.3"


def test_dump_request_layout() -> None:
    req = sockdiag.dump_request(socket.AF_INET6, 0x0F)
    length, kind, flags = struct.unpack_from("=IHH", req)
    assert (length, kind, flags) == (len(req), 20, 0x301) and length == 16 + 56
    family, proto, ext, _pad, states = struct.unpack_from("=BBBBI", req, 16)
    assert (family, proto, ext, states) == (socket.AF_INET6, 6, 2, 0x0F)


def test_lookup_request_layout() -> None:
    """TCP asks (local, remote) as src, dst; UDP the other way round (the kernel reads
    src as the datagram's source); IPv4-mapped ends are asked as AF_INET; no cookie."""
    req = sockdiag.lookup_request(socket.IPPROTO_TCP, ("::ffff:10.0.0.1", 40000),
                                  (ipaddress.ip_address("10.0.0.2"), 1080), seq=9)
    length, kind, flags, seq = struct.unpack_from("=IHHI", req)
    assert (length, kind, flags, seq) == (len(req), 20, 1, 9) and length == 16 + 56
    family, proto, ext, _pad, states = struct.unpack_from("=BBBBI", req, 16)
    assert (family, proto, ext, states) == (socket.AF_INET, 6, 0, 0xFFFFFFFF)
    sport, dport, src, dst = struct.unpack_from(">HH16s16s", req, 24)
    assert (sport, dport) == (40000, 1080)
    assert (src, dst) == (bytes([10, 0, 0, 1]) + bytes(12), bytes([10, 0, 0, 2]) + bytes(12))
    assert struct.unpack_from("=III", req, 60) == (0, 0xFFFFFFFF, 0xFFFFFFFF)
    udp = sockdiag.lookup_request(socket.IPPROTO_UDP, ("::1", 5353), ("2001:db8::9", 53))
    family, proto = struct.unpack_from("=BB", udp, 16)
    sport, dport, src, dst = struct.unpack_from(">HH16s16s", udp, 24)
    assert (family, proto, sport, dport) == (socket.AF_INET6, 17, 53, 5353)
    assert (src, dst) == (ipaddress.ip_address("2001:db8::9").packed,
                          ipaddress.ip_address("::1").packed)
    # one IPv6 end: the IPv4 one is asked as mapped
    mixed = sockdiag.lookup_request(socket.IPPROTO_TCP, ("10.0.0.1", 1), ("::1", 2))
    assert mixed[16] == socket.AF_INET6
    assert mixed[28:44] == ipaddress.ip_address("::ffff:10.0.0.1").packed


def _error(err: int, seq: int = 1) -> bytes:
    return struct.pack("=IHHII", 36, 2, 0, seq, 0) + struct.pack("=i", -err) + bytes(16)


def test_parse_lookup_replies() -> None:
    one = _diag_message(socket.AF_INET, 1, "10.0.0.1", 40000, "10.0.0.2", 1080,
                        uid=1234, inode=99)
    assert sockdiag.parse_lookup(one) == sockdiag.Owner(1234, 99)
    udp = _diag_message(socket.AF_INET, 7, "0.0.0.0", 5353, "0.0.0.0", 0, inode=5)
    assert sockdiag.parse_lookup(udp) == sockdiag.Owner(1000, 5)
    orphan = _diag_message(socket.AF_INET, 5, "10.0.0.1", 1, "10.0.0.2", 2, inode=0)
    assert sockdiag.parse_lookup(orphan) == sockdiag.Owner(1000, 0)
    # what the kernel's lookup falls back to is not the socket asked for
    for state in (10, 6):                       # LISTEN, TIME_WAIT
        other = _diag_message(socket.AF_INET, state, "10.0.0.1", 1, "10.0.0.2", 2)
        assert sockdiag.parse_lookup(other) is None
    assert sockdiag.parse_lookup(_error(2)) is None          # ENOENT: no such socket
    assert sockdiag.parse_lookup(_error(0)) is None          # an acknowledgement
    with pytest.raises(OSError) as exc:
        sockdiag.parse_lookup(_error(1))                     # EPERM
    assert exc.value.errno == 1
    with pytest.raises(OSError):
        sockdiag.parse_lookup(struct.pack("=IHHII", 20, 99, 0, 1, 0) + bytes(4))


def test_lookup_skips_a_stale_reply(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a netlink socket kept open (the isolated namespace's), the reply to a request
    that timed out may come first: only the one with this request's seq counts."""
    monkeypatch.setattr(sockdiag, "_seqs", iter([41]))
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with ours, theirs:
        stale = bytearray(_diag_message(socket.AF_INET, 1, "10.0.0.1", 1, "10.0.0.2", 2,
                                        uid=1, inode=1))
        fresh = bytearray(_diag_message(socket.AF_INET, 1, "10.0.0.1", 1, "10.0.0.2", 2,
                                        uid=2, inode=2))
        struct.pack_into("=I", stale, 8, 40)
        struct.pack_into("=I", fresh, 8, 41)
        theirs.send(bytes(stale))
        theirs.send(bytes(fresh))
        found = sockdiag.lookup(socket.IPPROTO_TCP, ("10.0.0.1", 1), ("10.0.0.2", 2),
                                ours, 1.0)
        assert found == sockdiag.Owner(2, 2)
        req = theirs.recv(100)
        assert struct.unpack_from("=I", req, 8)[0] == 41


@linux
def test_udp_lookup_follows_the_kernels_receive_rule() -> None:
    """A sender bound to 0.0.0.0:P sending from loopback to 127.0.0.1:Q: asked as
    (127.0.0.1:P, 127.0.0.1:Q) the answer is the sender's socket (not the receiver's,
    which the kernel would name were the ends not swapped for UDP), with the remote
    as the wildcard too; a connected socket only with its own remote."""
    snd = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rcv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    con = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        snd.bind(("0.0.0.0", 0))
        rcv.bind(("127.0.0.1", 0))
        rcv.settimeout(5)
        snd.sendto(b"q", rcv.getsockname())
        _data, source = rcv.recvfrom(10)
        p, q = snd.getsockname()[1], rcv.getsockname()[1]
        assert source == ("127.0.0.1", p)
        inode = os.fstat(snd.fileno()).st_ino
        me = os.getuid()
        udp = socket.IPPROTO_UDP
        assert sockdiag.lookup(udp, source, ("127.0.0.1", q)) == sockdiag.Owner(me, inode)
        assert sockdiag.lookup(udp, source, ("0.0.0.0", 0)) == sockdiag.Owner(me, inode)
        assert sockdiag.lookup(udp, ("::ffff:127.0.0.1", p), ("::ffff:127.0.0.1", q)) \
            == sockdiag.Owner(me, inode)
        assert sockdiag.lookup(udp, ("127.0.0.1", q), ("127.0.0.1", p)) == \
            sockdiag.Owner(me, os.fstat(rcv.fileno()).st_ino)
        assert sockdiag.lookup(socket.IPPROTO_TCP, source, ("127.0.0.1", q)) is None
        # the text tables: the exact ends, or any remote with remote None
        assert sockdiag.proc_lookup(udp, source, None) == sockdiag.Owner(me, inode)
        assert sockdiag.proc_lookup(udp, source, ("127.0.0.1", q)) is None
        con.connect(rcv.getsockname())
        cp = con.getsockname()[1]
        con_owner = sockdiag.Owner(me, os.fstat(con.fileno()).st_ino)
        assert sockdiag.lookup(udp, ("127.0.0.1", cp), ("127.0.0.1", q)) == con_owner
        assert sockdiag.lookup(udp, ("127.0.0.1", cp), ("0.0.0.0", 0)) is None
        assert sockdiag.lookup(udp, ("127.0.0.1", cp), ("127.0.0.2", q)) is None
        assert sockdiag.proc_lookup(udp, ("127.0.0.1", cp), ("127.0.0.1", q)) == \
            con_owner
    finally:
        for s in (snd, rcv, con):
            s.close()


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
        key = sockdiag.four_tuple(cli)
        while True:
            (found,) = list(sockdiag.dump(socket.AF_INET, key.__eq__))
            # bytes_acked counts the SYN of the side that connected, too
            if found.bytes_acked == 5001 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert found.state_name == "ESTABLISHED" and found.inode > 0
        assert found.cookie == sockdiag.cookie_of(cli)
        assert (found.bytes_acked, found.bytes_received) == (5001, 300)
        assert sockdiag.bytes_of(cli) == (5001, 300)
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

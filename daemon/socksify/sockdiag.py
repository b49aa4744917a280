"""The kernel's socket tables, read through sock_diag (NETLINK_SOCK_DIAG, inet_diag):
the one place that speaks it. Two questions are asked:

- lookup(): whose is this socket? One exact request for a TCP or UDP 4-tuple (one
  round trip, whatever the number of sockets): its owner's uid and inode. The kernel
  shows any user a socket's owner, so this works where the owner's process cannot be
  read. proc_lookup() answers the same from /proc/net/{tcp,udp}{,6} where netlink
  cannot be used, or with the wildcards a querier's UDP socket needs.
- dump(): every TCP socket of a family, with its state, retransmits, cookie and the
  byte counts of its tcp_info (bytes_acked: sent and acknowledged; bytes_received).
  This is how the daemon follows the connections it handed off: it keeps no
  descriptor of them, the kernel does.

An exact lookup is the kernel's own lookup of an arriving packet, so it answers with
the socket that packet would reach, which is not always a socket of that exact
4-tuple:
- TCP: an established (or closing) socket of the 4-tuple, else the listener on the
  local port. A listener is not the asked socket: lookup() says None for it, and for
  a TIME_WAIT remnant (the kernel keeps no owner for it).
- UDP: the kernel reads the request's source as the packet's source, i.e. the
  socket's remote end (net/ipv4/udp_diag.c, udp_dump_one: "src and dst are swapped for
  historical reasons"); lookup() takes (local, remote) like TCP and swaps them for
  it. A connected socket is found with its exact remote only; an unconnected one
  with any remote (0.0.0.0:0 too), and one bound to the wildcard address with any
  local address on its port. So a sender bound to 0.0.0.0:P sending from loopback to
  127.0.0.1:Q is found by lookup(UDP, ("127.0.0.1", P), ("127.0.0.1", Q)), and also
  with remote ("0.0.0.0", 0); asked the other way round (the receiver's view without
  the swap) the kernel would name the receiver's socket on Q. The answer names the
  socket in this namespace that would take such a datagram: a sender in another
  namespace is not told apart from a local socket on that port.
- IPv4 (and IPv4-mapped IPv6) ends are asked as AF_INET: that finds AF_INET sockets
  and dual-stack AF_INET6 ones alike (asked as AF_INET6 with mapped addresses, the
  kernel's UDP lookup skips AF_INET sockets).

Hand-written (struct) rather than pyroute2: pyroute2's inet_diag gives the same
numbers but costs 0.28 s to import and ~165 us of Python per socket parsed, where
this reads the 72-byte header of every socket and parses tcp_info only for the ones
asked for. Pure functions (requests, parse) are unit-tested on bytes; the rest needs
Linux (`supported()`); the module imports nothing Linux-only, so Windows can import
it."""

from __future__ import annotations

import errno
import ipaddress
import itertools
import socket
import struct
import sys
from dataclasses import dataclass
from typing import Callable, Iterator, NamedTuple

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG = struct.Struct("=IHHII")                 # len, type, flags, seq, pid
# inet_diag_msg: family, state, timer, retrans; sockid: sport, dport (big-endian),
# src[16], dst[16], if, cookie[2]; expires, rqueue, wqueue, uid, inode
DIAG_MSG = struct.Struct("=BBBB")
SOCKID = struct.Struct(">HH16s16s")
DIAG_TAIL = struct.Struct("=III" "IIIII")       # if, cookie x2; expires .. inode
DIAG_MSG_SIZE = DIAG_MSG.size + SOCKID.size + DIAG_TAIL.size   # 72
SOCKID_TAIL = struct.Struct("=III")             # inet_diag_sockid: if, cookie x2
NO_COOKIE = 0xFFFFFFFF                          # a lookup that names no cookie
ALL_STATES = 0xFFFFFFFF
RTA = struct.Struct("=HH")                      # rtattr: len, type
INET_DIAG_INFO = 2                              # the attribute holding tcp_info
# struct tcp_info: state(u8), ca_state, retransmits, probes, backoff ... at 0;
# bytes_acked (u64) at 120, bytes_received (u64) at 128 (Linux >= 4.1)
TCPI_HEAD = struct.Struct("=BBBBB")
TCPI_BYTES = struct.Struct("=QQ")
TCPI_BYTES_AT = 120
TCP_INFO = 11                                   # getsockopt(IPPROTO_TCP, TCP_INFO)
SO_COOKIE = 57                                  # getsockopt(SOL_SOCKET, SO_COOKIE)

STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1",
          5: "FIN_WAIT2", 6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK",
          10: "LISTEN", 11: "CLOSING"}
TIME_WAIT, LISTEN = 6, 10
# the peer's FIN has come: it closed its end (in CLOSING, both at once)
PEER_CLOSED = frozenset({8, 9, 11})            # CLOSE_WAIT, LAST_ACK, CLOSING
ALL_BUT_LISTEN = 0xFFF & ~(1 << LISTEN)
TIMER_RETRANSMIT = 1                            # idiag_timer: the retransmit timer

# (local address, local port, remote address, remote port): addresses as inet_ntop
# writes them, IPv4-mapped IPv6 as plain IPv4 (text: ipaddress would cost a handoff
# ~20 us more)
FourTuple = tuple[str, int, str, int]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# one end of a socket as callers hold it: (address as text or ipaddress, port)
Endpoint = tuple[str | IPAddress, int]
TABLES = {socket.IPPROTO_TCP: "tcp", socket.IPPROTO_UDP: "udp"}   # /proc/net names


class Owner(NamedTuple):
    """Who holds a socket: its uid, and its inode (0: no process holds it any more)."""

    uid: int
    inode: int


@dataclass
class KernelSocket:
    """One socket as sock_diag shows it (tcp_info: a TCP socket's, in a dump)."""

    local: str
    lport: int
    remote: str
    rport: int
    state: int
    timer: int           # which timer runs (1: retransmit)
    retrans: int         # retransmits of that timer (or probes)
    uid: int
    inode: int           # 0: no process holds it any more (orphaned)
    cookie: int
    retransmits: int = 0       # tcp_info: consecutive retransmits of the oldest segment
    bytes_acked: int | None = None
    bytes_received: int | None = None

    @property
    def key(self) -> FourTuple:
        return (self.local, self.lport, self.remote, self.rport)

    @property
    def state_name(self) -> str:
        return STATES.get(self.state, str(self.state))


def supported() -> bool:
    return sys.platform.startswith("linux")


def plain(addr: str) -> str:
    """An address as inet_ntop writes it, without a scope (%eth0), IPv4-mapped IPv6
    as IPv4, so both kinds of socket match one key."""
    addr = addr.partition("%")[0]
    if addr[:7].lower() == "::ffff:" and "." in addr:
        return addr[7:]
    return addr


def four_tuple(sock: socket.socket) -> FourTuple:
    """The 4-tuple of a connected TCP socket (OSError if it is not connected)."""
    local, remote = sock.getsockname(), sock.getpeername()
    return plain(local[0]), int(local[1]), plain(remote[0]), int(remote[1])


def cookie_of(sock: socket.socket) -> int | None:
    """The kernel's unique cookie of a socket (SO_COOKIE), None where unknown."""
    try:
        return int.from_bytes(sock.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8),
                              sys.byteorder)
    except (OSError, ValueError):
        return None


def bytes_of(sock: socket.socket) -> tuple[int, int]:
    """(bytes_acked, bytes_received) of a socket of ours, from its tcp_info; zeros
    where the kernel does not say."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, TCP_INFO, 256)
    except OSError:
        return 0, 0
    if len(info) < TCPI_BYTES_AT + TCPI_BYTES.size:
        return 0, 0
    acked, received = TCPI_BYTES.unpack_from(info, TCPI_BYTES_AT)
    return int(acked), int(received)


def _request(flags: int, family: int, proto: int, ext: int, states: int,
             sockid: bytes, seq: int) -> bytes:
    """A netlink SOCK_DIAG_BY_FAMILY message carrying inet_diag_req_v2 (family,
    protocol, extensions wanted, pad, states; then the inet_diag_sockid)."""
    body = struct.pack("=BBBBI", family, proto, ext, 0, states) + sockid
    return NLMSG.pack(NLMSG.size + len(body), SOCK_DIAG_BY_FAMILY, flags, seq, 0) + body


def dump_request(family: int, states: int = ALL_BUT_LISTEN, seq: int = 1) -> bytes:
    """A netlink message asking for every TCP socket of `family` in `states` (a bit
    mask of 1 << state), with tcp_info (inet_diag_req_v2 with INET_DIAG_INFO)."""
    return _request(NLM_F_REQUEST | NLM_F_DUMP, family, socket.IPPROTO_TCP,
                    1 << (INET_DIAG_INFO - 1), states,
                    bytes(SOCKID.size + SOCKID_TAIL.size), seq)


def lookup_request(proto: int, local: Endpoint, remote: Endpoint, seq: int = 1) -> bytes:
    """A netlink message asking for the one TCP or UDP socket from local to remote
    (UDP: the ends swapped, as the kernel reads them; see the module's docstring)."""
    family, src, dst = _packed(local[0], remote[0])
    sport, dport = local[1], remote[1]
    if proto == socket.IPPROTO_UDP:
        src, dst, sport, dport = dst, src, dport, sport
    sockid = SOCKID.pack(sport, dport, src, dst) + SOCKID_TAIL.pack(0, NO_COOKIE,
                                                                    NO_COOKIE)
    return _request(NLM_F_REQUEST, family, proto, 0, ALL_STATES, sockid, seq)


def _packed(a: str | IPAddress, b: str | IPAddress) -> tuple[int, bytes, bytes]:
    """The family to ask in and both addresses packed for it: AF_INET when both are
    IPv4 or IPv4-mapped IPv6, else AF_INET6 (an IPv4 end then mapped)."""
    x, y = _raw(a), _raw(b)
    if len(x) == 4 and len(y) == 4:
        return socket.AF_INET, x, y
    return socket.AF_INET6, _as6(x), _as6(y)


_MAPPED = bytes(10) + b"\xff\xff"               # ::ffff:0:0/96, IPv4-mapped IPv6


def _raw(addr: str | IPAddress) -> bytes:
    """An address packed: 4 bytes for IPv4 (and IPv4-mapped IPv6), else 16; a scope
    (%eth0) left out. inet_pton rather than ipaddress: this is on the handoff's
    path (a few us, not tens). ValueError for text that is no address."""
    if isinstance(addr, str):
        try:
            raw = socket.inet_pton(socket.AF_INET, addr)
        except OSError:
            try:
                raw = socket.inet_pton(socket.AF_INET6, addr.partition("%")[0])
            except OSError:
                raise ValueError(f"not an IP address: {addr!r}") from None
    else:
        raw = addr.packed
    return raw[12:] if len(raw) == 16 and raw[:12] == _MAPPED else raw


def _as6(raw: bytes) -> bytes:
    return _MAPPED + raw if len(raw) == 4 else raw


# the last two fields of inet_diag_msg
OWNER = struct.Struct("=II")                    # uid, inode
OWNER_AT = NLMSG.size + DIAG_MSG_SIZE - OWNER.size


def parse_lookup(data: bytes) -> Owner | None:
    """The owner in the reply to lookup_request (the layout parse() reads, only the
    state, uid and inode of it). None when the kernel has no such socket (ENOENT),
    or what its lookup found is a listener or a TIME_WAIT remnant (not the socket
    asked for). OSError for another error or a reply that is none."""
    if len(data) < NLMSG.size + 4:
        raise OSError(errno.EPROTO, "sock_diag: short reply")
    kind = NLMSG.unpack_from(data)[1]
    if kind == NLMSG_ERROR:
        err = -struct.unpack_from("=i", data, NLMSG.size)[0]
        if err in (0, errno.ENOENT):        # no such socket (0: an acknowledgement)
            return None
        raise OSError(err, "sock_diag")
    if kind != SOCK_DIAG_BY_FAMILY or len(data) < NLMSG.size + DIAG_MSG_SIZE:
        raise OSError(errno.EPROTO, f"sock_diag: a reply of type {kind}")
    if data[NLMSG.size + 1] in (LISTEN, TIME_WAIT):
        return None
    uid, inode = OWNER.unpack_from(data, OWNER_AT)
    return Owner(uid, inode)


_seqs = itertools.count(1)


def lookup(proto: int, local: Endpoint, remote: Endpoint,
           nl: socket.socket | None = None, timeout: float = 2.0) -> Owner | None:
    """The owner of the TCP or UDP socket (proto: socket.IPPROTO_TCP or IPPROTO_UDP)
    whose own end is local and whose remote end is remote, by one exact request, in
    this network namespace or, with nl, in the one nl (a NETLINK_SOCK_DIAG socket)
    was made in; a reply to an earlier request that timed out on nl is skipped. None
    when there is no such socket (the rules: the module's docstring). OSError when
    sock_diag cannot be used, ValueError for an address that is not one."""
    seq = next(_seqs) & 0xFFFFFFFF or 1
    request = lookup_request(proto, local, remote, seq)
    if nl is None:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM,
                           NETLINK_SOCK_DIAG) as own:
            own.settimeout(timeout)
            return _ask(own, request, seq)
    if nl.gettimeout() != timeout:
        nl.settimeout(timeout)
    return _ask(nl, request, seq)


def _ask(nl: socket.socket, request: bytes, seq: int) -> Owner | None:
    nl.send(request)
    for _ in range(8):
        data = nl.recv(65536)
        if len(data) >= NLMSG.size and NLMSG.unpack_from(data)[3] == seq:
            return parse_lookup(data)
    raise OSError(errno.EPROTO, "sock_diag: no reply to this request")


def proc_lookup(proto: int, local: Endpoint, remote: Endpoint | None,
                net: str = "/proc/net") -> Owner | None:
    """The owner of the same socket from the text tables in net (/proc/net, or
    /proc/PID/net for PID's namespace): {tcp,udp}{,6}, a line per socket, its ends
    in hex (each 32-bit word in host byte order), state, ..., uid (8th column),
    inode (10th). Exact ends, where lookup() follows the kernel's receive lookup.
    remote None: any socket on local's port whatever its remote, one bound to the
    wildcard address too (how an unconnected UDP socket is listed). Listeners and
    TIME_WAIT remnants are passed over, and one no process holds (inode 0) is said
    only when no other matches."""
    table = TABLES.get(proto)
    if table is None:
        return None
    ours = _spellings(local)
    theirs = _spellings(remote) if remote is not None else None
    if remote is None:
        ours |= _spellings(("0.0.0.0", local[1])) | {_hex(bytes(16), local[1])}
    orphan = None
    for name in (table, table + "6"):
        try:
            with open(f"{net}/{name}", encoding="ascii") as f:
                next(f, None)
                for line in f:
                    cols = line.split()
                    if len(cols) < 10 or cols[1] not in ours or (
                            theirs is not None and cols[2] not in theirs) or \
                            int(cols[3], 16) in (LISTEN, TIME_WAIT):
                        continue
                    found = Owner(int(cols[7]), int(cols[9]))
                    if found.inode:
                        return found
                    orphan = orphan or found
        except (OSError, ValueError):
            continue
    return orphan


def _spellings(end: Endpoint) -> set[str]:
    """addr:port as /proc/net/{tcp,udp}{,6} may print it: an IPv4 end both as IPv4
    and as IPv4-mapped IPv6 (an AF_INET6 socket's, in the *6 table)."""
    raw = _raw(end[0])
    return {_hex(raw, end[1]), _hex(_as6(raw), end[1])}


def _hex(packed: bytes, port: int) -> str:
    words = "".join(f"{int.from_bytes(packed[i:i + 4], sys.byteorder):08X}"
                    for i in range(0, len(packed), 4))
    return f"{words}:{port:04X}"


def parse(data: bytes, wanted: Callable[[FourTuple], bool] | None = None
          ) -> tuple[list[KernelSocket], bool]:
    """The sockets in one netlink reply buffer (those `wanted` says yes to, tcp_info
    parsed for them only), and whether the dump is done. Raises OSError for a netlink
    error message."""
    out: list[KernelSocket] = []
    offset = 0
    while offset + NLMSG.size <= len(data):
        length, kind, _flags, _seq, _pid = NLMSG.unpack_from(data, offset)
        if length < NLMSG.size or offset + length > len(data):
            raise OSError("truncated netlink message")
        body = offset + NLMSG.size
        if kind == NLMSG_DONE:
            return out, True
        if kind == NLMSG_ERROR:
            err = -struct.unpack_from("=i", data, body)[0]
            if err:
                raise OSError(err, "sock_diag")
            return out, True
        if kind == SOCK_DIAG_BY_FAMILY and length >= NLMSG.size + DIAG_MSG_SIZE:
            found = _message(data, body, offset + length, wanted)
            if found is not None:
                out.append(found)
        offset += (length + 3) & ~3
    return out, False


def _message(data: bytes, start: int, end: int,
             wanted: Callable[[FourTuple], bool] | None) -> KernelSocket | None:
    family, state, timer, retrans = DIAG_MSG.unpack_from(data, start)
    sport, dport, src, dst = SOCKID.unpack_from(data, start + DIAG_MSG.size)
    (_if, cookie_lo, cookie_hi, _expires, _rq, _wq, uid,
     inode) = DIAG_TAIL.unpack_from(data, start + DIAG_MSG.size + SOCKID.size)
    if family == socket.AF_INET:
        local, remote = socket.inet_ntop(family, src[:4]), socket.inet_ntop(family,
                                                                            dst[:4])
    else:
        local, remote = plain(socket.inet_ntop(family, src)), plain(
            socket.inet_ntop(family, dst))
    if wanted is not None and not wanted((local, sport, remote, dport)):
        return None
    sock = KernelSocket(local, sport, remote, dport, state, timer, retrans, uid, inode,
                        cookie_lo | cookie_hi << 32)
    offset = start + DIAG_MSG_SIZE
    while offset + RTA.size <= end:
        rta_len, rta_type = RTA.unpack_from(data, offset)
        if rta_len < RTA.size:
            break
        if rta_type == INET_DIAG_INFO:
            _info(sock, data[offset + RTA.size:offset + rta_len])
        offset += (rta_len + 3) & ~3
    return sock


def _info(sock: KernelSocket, info: bytes) -> None:
    if len(info) >= TCPI_HEAD.size:
        sock.retransmits = TCPI_HEAD.unpack_from(info)[2]
    if len(info) >= TCPI_BYTES_AT + TCPI_BYTES.size:
        acked, received = TCPI_BYTES.unpack_from(info, TCPI_BYTES_AT)
        sock.bytes_acked, sock.bytes_received = int(acked), int(received)


def dump(family: int, wanted: Callable[[FourTuple], bool] | None = None,
         states: int = ALL_BUT_LISTEN) -> Iterator[KernelSocket]:
    """Every TCP socket of `family` in this network namespace that `wanted` accepts.
    OSError when sock_diag cannot be used."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(2.0)
        nl.send(dump_request(family, states))
        while True:
            found, done = parse(nl.recv(1 << 16), wanted)
            yield from found
            if done:
                return


def udp_ports_inodes() -> set[tuple[int, int]]:
    """(local port, inode) of every UDP socket of both families in this network
    namespace: one dump each (a datagram handoff's sweep, core/wrapped.py). OSError
    when sock_diag cannot be used."""
    out: set[tuple[int, int]] = set()
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(2.0)
        for seq, family in enumerate((socket.AF_INET, socket.AF_INET6), 1):
            nl.send(_request(NLM_F_REQUEST | NLM_F_DUMP, family, socket.IPPROTO_UDP, 0,
                             ALL_STATES, bytes(SOCKID.size + SOCKID_TAIL.size), seq))
            while True:
                found, done = parse(nl.recv(1 << 16))
                out.update((s.lport, s.inode) for s in found)
                if done:
                    break
    return out

"""The kernel's TCP sockets, read through sock_diag (NETLINK_SOCK_DIAG, inet_diag): one
dump per address family, each socket's 4-tuple, state, retransmits, owner, cookie and
the byte counts of its tcp_info (bytes_acked: sent and acknowledged; bytes_received).
This is how the daemon follows the connections it handed off: it keeps no descriptor
of them, the kernel does.

Hand-written (struct) rather than pyroute2: pyroute2's inet_diag gives the same
numbers but costs 0.28 s to import and ~165 us of Python per socket parsed, where
this reads the 72-byte header of every socket and parses tcp_info only for the ones
asked for. Pure functions (request, parse) are unit-tested on bytes; dump() needs
Linux (`supported()`); the module imports nothing Linux-only, so Windows can import
it."""

from __future__ import annotations

import socket
import struct
import sys
from dataclasses import dataclass
from typing import Callable, Iterator

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
ALL_BUT_LISTEN = 0xFFF & ~(1 << LISTEN)
TIMER_RETRANSMIT = 1                            # idiag_timer: the retransmit timer

# (local address, local port, remote address, remote port): addresses as inet_ntop
# writes them, IPv4-mapped IPv6 as plain IPv4 (text: ipaddress would cost a handoff
# ~20 us more)
FourTuple = tuple[str, int, str, int]


@dataclass
class KernelSocket:
    """One TCP socket as sock_diag shows it."""

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


def dump_request(family: int, states: int = ALL_BUT_LISTEN, seq: int = 1) -> bytes:
    """A netlink message asking for every TCP socket of `family` in `states` (a bit
    mask of 1 << state), with tcp_info (inet_diag_req_v2 with INET_DIAG_INFO)."""
    body = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 1 << (INET_DIAG_INFO - 1),
                       0, states) + bytes(SOCKID.size + 12)
    return NLMSG.pack(NLMSG.size + len(body), SOCK_DIAG_BY_FAMILY,
                      NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


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
                raise OSError(err, "sock_diag dump")
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

"""Whose is this TCP connection? The uid that owns the client end of a loopback
connection to one of our listeners, from the kernel's socket table of the daemon's
network namespace: an exact sock_diag lookup over netlink (one round trip, whatever
the number of sockets), else a scan of /proc/net/tcp and tcp6. The kernel shows any
user a socket's owner, so this works where the client's process cannot be read
(another user's, when the daemon is not root).

None when the socket is not in the table: it lives in another network namespace, it
is already gone, or it is a TIME_WAIT remnant (whose uid the kernel no longer keeps).
Linux only; elsewhere `supported()` is False."""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import struct
import sys

log = logging.getLogger("socksify.socktable")

Endpoint = tuple[str, int]

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLMSG_ERROR = 2
_NLM_F_REQUEST = 1
_NLMSG = struct.Struct("=IHHII")              # len, type, flags, seq, pid
_TCP_TIME_WAIT = 6
_NO_COOKIE = 0xFFFFFFFF
# inet_diag_msg: family, state, timer, retrans, sockid (48 bytes), expires, rqueue,
# wqueue, uid, inode
_MSG_HEAD = struct.Struct("=BBBB48xIIIII")

_netlink_broken = False
_PASSING = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.EINTR,
            errno.EAGAIN}


def supported() -> bool:
    return sys.platform.startswith("linux")


def peer_uid(peer: Endpoint, ours: Endpoint) -> int | None:
    """The uid owning the local socket whose own address is `peer` and whose remote
    address is `ours` (the client end of a connection we accepted)."""
    global _netlink_broken
    if not supported():
        return None
    if not _netlink_broken:
        try:
            return _diag_uid(peer, ours)
        except OSError as exc:
            if exc.errno in _PASSING:
                return None          # out of descriptors or memory: unknown this time
            _netlink_broken = True
            log.warning("sock_diag lookups fail (%s): reading /proc/net/tcp instead",
                        exc)
    return _proc_uid(peer, ours)


def _request(peer: Endpoint, ours: Endpoint) -> tuple[int, bytes]:
    """inet_diag_req_v2: family, protocol, ext, pad, states; then inet_diag_sockid:
    sport, dport (big-endian), src[16], dst[16], interface, cookie[2] (none)."""
    src, dst = ipaddress.ip_address(peer[0]), ipaddress.ip_address(ours[0])
    family = socket.AF_INET6 if 6 in (src.version, dst.version) else socket.AF_INET
    if family == socket.AF_INET6:
        src, dst = _as6(src), _as6(dst)
    body = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF) + \
        struct.pack(">HH", peer[1], ours[1]) + \
        src.packed.ljust(16, b"\0") + dst.packed.ljust(16, b"\0") + \
        struct.pack("=III", 0, _NO_COOKIE, _NO_COOKIE)
    return family, body


def _as6(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv6Address:
    if addr.version == 6:
        return addr
    return ipaddress.IPv6Address(f"::ffff:{addr}")


def _diag_uid(peer: Endpoint, ours: Endpoint) -> int | None:
    """One exact-match SOCK_DIAG_BY_FAMILY request (no dump): the kernel looks the
    4-tuple up in its hash as it would for an incoming packet."""
    _family, body = _request(peer, ours)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(2.0)
        nl.send(_NLMSG.pack(_NLMSG.size + len(body), _SOCK_DIAG_BY_FAMILY,
                            _NLM_F_REQUEST, 1, 0) + body)
        data = nl.recv(65536)
    if len(data) < _NLMSG.size:
        raise OSError("short netlink reply")
    _length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(data)
    if kind == _NLMSG_ERROR:
        err = -struct.unpack_from("=i", data, _NLMSG.size)[0]
        if err in (2, 0):          # ENOENT: no such socket
            return None
        raise OSError(err, "sock_diag")
    if kind != _SOCK_DIAG_BY_FAMILY or len(data) < _NLMSG.size + _MSG_HEAD.size:
        raise OSError(f"unexpected netlink reply type {kind}")
    _fam, state, _t, _r, _exp, _rq, _wq, uid, _inode = _MSG_HEAD.unpack_from(
        data, _NLMSG.size)
    return None if state == _TCP_TIME_WAIT else int(uid)


def _proc_uid(peer: Endpoint, ours: Endpoint) -> int | None:
    """The same answer from /proc/net/tcp{,6}: a line per socket, addresses in hex
    (each 32-bit word in host byte order), the uid in the eighth column."""
    want = (_proc_hex(peer[0]), peer[1], _proc_hex(ours[0]), ours[1])
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name, encoding="ascii") as f:
                next(f, None)
                for line in f:
                    cols = line.split()
                    if len(cols) < 8:
                        continue
                    (la, lp), (ra, rp) = cols[1].split(":"), cols[2].split(":")
                    if _same(la, lp, ra, rp, want):
                        if int(cols[3], 16) == _TCP_TIME_WAIT:
                            return None
                        return int(cols[7])
        except (OSError, ValueError):
            continue
    return None


def _same(la: str, lp: str, ra: str, rp: str,
          want: tuple[tuple[str, ...], int, tuple[str, ...], int]) -> bool:
    return la in want[0] and int(lp, 16) == want[1] and ra in want[2] \
        and int(rp, 16) == want[3]


def _proc_hex(text: str) -> tuple[str, ...]:
    """The spellings of an address in /proc/net/tcp (IPv4) and tcp6 (IPv6, and IPv4
    as ::ffff:a.b.c.d)."""
    addr = ipaddress.ip_address(text)
    forms = []
    if addr.version == 4:
        forms.append(_words(addr.packed))
        addr = _as6(addr)
    elif addr.ipv4_mapped is not None:
        forms.append(_words(addr.ipv4_mapped.packed))
    forms.append(_words(addr.packed))
    return tuple(forms)


def _words(packed: bytes) -> str:
    return "".join(f"{int.from_bytes(packed[i:i + 4], sys.byteorder):08X}"
                   for i in range(0, len(packed), 4))

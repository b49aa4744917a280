"""Which process made a redirected connection. The daemon accepts it in the isolated
namespace, where no shim asked first; the program's own socket is in that
namespace's TCP table (/proc/PID/net/tcp and tcp6 of any process in it, e.g. the
launcher), from its local address (the accepted socket's peer) to the original
destination. Its inode names it, and the process holding that inode among its
descriptors (/proc/*/fd, only processes in that same namespace) is the program:
then name, exe, user and ancestors as for a shimmed program (procinfo).

Readable for the daemon's own user's processes only (the kernel's ptrace check on
/proc/PID/fd): a program that is not dumpable (it ran a setuid binary) is not found,
and its connection is decided by its uid alone."""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import sys
from typing import Iterator

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _hex(addr: IPAddress, port: int) -> str:
    """addr:port as /proc/net/tcp{,6} prints it: each 32-bit word in host order."""
    packed = addr.packed
    words = "".join(f"{int.from_bytes(packed[i:i + 4], sys.byteorder):08X}"
                    for i in range(0, len(packed), 4))
    return f"{words}:{port:04X}"


def _forms(addr: IPAddress, port: int) -> set[str]:
    """Both ways the kernel may list an IPv4 end: as IPv4 (tcp) and as IPv4-mapped
    IPv6 (an AF_INET6 socket, tcp6)."""
    out = {_hex(addr, port)}
    if addr.version == 4:
        out.add(_hex(ipaddress.IPv6Address(f"::ffff:{addr}"), port))
    return out


def socket_inode(ns_pid: int, local: tuple[IPAddress, int],
                 remote: tuple[IPAddress, int] | None, proto: str = "tcp") -> int | None:
    """The inode of the TCP (or UDP: proto "udp") socket from local to remote in ns_pid's
    namespace; remote None: whatever it is connected to, if at all (then a socket
    bound to the wildcard address on local's port counts too)."""
    locals_ = _forms(*local)
    remotes = _forms(*remote) if remote is not None else None
    if remote is None:   # an unconnected socket is listed with the wildcard address
        locals_ |= _forms(ipaddress.IPv4Address(0), local[1])
        locals_.add(_hex(ipaddress.IPv6Address(0), local[1]))
    for table in (proto, proto + "6"):
        try:
            with open(f"/proc/{ns_pid}/net/{table}") as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) > 9 and fields[1] in locals_ and (
                            remotes is None or fields[2] in remotes) and \
                            fields[9] != "0":
                        return int(fields[9])
        except (OSError, ValueError):
            continue
    return None


_NLMSG = struct.Struct("=IHHII")              # len, type, flags, seq, pid
_SOCK_DIAG_BY_FAMILY, _NLMSG_ERROR, _NLM_F_REQUEST = 20, 2, 1
_NO_COOKIE = 0xFFFFFFFF
_DIAG_MSG = struct.Struct("=BBBB48xIIIII")     # inet_diag_msg, ending in uid, inode


def diag_inode(nl: socket.socket, local: tuple[IPAddress, int],
               remote: tuple[IPAddress, int]) -> int | None:
    """The inode of the TCP socket from local to remote, by one exact
    SOCK_DIAG_BY_FAMILY request on nl, a sock_diag socket made in the namespace (the
    kernel looks the 4-tuple up in its hash). None when not found or nl fails."""
    src, dst = local[0], remote[0]
    family = socket.AF_INET
    if 6 in (src.version, dst.version):
        family = socket.AF_INET6
        src, dst = _as6(src), _as6(dst)
    body = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF) + \
        struct.pack(">HH", local[1], remote[1]) + src.packed.ljust(16, b"\0") + \
        dst.packed.ljust(16, b"\0") + struct.pack("=III", 0, _NO_COOKIE, _NO_COOKIE)
    try:
        if nl.gettimeout() != 0.5:     # set once: each set is a system call
            nl.settimeout(0.5)
        nl.send(_NLMSG.pack(_NLMSG.size + len(body), _SOCK_DIAG_BY_FAMILY,
                            _NLM_F_REQUEST, 1, 0) + body)
        data = nl.recv(65536)
    except OSError:
        return None
    if len(data) < _NLMSG.size + _DIAG_MSG.size:
        return None
    kind = _NLMSG.unpack_from(data)[1]
    if kind != _SOCK_DIAG_BY_FAMILY:
        return None            # NLMSG_ERROR: ENOENT, no such socket
    inode = _DIAG_MSG.unpack_from(data, _NLMSG.size)[-1]
    return int(inode) or None


def _as6(addr: IPAddress) -> ipaddress.IPv6Address:
    return addr if isinstance(addr, ipaddress.IPv6Address) else \
        ipaddress.IPv6Address(f"::ffff:{addr}")


def _netns(pid: int | str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


# the descriptor number each pid last held a found socket at: a program that closes
# one connection before opening the next gets the same number back, so one readlink
# usually proves it holds the new one, without listing and reading all its fds
_last_fd: dict[int, str] = {}


def _holds(pid: int, link: str) -> bool:
    last = _last_fd.get(pid)
    if last is not None:
        try:
            if os.readlink(f"/proc/{pid}/fd/{last}") == link:
                return True
        except OSError:
            pass
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == link:
                if len(_last_fd) > 1024:
                    _last_fd.clear()
                _last_fd[pid] = fd
                return True
        except OSError:
            continue
    return False


# the namespace's (launcher pid's) last owners found: a program usually makes many
# connections, so its pid is looked at first
_recent: dict[int, list[int]] = {}
RECENT = 8


def _candidates(ns_pid: int) -> Iterator[int]:
    """Every pid, in the order worth looking: this namespace's recent owners, then
    those after the launcher's (its program and children were started after it),
    then the rest. /proc is listed only when the recent ones were not it."""
    recent = list(_recent.get(ns_pid, []))
    yield from recent
    pids = sorted(int(e) for e in os.listdir("/proc") if e.isdigit())
    yield from (p for p in pids if p > ns_pid and p not in recent)
    yield from (p for p in pids if p < ns_pid and p not in recent)


def owner(ns_pid: int, local: tuple[IPAddress, int],
          remote: tuple[IPAddress, int] | None, proto: str = "tcp",
          recent_only: bool = False, inode: int | None = None) -> int | None:
    """The pid holding the program's end of a redirected connection (or of the socket
    a DNS query came from: proto "udp", remote None); None when it cannot be seen
    (gone, not dumpable, another user's). Only processes in ns_pid's network
    namespace are looked at, the likeliest first (_candidates). recent_only: look at
    the namespace's recent owners alone (a few /proc reads, cheap enough for the
    event loop; None means "scan"). inode: the socket's, when already known."""
    if inode is None:
        inode = socket_inode(ns_pid, local, remote, proto)
    ns = _netns(ns_pid)
    if inode is None or ns is None:
        return None
    link = f"socket:[{inode}]"
    pids = list(_recent.get(ns_pid, [])) if recent_only else _candidates(ns_pid)
    for pid in pids:
        if _netns(pid) == ns and _holds(pid, link):
            recent = _recent.setdefault(ns_pid, [])
            if pid not in recent:
                recent.insert(0, pid)
                del recent[RECENT:]
            if len(_recent) > 256:          # launchers come and go
                _recent.pop(next(iter(_recent)))
            return pid
    return None

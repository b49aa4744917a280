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


def _netns(pid: int | str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def _holds(pid: int, link: str) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == link:
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
          remote: tuple[IPAddress, int] | None, proto: str = "tcp") -> int | None:
    """The pid holding the program's end of a redirected connection (or of the socket
    a DNS query came from: proto "udp", remote None); None when it cannot be seen
    (gone, not dumpable, another user's). Only processes in ns_pid's network
    namespace are looked at, the likeliest first (_candidates)."""
    inode = socket_inode(ns_pid, local, remote, proto)
    ns = _netns(ns_pid)
    if inode is None or ns is None:
        return None
    link = f"socket:[{inode}]"
    for pid in _candidates(ns_pid):
        if _netns(pid) == ns and _holds(pid, link):
            recent = _recent.setdefault(ns_pid, [])
            if pid not in recent:
                recent.insert(0, pid)
                del recent[RECENT:]
            if len(_recent) > 256:          # launchers come and go
                _recent.pop(next(iter(_recent)))
            return pid
    return None

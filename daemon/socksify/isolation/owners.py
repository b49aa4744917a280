"""Which process made a redirected connection. The daemon accepts it in the isolated
namespace, where no shim asked first; the program's own socket is in that
namespace's TCP table (one exact sock_diag lookup on a netlink socket made there,
else /proc/PID/net/tcp and tcp6 of any process in it, e.g. the launcher: sockdiag.py),
from its local address (the accepted socket's peer) to the original
destination. Its inode names it, and the process holding that inode among its
descriptors (/proc/*/fd, only processes in that same namespace) is the program:
then name, exe, user and ancestors as for a shimmed program (procinfo).

Readable for the daemon's own user's processes only (the kernel's ptrace check on
/proc/PID/fd): a program that is not dumpable (it ran a setuid binary) is not found,
and its connection is decided by its uid alone."""

from __future__ import annotations

import os
import socket
from typing import Iterator

from .. import sockdiag

IPAddress = sockdiag.IPAddress
PROTOS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}


def socket_inode(ns_pid: int, local: tuple[IPAddress, int],
                 remote: tuple[IPAddress, int] | None, proto: str = "tcp") -> int | None:
    """The inode of the TCP (or UDP: proto "udp") socket from local to remote in ns_pid's
    namespace, from its /proc/PID/net tables; remote None: whatever it is connected
    to, if at all (then a socket bound to the wildcard address on local's port counts
    too)."""
    number = PROTOS.get(proto)
    if number is None:
        return None
    return _inode(sockdiag.proc_lookup(number, local, remote, f"/proc/{ns_pid}/net"))


def diag_inode(nl: socket.socket, local: tuple[IPAddress, int],
               remote: tuple[IPAddress, int]) -> int | None:
    """The inode of the TCP socket from local to remote, by one exact sock_diag
    lookup on nl, a sock_diag socket made in the namespace. None when not found or
    nl fails."""
    try:
        return _inode(sockdiag.lookup(socket.IPPROTO_TCP, local, remote, nl, 0.5))
    except (OSError, ValueError):
        return None


def _inode(found: sockdiag.Owner | None) -> int | None:
    return found.inode if found is not None and found.inode else None


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

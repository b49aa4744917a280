"""Entering the isolation: this process (the `socksify` launcher, before it starts any
thread) moves into a new user namespace (unprivileged; mapping only the caller's uid
and gid to themselves), a new network namespace and a new mount namespace. As root, a
new network and mount namespace alone.

In the mount namespace the host's resolver sockets (systemd-resolved's varlink socket
under /run/systemd/resolve, nscd's under /run/nscd) are covered by empty tmpfs
mounts, so a program cannot ask the host's resolver to look a name up for it: names
are answered inside the network namespace only (port 53 is redirected, ruleset.py).
/run/systemd/resolve keeps a stub-resolv.conf naming 127.0.0.53, which that
redirect answers, so an /etc/resolv.conf symlinked there still works.

unshare(CLONE_NEWUSER) fails in a multithreaded process. Where the kernel does not
allow it, IsolationUnavailable says why and names the setting; the caller must then
refuse to run the command (never run it unisolated)."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct
import threading
from pathlib import Path

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x2, 0x4, 0x8
MS_REC, MS_PRIVATE = 0x4000, 0x40000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
_IFREQ = struct.Struct("16sH22x")   # struct ifreq: name, then ifr_flags in the union

# the host resolver's sockets, hidden from the program (each if it exists)
RESOLVER_DIRS = ("/run/systemd/resolve", "/run/nscd", "/var/run/nscd")
STUB_RESOLV = "nameserver 127.0.0.53\noptions edns0\n"


class IsolationUnavailable(RuntimeError):
    """The command cannot be isolated here; the message says why and what to check."""


def _sysctl(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def kernel_hints() -> str:
    """The kernel settings that decide whether unprivileged user namespaces work."""
    hints = []
    for path, what in (
            ("/proc/sys/user/max_user_namespaces", "0 disables user namespaces"),
            ("/proc/sys/kernel/unprivileged_userns_clone",
             "Debian's switch: 0 allows them to root only"),
            ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
             "Ubuntu 24.04+: 1 takes all capabilities from an unconfined program's "
             "user namespace")):
        value = _sysctl(path)
        if value is not None:
            hints.append(f"{path} = {value} ({what})")
    return "; ".join(hints)


def explain(step: str, err: int, flags: int) -> str:
    why = f"{step}: {os.strerror(err)}"
    if err == errno.EINVAL and flags & CLONE_NEWUSER:
        return why + " (this process already runs threads)"
    if flags & CLONE_NEWUSER and err == errno.ENOSPC:
        why += ". No user namespace may be created: max_user_namespaces is 0, or its " \
            "limit is reached (here or in an enclosing user namespace)"
    elif flags & CLONE_NEWUSER:
        why += ". Unprivileged user namespaces seem not to be allowed here (a kernel " \
            "setting, an AppArmor restriction, or a container's seccomp/capability " \
            "limits)"
    if flags & CLONE_NEWUSER:
        hints = kernel_hints()
        if hints:
            why += f": {hints}"
    elif err == errno.EPERM:
        why += " (root without CAP_SYS_ADMIN, e.g. inside a container)"
    return why


def _write(path: str, text: str, flags: int) -> None:
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as exc:
        raise IsolationUnavailable(explain(f"writing {path}", exc.errno or errno.EPERM,
                                           flags)) from None


def _thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def enter() -> int:
    """Move this process into new namespaces with only `lo`, up; returns the unshare
    flags used (CLONE_NEWUSER among them when a user namespace was made). Raises
    IsolationUnavailable; after a failure the process may be half-isolated and must
    not run the command."""
    if _thread_count() > 1:
        raise IsolationUnavailable("socksify already runs threads; isolation must come "
                                   "first (a bug in socksify)")
    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid = os.geteuid(), os.getegid()
    flags = CLONE_NEWNET | CLONE_NEWNS
    if uid != 0:
        flags |= CLONE_NEWUSER
    if libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        if uid == 0 and err == errno.EPERM:
            flags |= CLONE_NEWUSER   # a root without CAP_SYS_ADMIN
            if libc.unshare(flags) != 0:
                err = ctypes.get_errno()
                raise IsolationUnavailable(explain("unshare", err, flags))
        else:
            raise IsolationUnavailable(explain("unshare", err, flags))
    if flags & CLONE_NEWUSER:
        _write("/proc/self/setgroups", "deny", flags)
        _write("/proc/self/uid_map", f"{uid} {uid} 1", flags)
        _write("/proc/self/gid_map", f"{gid} {gid} 1", flags)
    try:
        loopback_up()
    except OSError as exc:
        raise IsolationUnavailable(explain("bringing lo up", exc.errno or errno.EPERM,
                                           flags)) from None
    others = [name for _, name in socket.if_nameindex() if name != "lo"]
    if others:  # cannot happen in a new namespace; never run with a way out
        raise IsolationUnavailable(f"the new network namespace has interfaces besides "
                                   f"lo: {', '.join(others)}")
    _hide_resolvers(libc)
    return flags


def loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        got = fcntl.ioctl(s, SIOCGIFFLAGS, _IFREQ.pack(b"lo", 0))
        _, ifr_flags = _IFREQ.unpack(got)
        fcntl.ioctl(s, SIOCSIFFLAGS, _IFREQ.pack(b"lo", ifr_flags | IFF_UP))


def _mount(libc: ctypes.CDLL, source: str, target: str, fstype: str | None,
           flags: int, data: str | None) -> None:
    if libc.mount(source.encode(), target.encode(),
                  fstype.encode() if fstype else None, flags,
                  data.encode() if data else None) != 0:
        err = ctypes.get_errno()
        raise IsolationUnavailable(f"mount {target} in the isolated mount namespace: "
                                   f"{os.strerror(err)}")


def _hide_resolvers(libc: ctypes.CDLL) -> None:
    """Our mounts stay ours (no propagation to the host), and an empty tmpfs covers
    each directory holding a host resolver's socket."""
    _mount(libc, "none", "/", None, MS_REC | MS_PRIVATE, None)
    for path in RESOLVER_DIRS:
        if not os.path.isdir(path) or os.path.islink(path):
            continue
        _mount(libc, "socksify", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
               "mode=755,size=64k")
        if path == "/run/systemd/resolve":
            for name in ("stub-resolv.conf", "resolv.conf"):
                Path(path, name).write_text(STUB_RESOLV)

"""Who is asking: the process behind a control connection, from the kernel's word
(SO_PEERCRED on Linux, the TCP table on Windows), described with psutil: name,
executable, user, ancestry.

Descriptions are cached by (pid, start time), so a recycled pid is never mistaken for
the process that had it before."""

from __future__ import annotations

import os
import sys
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import psutil

from .peercred import peer_credentials as peer_credentials  # re-exported

CACHE_SIZE = 512
MAX_ANCESTORS = 64


@dataclass(frozen=True)
class AppInfo:
    pid: int
    name: str
    exe: str                      # "" when unreadable
    uid: int
    user: str                     # the uid itself, as text, when it has no name
    ancestors: tuple[tuple[str, str], ...]   # (name, exe) of parent, grandparent, ...

    def __str__(self) -> str:
        return f"{self.name}[{self.pid}]"


def own_uid() -> int:
    """The daemon's uid; 0 on Windows, where the daemon serves its own user only: a
    process of that user is described with uid 0, any other with OTHER_USER (see
    process_uid()), which Daemon.allows() refuses."""
    return os.getuid() if hasattr(os, "getuid") else 0


def _identity(pid: int) -> tuple[int, object, str] | None:
    """What tells one process from another with the same pid, read straight from /proc
    (two small reads, no psutil): its start time in clock ticks and its executable,
    which an exec changes. None where /proc cannot say."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:                # not open(): its buffered file objects cost more here
            stat = os.read(fd, 4096)
        finally:
            os.close(fd)
        start = stat[stat.rindex(b")") + 2:].split()[19]
        return pid, start, os.readlink(f"/proc/{pid}/exe")
    except (OSError, ValueError, IndexError):
        return None


def start_time(pid: int) -> object:
    """pid's start time in clock ticks (None where /proc cannot say): with the pid, it
    names one process across pid reuse."""
    ident = _identity(pid) if pid > 0 else None
    return ident[1] if ident is not None else None


class ProcessTable:
    """Looks processes up with psutil, caching each by (pid, start time, executable):
    a connection costs two small /proc reads unless the process is new."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self._size = size
        self._cache: OrderedDict[tuple[int, object, str], AppInfo] = OrderedDict()

    def identify(self, pid: int, uid: int) -> AppInfo:
        """Describe pid; a process that vanished is described by its pid and the uid
        the kernel reported, with no name (rules on app names then do not match)."""
        key = _identity(pid)
        if key is not None:
            info = self._cache.get(key)
            if info is not None:
                self._cache.move_to_end(key)
                return info
        try:
            proc = psutil.Process(pid)
            if key is None:
                key = (pid, proc.create_time(), "")
        except (psutil.Error, OSError):
            return AppInfo(pid, f"pid {pid}", "", uid, _user_name(uid), ())
        info = _describe(proc, uid)
        self._cache[key] = info
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return info


def uid_only(uid: int, name: str) -> AppInfo:
    """A connection known by its uid only (the kernel's socket table), its program
    unseen: rules on users can match it, rules on programs cannot."""
    return AppInfo(0, name, "", uid, _user_name(uid), ())


def _describe(proc: psutil.Process, uid: int) -> AppInfo:
    name, exe = _name_exe(proc)
    ancestors: list[tuple[str, str]] = []
    try:
        parent = proc.parent()
        while parent is not None and len(ancestors) < MAX_ANCESTORS:
            ancestors.append(_name_exe(parent))
            if parent.pid <= 1:
                break
            parent = parent.parent()
    except (psutil.Error, OSError):
        pass
    return AppInfo(proc.pid, name, exe, uid, _user_name(uid), tuple(ancestors))


def _name_exe(proc: psutil.Process) -> tuple[str, str]:
    try:
        name = proc.name()
    except (psutil.Error, OSError):
        name = f"pid {proc.pid}"
    try:
        exe = proc.exe()
    except (psutil.Error, OSError):
        exe = _exe_from_cmdline(proc)
        if exe and name == f"pid {proc.pid}":
            name = exe.replace("\\", "/").rsplit("/", 1)[-1]
    return name, exe


def _exe_from_cmdline(proc: psutil.Process) -> str:
    """Wine's psutil cannot read a process's image path (NtQuerySystemInformation
    refuses the query) but reads its command line: its first word then stands for the
    executable, on Windows only."""
    if sys.platform != "win32":
        return ""
    try:
        argv = proc.cmdline()
    except (psutil.Error, OSError):
        return ""
    return argv[0] if argv else ""


def _user_name(uid: int) -> str:
    if sys.platform == "win32":
        import getpass
        return getpass.getuser()
    import pwd
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def tcp_peer_owner(peer: tuple[str, int], ours: tuple[str, int]) -> int | None:
    """The pid of the local process whose TCP socket goes from `peer` to `ours` (a
    loopback connection to one of our listeners), from the kernel's socket table; None
    if it cannot be seen (another user's process, when we are not root)."""
    try:
        table = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return None
    for c in table:
        if c.laddr and c.raddr and c.pid and (c.laddr[0], c.laddr[1]) == peer \
                and (c.raddr[0], c.raddr[1]) == ours:
            return int(c.pid)
    return None


OTHER_USER = -2
"""process_uid() on Windows for a process of another user (or one whose user cannot be
read): never own_uid(), so Daemon.allows() refuses it."""


def windows_uid(pid: int, user_of: Callable[[int], str]) -> int | None:
    """On Windows, where there are no uids: own_uid() for a process of the daemon's own
    user (user_of(pid), e.g. "HOST\\name", equals the daemon's), OTHER_USER for any
    other or unreadable one (psutil raises AccessDenied for another user's process),
    None if it is gone."""
    try:
        theirs = user_of(pid)
    except psutil.NoSuchProcess:
        return None
    except (psutil.Error, OSError):
        return OTHER_USER
    try:
        ours = user_of(os.getpid())
    except (psutil.Error, OSError):
        return OTHER_USER
    return own_uid() if theirs and theirs.lower() == ours.lower() else OTHER_USER


def _psutil_user(pid: int) -> str:
    return str(psutil.Process(pid).username())


def process_uid(pid: int) -> int | None:
    if sys.platform == "win32":   # psutil has no uids() there; see own_uid()
        return windows_uid(pid, _psutil_user)
    try:
        return int(psutil.Process(pid).uids().real)
    except (psutil.Error, OSError):
        return None

"""Isolation mode (`socksify --isolate`): run the command in its own network namespace
whose only interface is `lo`, so nothing it does -- a statically linked program, a Go
program, a raw connect(2) -- has a route out. The only way out is the daemon:

- the shim still reaches the daemon's control socket (a filesystem path, which works
  across network namespaces);
- a RELAY reply tells the shim to connect the program's socket to 127.0.0.1:PORT4 or
  [::1]:PORT6, the daemon's relay ports, which live in the daemon's namespace. So this
  process binds the same ports inside the isolated namespace (the *bridge*) and hands
  the listening sockets, as file descriptors (SCM_RIGHTS), to the daemon's relay socket
  `relay.sock` beside the control socket. The daemon accepts on them exactly as on its
  own loopback listeners: the token protocol, half-close, resets and getpeername()
  behave as without isolation, and no byte passes through this process.

Unprivileged, the isolation is a new user namespace (mapping only the caller's uid and
gid to themselves) plus a new network namespace; as root a new network namespace alone.
unshare(CLONE_NEWUSER) fails in a multithreaded process, so `enter()` must run before
the caller starts any thread. Where the kernel does not allow it, IsolationUnavailable
says why; the caller must then refuse to run the command (never run it unisolated).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct
import threading
from pathlib import Path
from typing import Any

from . import client
from .paths import Paths
from .printable import printable

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
_IFREQ = struct.Struct("16sH22x")   # struct ifreq: name, then ifr_flags in the union

HANDOFF_BYTE = b"L"   # the data byte that carries the descriptors; also the ack


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


def _explain(step: str, err: int, flags: int) -> str:
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
        raise IsolationUnavailable(_explain(f"writing {path}", exc.errno or errno.EPERM,
                                            flags)) from None


def _thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def enter() -> None:
    """Move this process into a new network namespace with only `lo`, up. Root: a
    new network namespace; otherwise (or a root without CAP_SYS_ADMIN) also a new user
    namespace mapping our uid and gid to themselves. Raises IsolationUnavailable; after
    a failure the process may be half-isolated and must not run the command."""
    if _thread_count() > 1:
        raise IsolationUnavailable("socksify already runs threads; isolation must come "
                                   "first (a bug in socksify)")
    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid = os.geteuid(), os.getegid()
    flags = CLONE_NEWNET if uid == 0 else CLONE_NEWUSER | CLONE_NEWNET
    if libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        if uid == 0 and err == errno.EPERM:
            flags = CLONE_NEWUSER | CLONE_NEWNET   # a root without CAP_SYS_ADMIN
            if libc.unshare(flags) != 0:
                err = ctypes.get_errno()
                raise IsolationUnavailable(_explain("unshare", err, flags))
        else:
            raise IsolationUnavailable(_explain("unshare", err, flags))
    if flags & CLONE_NEWUSER:
        _write("/proc/self/setgroups", "deny", flags)
        _write("/proc/self/uid_map", f"{uid} {uid} 1", flags)
        _write("/proc/self/gid_map", f"{gid} {gid} 1", flags)
    try:
        _loopback_up()
    except OSError as exc:
        raise IsolationUnavailable(_explain("bringing lo up", exc.errno or errno.EPERM,
                                            flags)) from None
    others = [name for _, name in socket.if_nameindex() if name != "lo"]
    if others:  # cannot happen in a new namespace; never run with a way out
        raise IsolationUnavailable(f"the new network namespace has interfaces besides "
                                   f"lo: {', '.join(others)}")


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        got = fcntl.ioctl(s, SIOCGIFFLAGS, _IFREQ.pack(b"lo", 0))
        _, ifr_flags = _IFREQ.unpack(got)
        fcntl.ioctl(s, SIOCSIFFLAGS, _IFREQ.pack(b"lo", ifr_flags | IFF_UP))


class Bridge:
    """The daemon's relay ports inside the isolated namespace: this process binds
    127.0.0.1:PORT4 and [::1]:PORT6 there and hands the listening sockets to the
    daemon over relay.sock (SCM_RIGHTS). The daemon accepts on them as on its own relay
    listeners, for as long as this process keeps the relay.sock connection open."""

    def __init__(self, relay_socket: str, port4: int, port6: int) -> None:
        self.relay_socket = relay_socket
        self.port4, self.port6 = port4, port6
        self._conn: socket.socket | None = None

    def start(self) -> None:
        """Bind, hand over, and wait for the daemon to confirm it is accepting."""
        listeners = [_listener(socket.AF_INET, "127.0.0.1", self.port4)]
        try:
            if self.port6:
                try:
                    listeners.append(_listener(socket.AF_INET6, "::1", self.port6))
                except OSError:
                    pass  # no IPv6 loopback here: IPv6 sockets fail, nothing leaks
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                conn.settimeout(10.0)
                conn.connect(self.relay_socket)
                socket.send_fds(conn, [HANDOFF_BYTE], [s.fileno() for s in listeners])
                if conn.recv(1) != HANDOFF_BYTE:
                    raise OSError(errno.ECONNREFUSED, "the daemon refused the relay "
                                  "listeners (see its log)")
                conn.settimeout(None)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        finally:
            for s in listeners:   # the daemon holds its own copies now
                s.close()

    def close(self) -> None:
        """The daemon closes the listeners when this connection ends (also when this
        process dies)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _listener(family: int, host: str, port: int) -> socket.socket:
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(512)
    except OSError:
        s.close()
        raise
    return s


def relay_info(paths: Paths) -> tuple[str, int, int]:
    """The daemon's relay socket and ports, from its status."""
    try:
        status: dict[str, Any] = client.request(paths, {"op": "status"})
    except (client.DaemonUnavailable, client.UnsafeDaemon, OSError,
            ValueError) as exc:
        raise IsolationUnavailable(f"cannot ask the daemon for its relay: {exc}") \
            from None
    relay = status.get("relay")
    if not isinstance(relay, dict) or not relay.get("socket") \
            or not relay.get("port4"):
        raise IsolationUnavailable(
            f"the running socksifyd (version {printable(status.get('version', '?'))})"
            " has no "
            "relay socket for --isolate; restart it (socksifyd restart)")
    return str(relay["socket"]), int(relay["port4"]), int(relay.get("port6") or 0)


def isolate(paths: Paths) -> Bridge:
    """Enter an isolated network namespace and start the bridge to the daemon's relay.
    Call before starting any thread."""
    relay_socket, port4, port6 = relay_info(paths)
    enter()
    bridge = Bridge(relay_socket, port4, port6)
    try:
        bridge.start()
    except OSError as exc:
        raise IsolationUnavailable(f"cannot set up the relay listeners (127.0.0.1:"
                                   f"{port4}) in the isolated namespace: "
                                   f"{exc.strerror or exc}") from None
    return bridge

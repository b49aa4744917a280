"""Whose is this TCP connection? The uid that owns the client end of a loopback
connection to one of our listeners, from the kernel's socket table of the daemon's
network namespace: an exact sock_diag lookup over netlink (one round trip, whatever
the number of sockets), else a scan of /proc/net/tcp and tcp6. The kernel shows any
user a socket's owner, so this works where the client's process cannot be read
(another user's, when the daemon is not root).

None when the socket is not in the table: it lives in another network namespace, it
is already gone, or it is a TIME_WAIT remnant (whose uid the kernel no longer keeps);
never a listener's uid (the kernel's lookup falls back to the listener on the peer's
port when no connection matches). The reading is sockdiag.py's.
Linux only; elsewhere `supported()` is False."""

from __future__ import annotations

import errno
import logging
import socket
import sys

from .. import sockdiag

log = logging.getLogger("socksify.socktable")

Endpoint = tuple[str, int]

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
            return _uid(sockdiag.lookup(socket.IPPROTO_TCP, peer, ours))
        except OSError as exc:
            if exc.errno in _PASSING:
                return None          # out of descriptors or memory: unknown this time
            _netlink_broken = True
            log.warning("sock_diag lookups fail (%s): reading /proc/net/tcp instead",
                        exc)
    return _uid(sockdiag.proc_lookup(socket.IPPROTO_TCP, peer, ours))


def _uid(found: sockdiag.Owner | None) -> int | None:
    return None if found is None else found.uid

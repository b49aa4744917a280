"""Who may wait at the door: caps on connections that have not proven themselves yet
(a relay connection before its token, a front-door client before its request), per
uid and in all, so another user cannot hold the daemon's descriptors with idle
connections and lock its owner out.

The caps follow the daemon's open-file limit: at most a quarter of it waits in all;
the daemon's own user may use all of that, any other uid (or a connection whose uid is
unknown) an eighth of it, and all of them together half of it, so the owner keeps
room whoever floods. Over a cap a connection is closed at once; the refusals are
logged once per burst."""

from __future__ import annotations

import logging
import socket
import time
from typing import Hashable

from ..procinfo import own_uid
from . import socktable

log = logging.getLogger("socksify.admission")

MIN_WAITING = 16       # the total cap never goes below this, whatever the fd limit


def fd_limit() -> int:
    """The soft open-file limit (4096 where there is none to read, e.g. Windows)."""
    try:
        import resource
    except ImportError:
        return 4096
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 20 if soft == resource.RLIM_INFINITY else int(soft)


class Ticket:
    """One admitted connection's place; release() when it has proven itself or
    gone (again: nothing)."""

    def __init__(self, gate: Gate, uid: int | None) -> None:
        self._gate: Gate | None = gate
        self.uid = uid

    def release(self) -> None:
        if self._gate is not None:
            self._gate._release(self.uid)
            self._gate = None


class Gate:
    def __init__(self, owner: int, limit: int | None = None) -> None:
        self.owner = owner
        self.total_cap = max(MIN_WAITING, (limit or fd_limit()) // 4)
        self.others_cap = self.total_cap // 2
        self.per_uid_cap = max(4, self.total_cap // 8)
        self.waiting: dict[int | None, int] = {}
        self.total = 0
        self.others = 0

    def admit(self, uid: int | None) -> Ticket | None:
        """A ticket if uid may have one more connection waiting, else None."""
        mine = self.waiting.get(uid, 0)
        if self.total >= self.total_cap:
            return None
        if uid != self.owner and (mine >= self.per_uid_cap
                                  or self.others >= self.others_cap):
            return None
        self.waiting[uid] = mine + 1
        self.total += 1
        if uid != self.owner:
            self.others += 1
        return Ticket(self, uid)

    def _release(self, uid: int | None) -> None:
        left = self.waiting.get(uid, 0) - 1
        if left > 0:
            self.waiting[uid] = left
        else:
            self.waiting.pop(uid, None)
        self.total -= 1
        if uid != self.owner:
            self.others -= 1


class BurstLog:
    """A warning per key at most every `every` seconds; the next one says how many
    were left unsaid in between."""

    def __init__(self, logger: logging.Logger, every: float = 10.0) -> None:
        self.log = logger
        self.every = every
        self._seen: dict[Hashable, tuple[float, int]] = {}

    def warn(self, key: Hashable, message: str) -> None:
        now = time.monotonic()
        last, skipped = self._seen.get(key, (float("-inf"), 0))
        if now - last < self.every:
            self._seen[key] = (last, skipped + 1)
            return
        if len(self._seen) > 1024:
            self._seen = {k: v for k, v in self._seen.items()
                          if now - v[0] < self.every}
        self._seen[key] = (now, 0)
        more = f" ({skipped} more like it since the last report)" if skipped else ""
        self.log.warning("%s%s", message, more)


def peer_uid(sock: socket.socket) -> int | None:
    """The uid owning the other end of a loopback TCP connection we accepted, from
    the kernel's socket table; None if it is not there (another network
    namespace, already gone). Windows has no such table here: the owner's."""
    if not socktable.supported():
        return own_uid()
    try:
        peer, ours = sock.getpeername(), sock.getsockname()
        return socktable.peer_uid((peer[0], peer[1]), (ours[0], ours[1]))
    except (OSError, ValueError, IndexError):
        return None

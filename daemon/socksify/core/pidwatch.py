"""Which asking processes have exited? The datagram handoff (core/wrapped.py) ends a
process's flows when it exits: one pidfd per process on the event loop (readable when
the process exits; a pid reused later is another process, never taken for it), shared
by everything watching that pid. Where pidfd_open is missing (Python before 3.9, a
kernel before 5.3) every POLL seconds a look at /proc/PID/stat (its start time, so a
reused pid counts as the exit of the one watched)."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Callable

log = logging.getLogger("socksify.pidwatch")

POLL = 2.0        # seconds between looks, without pidfds

Exited = Callable[[int], None]


class PidWatch:
    def __init__(self, exited: Exited) -> None:
        self.exited = exited
        self._fds: dict[int, int] = {}             # pid: its pidfd
        self._started: dict[int, str] = {}         # pid: start time (no pidfds)
        self._poller: asyncio.Task[None] | None = None
        self.pidfds = hasattr(os, "pidfd_open")

    def __len__(self) -> int:
        return len(self._fds) + len(self._started)

    def __contains__(self, pid: int) -> bool:
        return pid in self._fds or pid in self._started

    def watch(self, pid: int) -> bool:
        """Watch pid (again: nothing new). False if it cannot be watched: it is gone
        already, or not a process this daemon can see (pid 0: another pid namespace)."""
        if pid in self:
            return True
        if pid <= 0:
            return False
        if self.pidfds:
            try:
                fd = os.pidfd_open(pid)
            except OSError as exc:
                log.debug("pid %d cannot be watched: %s", pid, exc)
                return False
            self._fds[pid] = fd
            asyncio.get_running_loop().add_reader(fd, self._readable, pid)
            return True
        started = _start_time(pid)
        if started is None:
            return False
        self._started[pid] = started
        if self._poller is None:
            self._poller = asyncio.ensure_future(self._poll())
        return True

    def forget(self, pid: int) -> None:
        """Stop watching pid (nothing of it is left to end)."""
        fd = self._fds.pop(pid, None)
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)
        self._started.pop(pid, None)

    def close(self) -> None:
        for pid in list(self._fds):
            self.forget(pid)
        self._started.clear()
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None

    def _readable(self, pid: int) -> None:
        self.forget(pid)
        self.exited(pid)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL)
            for pid, started in list(self._started.items()):
                if _start_time(pid) != started:
                    self._started.pop(pid, None)
                    self.exited(pid)


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (after the command's parenthesis), or None: gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()
    if len(fields) < 20 or fields[0] == b"Z":
        return None
    return fields[19].decode()

"""A shim's control connection served by callbacks (selector loops), not a Task:
the request path of issue 16's daemon CPU per connect. control.py accepts the
connection and answers each request (Host); this reads the requests, runs each
answer eagerly (core/eager.py) and keeps the connection's timer."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any, Awaitable, Protocol

from ..core import eager
from ..procinfo import AppInfo
from ..protocol import control as wire
from .commands import HANDSHAKE_TIMEOUT

log = logging.getLogger("socksify.control")

# A shim's control connection that carries no request for this long is closed; the
# shim finds it closed before its next request and opens another (docs/wire.md).
SHIM_IDLE_TIMEOUT = 120.0

# A request is read with room for two descriptors: one more than any request
# carries, so that a request carrying more is seen (and refused), not cut to one by
# the kernel.
_MAX_FDS = 2


class LaneWatch(Protocol):
    """What a ShimConnection needs of the lane (listeners/lane.py)."""

    def attach(self, app: AppInfo) -> int:
        """A connection of app's: the lane's number for app."""

    def detach(self, app: AppInfo) -> None:
        """One of app's connections closed (the last: its routes go)."""

    def watch(self, shim: ShimConnection, key: int) -> bool:
        """Let the lane read the next request; False if it cannot."""

    def release(self, shim: ShimConnection, idle: float) -> int:
        """1: taken back (nothing came for `idle` s); 0: in use; < 0: not the lane's."""


class Host(Protocol):
    """What a ShimConnection needs of the control listener."""

    tasks: set[asyncio.Task[Any]]         # requests being answered (graceful stop)
    shims: set[ShimConnection]            # the connections served here
    closing: bool                         # stopping: close once answered

    @property
    def lane(self) -> LaneWatch | None:
        """What reads the requests between answers, if not the loop."""

    def identify(self, pid: int, uid: int) -> AppInfo: ...

    def answer_one(self, conn: socket.socket, data: bytes, fds: list[int], pid: int,
                   uid: int, app: AppInfo | None) -> Awaitable[bool]:
        """Answer the request in data (fds: its descriptors, those taken removed);
        False if the connection must close after it."""

    def serve_json(self, conn: socket.socket, first: bytes, pid: int,
                   uid: int) -> Awaitable[None]:
        """Serve a command line tool's JSON lines, `first` read already."""


class ShimConnection:
    """A shim's control connection served by callbacks, not a Task (selector loops):
    its reader stays registered while it is idle; each readable event reads one
    request (one recvmsg, with room for two descriptors so that extras are seen and
    refused) and runs its answer eagerly (core/eager.py). A request answered without
    waiting (DIRECT, a refusal, RESOLVE, NAMEOF...) is replied to at once, with no
    Task or future; one that waits (a chain) goes on in a Task, in Control.tasks,
    and the connection is not read until it is answered: one request at a time.
    One timer per connection closes it once idle for SHIM_IDLE_TIMEOUT (its first
    request: HANDSHAKE_TIMEOUT); a request only moves the deadline. With a lane
    (listeners/lane.py), the lane's thread reads the connection between answers
    from the first answer on, and gives it back (given()) with each request it
    leaves to the loop; the timer then closes it only once the lane lets go."""

    __slots__ = ("control", "loop", "conn", "fd", "pid", "uid", "app", "first",
                 "busy", "deadline", "timer", "closed", "reading", "watched", "key")

    def __init__(self, control: Host, loop: asyncio.AbstractEventLoop,
                 conn: socket.socket, pid: int, uid: int) -> None:
        self.control = control
        self.loop = loop
        self.conn = conn
        self.fd = conn.fileno()
        self.pid = pid
        self.uid = uid
        self.app: AppInfo | None = None
        self.first = True
        self.busy: asyncio.Task[None] | None = None   # the Task answering, if any
        self.closed = False
        self.watched = False        # the lane reads its next request
        self.key = 0                # the lane's number for the process (0: none)
        conn.setblocking(False)
        self.deadline = loop.time() + HANDSHAKE_TIMEOUT
        self.timer = loop.call_at(self.deadline, self._expire)
        control.shims.add(self)
        loop.add_reader(self.fd, self._readable)
        self.reading = True         # ... or the loop does

    def given(self, data: bytes, fds: list[int]) -> None:
        """The lane gives the connection back with a request it left to the loop
        (data: what it read of it; empty: the connection ended)."""
        self.watched = False
        if self.closed:
            for fd in fds:
                os.close(fd)
            return
        self._serve(data, fds)

    def _readable(self) -> None:
        try:
            data, fds, _, _ = socket.recv_fds(self.conn, wire.REQUEST_SIZE, _MAX_FDS,
                                              socket.MSG_CMSG_CLOEXEC)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.debug("control connection ended early: %r", exc)
            self.close()
            return
        self._serve(data, fds)

    def _serve(self, data: bytes, fds: list[int]) -> None:
        if not data:
            for fd in fds:
                os.close(fd)
            self.close()
            return
        if self.first:
            self.first = False
            if data[:1] == b"{":       # a command line tool: JSON lines, in a Task
                for fd in fds:
                    os.close(fd)
                self._release()
                asyncio.ensure_future(self.control.serve_json(self.conn, data,
                                                              self.pid, self.uid))
                return
            # identified once: the shim opens one connection per process,
            # close-on-exec (a child opens its own)
            self.app = self.control.identify(self.pid, self.uid)
            if self.control.lane is not None:
                self.key = self.control.lane.attach(self.app)
        task = eager.run(self._request(data, fds), self._answered)
        if task is not None and not task.done():
            self.busy = task
            self.control.tasks.add(task)
            self._unread()

    async def _request(self, data: bytes, fds: list[int]) -> bool:
        try:
            return await self.control.answer_one(self.conn, data, fds, self.pid,
                                                 self.uid, self.app)
        finally:
            while fds:          # whatever was not taken
                os.close(fds.pop())

    def _answered(self, ok: bool | None, exc: BaseException | None) -> None:
        task, self.busy = self.busy, None
        if task is not None:
            self.control.tasks.discard(task)
        if exc is not None:
            if isinstance(exc, asyncio.CancelledError):
                log.debug("control connection cancelled at shutdown")
            elif isinstance(exc, (asyncio.IncompleteReadError, asyncio.TimeoutError,
                                  OSError)):
                log.debug("control connection ended early: %r", exc)
            else:
                log.error("control request from pid %d failed: %r", self.pid, exc,
                          exc_info=exc)
            ok = False
        if not ok or self.closed or self.control.closing:
            self.close()
            return
        self.deadline = self.loop.time() + SHIM_IDLE_TIMEOUT
        if self.deadline < self.timer.when():   # (only if idle < handshake timeout)
            self.timer.cancel()
            self.timer = self.loop.call_at(self.deadline, self._expire)
        self._resume()

    def _resume(self) -> None:
        """Read the next request: the lane does, if there is one, else the loop."""
        lane = self.control.lane
        if lane is not None and self.key and not self.watched:
            self._unread()
            if lane.watch(self, self.key):
                self.watched = True
                return
        if not self.reading and not self.watched:
            self.loop.add_reader(self.fd, self._readable)
            self.reading = True

    def _unread(self) -> None:
        if self.reading:
            self.loop.remove_reader(self.fd)
            self.reading = False

    def _expire(self) -> None:
        if self.closed:
            return
        now = self.loop.time()
        lane = self.control.lane
        if self.watched and lane is not None:
            taken = lane.release(self, SHIM_IDLE_TIMEOUT)
            if taken == 1:
                self.watched = False
                log.debug("control connection of pid %d idle: closed", self.pid)
                self.close()
            else:       # in use by the lane, or given back (given() comes next)
                self.timer = self.loop.call_at(now + SHIM_IDLE_TIMEOUT, self._expire)
            return
        if self.busy is not None:
            self.timer = self.loop.call_at(now + SHIM_IDLE_TIMEOUT, self._expire)
        elif self.deadline > now + 0.001:        # a request since: not idle yet
            self.timer = self.loop.call_at(self.deadline, self._expire)
        else:
            log.debug("control connection of pid %d idle: closed", self.pid)
            self.close()

    def _release(self) -> None:
        """Stop serving the socket here (it stays open). Never while the lane has
        it: the lane writes its answers to this descriptor (Lane.stop first)."""
        self.closed = True
        self.timer.cancel()
        self._unread()
        self.control.shims.discard(self)

    def close(self) -> None:
        if self.closed:
            return
        self._release()
        self.conn.close()
        lane = self.control.lane
        if self.key and self.app is not None and lane is not None:
            lane.detach(self.app)
        self.key = 0


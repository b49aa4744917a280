"""The relay data path: the daemon carries bytes between the application's connection
and the chain's tunnel, carrying half-close (EOF) each way.

relay_sockets() is the daemon's own relay (two raw sockets, splice(2): the bytes stay
in the kernel; on Windows, which has no splice, it copies through streams); relay()
does the same for asyncio streams (the SOCKS front door, whose
client may have pipelined bytes the stream already read). The handoff data path
(docs/data-path.md) needs neither: the program's own socket reaches hop 1."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger("socksify.relay")

CHUNK = 1 << 18
F_SETPIPE_SZ = 1031            # fcntl.F_SETPIPE_SZ (Linux), named there since 3.10


@dataclass
class Counters:
    """What a relay has carried: bytes each way, and which side has sent EOF (carried
    on as a half-close)."""

    up: int = 0      # app -> target
    down: int = 0    # target -> app
    up_eof: bool = False      # the app has sent EOF
    down_eof: bool = False    # the target has

    @property
    def state(self) -> str:
        """The relay's state: "open", or "closing" once either side has sent EOF."""
        return "closing" if self.up_eof or self.down_eof else "open"


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                counters: Counters, upward: bool) -> None:
    while True:
        data = await src.read(CHUNK)
        if not data:
            break
        dst.write(data)
        if upward:
            counters.up += len(data)
        else:
            counters.down += len(data)
        await dst.drain()
    if upward:
        counters.up_eof = True
    else:
        counters.down_eof = True
    if dst.can_write_eof() and not dst.is_closing():
        dst.write_eof()


async def relay(app_reader: asyncio.StreamReader, app_writer: asyncio.StreamWriter,
                far_reader: asyncio.StreamReader, far_writer: asyncio.StreamWriter,
                counters: Counters, conn: str = "-") -> None:
    """Copy both ways until both sides have sent EOF, or either fails; then close both.
    Any bytes the tunnel already buffered (sent by the target right after the last
    SOCKS reply) are in far_reader and go first."""
    up = asyncio.ensure_future(_pump(app_reader, far_writer, counters, True))
    down = asyncio.ensure_future(_pump(far_reader, app_writer, counters, False))
    try:
        done, pending = await asyncio.wait({up, down},
                                           return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            exc = task.exception()
            if exc is not None:
                log.info("[%s] relay ended: %s", conn, exc)
                # Reset rather than a clean FIN, so the app sees the failure.
                _abort(app_writer)
                _abort(far_writer)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    finally:
        for task in (up, down):
            task.cancel()
        app_writer.close()
        far_writer.close()


_LINGER_RESET = struct.pack("ii", 1, 0)   # SO_LINGER on, 0 s: close() sends a RST


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset. transport.abort() alone only closes the socket, which
    the kernel ends with a clean FIN: the peer would take a cut transfer for a
    complete one."""
    transport = writer.transport
    if transport.is_closing():
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        except OSError:
            pass
    transport.abort()


# --- the socket relay: splice(2) through a pipe, no copy in the daemon ----------------

PIPE_SIZE = 1 << 20          # bytes a direction may hold in flight (F_SETPIPE_SZ)
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)


class _Direction:
    """src -> dst through a pipe with splice(2): the kernel moves the pages, the daemon
    only says when. Reading src stops while the pipe holds what dst cannot take yet
    (dst's backpressure reaches src's sender); src's EOF becomes shutdown(SHUT_WR) on
    dst once the pipe is empty."""

    def __init__(self, loop: asyncio.AbstractEventLoop, src: socket.socket,
                 dst: socket.socket, count: Callable[[int], None],
                 failed: Callable[[BaseException], None],
                 finished: Callable[[], None]) -> None:
        self.loop, self.src, self.dst = loop, src, dst
        self.count, self.failed, self.finished = count, failed, finished
        self.pipe_r, self.pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            import fcntl     # here: the module is imported on Windows too
            fcntl.fcntl(self.pipe_w, F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass                       # the default 64 KiB pipe still works
        self.in_pipe = 0
        self.eof = False
        self.reading = self.writing = False
        self.done = False

    def start(self) -> None:
        self._read_on()

    def _read_on(self) -> None:
        if not self.reading and not self.eof:
            self.loop.add_reader(self.src.fileno(), self._fill)
            self.reading = True

    def _read_off(self) -> None:
        if self.reading:
            self.loop.remove_reader(self.src.fileno())
            self.reading = False

    def _fill(self) -> None:
        try:
            n = os.splice(self.src.fileno(), self.pipe_w, PIPE_SIZE, flags=_SPLICE_FLAGS)
        except BlockingIOError:
            n = -1                     # nothing after all, or the pipe is full
        except OSError as exc:
            self.failed(exc)
            return
        if n == 0:
            self.eof = True
            self._read_off()
        elif n > 0:
            self.in_pipe += n
        self._drain()

    def _writable(self) -> None:
        self.loop.remove_writer(self.dst.fileno())
        self.writing = False
        self._drain()

    def _drain(self) -> None:
        while self.in_pipe:
            try:
                n = os.splice(self.pipe_r, self.dst.fileno(), self.in_pipe,
                              flags=_SPLICE_FLAGS)
            except BlockingIOError:
                # dst is full: hold src until it drains
                self._read_off()
                if not self.writing:
                    self.loop.add_writer(self.dst.fileno(), self._writable)
                    self.writing = True
                return
            except OSError as exc:
                self.failed(exc)
                return
            self.in_pipe -= n
            self.count(n)
        if self.eof:
            if not self.done:
                self.done = True
                try:
                    self.dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                self.finished()
        else:
            self._read_on()

    def stop(self) -> None:
        self._read_off()
        if self.writing:
            self.loop.remove_writer(self.dst.fileno())
            self.writing = False
        for fd in (self.pipe_r, self.pipe_w):
            os.close(fd)
        self.pipe_r = self.pipe_w = -1


async def relay_sockets(app: socket.socket, far: socket.socket, counters: Counters,
                        conn: str = "-") -> None:
    """relay() for two raw non-blocking sockets, with splice(2): the bytes never
    enter the daemon. Same contract: half-close carried, a reset or error on either
    side resets both, both sockets closed at the end (also when cancelled)."""
    if not hasattr(os, "splice"):     # Windows
        await _relay_copy(app, far, counters, conn)
        return
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[BaseException | None] = loop.create_future()
    open_directions = [2]

    def up(n: int) -> None:
        counters.up += n

    def down(n: int) -> None:
        counters.down += n

    def failed(exc: BaseException) -> None:
        if not ended.done():
            ended.set_result(exc)

    def up_done() -> None:
        counters.up_eof = True
        finished()

    def down_done() -> None:
        counters.down_eof = True
        finished()

    def finished() -> None:
        open_directions[0] -= 1
        if open_directions[0] == 0 and not ended.done():
            ended.set_result(None)

    directions = []
    try:
        directions.append(_Direction(loop, app, far, up, failed, up_done))
        directions.append(_Direction(loop, far, app, down, failed, down_done))
        for d in directions:
            d.start()
        exc = await ended
        if exc is not None:
            log.info("[%s] relay ended: %s", conn, exc)
            for sock in (app, far):    # a reset, so the program sees the failure
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                except OSError:
                    pass
    finally:
        for d in directions:
            d.stop()
        app.close()
        far.close()


async def _relay_copy(app: socket.socket, far: socket.socket, counters: Counters,
                      conn: str) -> None:
    """relay_sockets() where there is no splice(2): the stream relay over both."""
    try:
        app_reader, app_writer = await asyncio.open_connection(sock=app, limit=CHUNK)
        far_reader, far_writer = await asyncio.open_connection(sock=far, limit=CHUNK)
    except BaseException:
        app.close()
        far.close()
        raise
    await relay(app_reader, app_writer, far_reader, far_writer, counters, conn)

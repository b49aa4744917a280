"""A byte stream over a raw non-blocking socket that never reads ahead.

The chain engine negotiates on sockets it hands on afterwards: the program's own
socket (handoff), a pre-built tunnel given to the program (SWAP), or the daemon's
tunnel socket whose bytes the relay then splices. So it must read exactly the SOCKS
replies and nothing after them: whatever the target sends next stays in the kernel's
receive queue, for whoever carries the connection on. RawStream offers what the
chain engine needs (write, drain, readexactly) with exact reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from asyncio.selector_events import BaseSelectorEventLoop
from typing import Awaitable, Iterator, TypeVar

T = TypeVar("T")


async def within(aw: Awaitable[T], timeout: float) -> T:
    """aw within `timeout` seconds (asyncio.TimeoutError after): asyncio.timeout()
    inside a Task (3.11+: no extra task), else asyncio.wait_for, which needs no
    current Task: a request's eager step (core/eager.py) may call this before its
    first wait."""
    if sys.version_info >= (3, 11) and asyncio.current_task() is not None:
        async with asyncio.timeout(timeout):
            return await aw
    return await asyncio.wait_for(aw, timeout)


async def recv_exactly(sock: socket.socket, n: int) -> bytes:
    """Exactly n bytes from a non-blocking socket, and not one more; IncompleteReadError
    at EOF."""
    loop = asyncio.get_running_loop()
    buf = bytearray()
    while len(buf) < n:
        chunk = await loop.sock_recv(sock, n - len(buf))
        if not chunk:
            raise asyncio.IncompleteReadError(bytes(buf), n)
        buf += chunk
    return bytes(buf)


def _ready(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(asyncio.TimeoutError())


async def wait_ready(loop: BaseSelectorEventLoop, sock: socket.socket, write: bool,
                     deadline: float) -> None:
    """Until sock is readable (writable, with `write`), asyncio.TimeoutError at the
    loop time `deadline`: one future, one registration and one timer, where
    within(loop.sock_recv()) costs a timeout context, a future with a done callback
    and a task wake-up more (the chain engine waits like this for hop 1's connect
    and for each reply; issue 16's daemon CPU per connect)."""
    if deadline <= loop.time():
        raise asyncio.TimeoutError()
    fut: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()
    if write:
        loop.add_writer(fd, _ready, fut)
    else:
        loop.add_reader(fd, _ready, fut)
    timer = loop.call_at(deadline, _expire, fut)
    try:
        await fut
    finally:
        timer.cancel()
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


# Linux: a TCP socket with SO_RCVLOWAT = n is readable (poll, epoll) only once n bytes
# are queued, or at EOF, a reset or an error: a chain's pipelined replies, which come
# one hop after another about a hop's processing time apart, then wake the daemon once
# for all of them instead of once each (docs/performance.md, issue 16).
_RCVLOWAT: int | None = getattr(socket, "SO_RCVLOWAT", None) \
    if sys.platform.startswith("linux") else None
# How long one gathering wait lasts before the daemon looks at what has come: a hop
# that answers a request with a refusal and keeps the connection open (a protocol
# breach: a refusing hop closes) is then seen this late, never a timeout late; a slow
# chain pays one wake-up per GATHER_SECONDS more.
GATHER_SECONDS = 0.02


async def recv_exactly_within(sock: socket.socket, n: int, timeout: float,
                              more: int = 0) -> bytes:
    """recv_exactly within `timeout` seconds (asyncio.TimeoutError after): the bytes
    taken at once when they are there (a pipelined chain's later replies often
    are), else a wait for readability (wait_ready) and one recv. With `more` (bytes
    at least that the replies behind this one will bring), a TCP socket's wait lasts
    until this reply and those are all in (_gather); nothing is read past n either way.
    Selector loops only (every loop on Linux); elsewhere within(recv_exactly()) does
    it."""
    loop = asyncio.get_running_loop()
    if not isinstance(loop, BaseSelectorEventLoop):
        return await within(recv_exactly(sock, n), timeout)
    deadline = loop.time() + timeout
    gather = more > 0 and _RCVLOWAT is not None
    buf = b""
    while True:
        try:
            chunk = sock.recv(n - len(buf))
        except (BlockingIOError, InterruptedError):
            if gather and sock.family in (socket.AF_INET, socket.AF_INET6):
                gather = await _gather(loop, sock, n - len(buf) + more, deadline)
            else:
                await wait_ready(loop, sock, False, deadline)
            continue
        if not chunk:
            raise asyncio.IncompleteReadError(buf, n)
        buf += chunk
        if len(buf) >= n:
            return buf


async def _gather(loop: BaseSelectorEventLoop, sock: socket.socket, want: int,
                  deadline: float) -> bool:
    """Wait until `want` bytes are queued on sock (or EOF, a reset), for at most
    GATHER_SECONDS (and never past `deadline`); the socket's SO_RCVLOWAT is set for
    the wait and put back after it. False when the wait ran out: the caller then
    waits for any byte, as without gathering, and the replies that are there are
    checked at once."""
    with _low_water(sock, want) as set_:
        if not set_:    # a socket without a low-water mark: wait as without gathering
            return False
        try:
            await wait_ready(loop, sock, False,
                             min(deadline, loop.time() + GATHER_SECONDS))
        except asyncio.TimeoutError:
            return False
    return True


@contextlib.contextmanager
def _low_water(sock: socket.socket, n: int) -> Iterator[bool]:
    """sock's SO_RCVLOWAT at n for the span, its own value put back after it; yields
    whether the mark is n (False: this socket has none to set, or not here)."""
    opt = _RCVLOWAT
    before: int | None = None
    if opt is not None:
        try:
            before = sock.getsockopt(socket.SOL_SOCKET, opt)
            if before != n:
                sock.setsockopt(socket.SOL_SOCKET, opt, n)
        except OSError:
            before = None
    try:
        yield before is not None
    finally:
        if opt is not None and before is not None and before != n:
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, before)
            except OSError:
                pass    # closed meanwhile (a cancelled negotiation): nothing to restore


@contextlib.contextmanager
def replies_readable(sock: socket.socket) -> Iterator[None]:
    """The program's socket while the daemon reads the chain's replies on it
    (handoff): an SO_RCVLOWAT the program set before connect() is 1 meanwhile (else
    the socket is readable only once that many bytes are queued, which an 8-byte
    reply never is: the wait would run into the read timeout) and the program's own
    again afterwards, before it is answered."""
    with _low_water(sock, 1):
        yield


class RawStream:
    """readexactly/write/drain on `sock` (made non-blocking; the caller restores or
    owns its flags). close() closes the socket only if `owned`."""

    def __init__(self, sock: socket.socket, owned: bool) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.owned = owned
        self._loop = asyncio.get_running_loop()
        self._out = bytearray()
        self.ahead = 0     # bytes at least that replies behind the next one bring

    async def readexactly(self, n: int) -> bytes:
        return await recv_exactly(self.sock, n)

    async def read_within(self, n: int, timeout: float, rest: int = 0) -> bytes:
        """readexactly within `timeout` (asyncio.TimeoutError after); when replies
        are behind this one (`ahead`), their bytes and `rest` (the bytes at least
        that this reply brings after these n: a SOCKS5 reply read head first) are
        waited for with them when none are there yet (recv_exactly_within)."""
        more = self.ahead + rest if self.ahead else 0
        return await recv_exactly_within(self.sock, n, timeout, more)

    async def read_until(self, sep: bytes, limit: int) -> bytes:
        """The bytes up to and including the first `sep`, and not one byte after it
        (an HTTP reply head: what follows the blank line is the target's). Waits for
        one byte, then peeks at what else has arrived and takes only what precedes
        the separator. IncompleteReadError at EOF; LimitOverrunError past `limit`."""
        buf = bytearray()
        quickack = getattr(socket, "TCP_QUICKACK", None) \
            if self.sock.family in (socket.AF_INET, socket.AF_INET6) else None
        while True:
            if quickack is not None:
                # acknowledge at once: a proxy that writes its reply head in pieces
                # (tinyproxy) waits for our ACK before its next piece (Nagle), and a
                # delayed ACK would cost each CONNECT ~40 ms
                self.sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)
            buf += await self.readexactly(1)
            try:
                ahead = self.sock.recv(max(limit + len(sep) - len(buf), 1),
                                       socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                ahead = b""
            joined = bytes(buf) + ahead
            at = joined.find(sep, max(0, len(buf) - len(sep)))
            if at >= 0:
                take = at + len(sep) - len(buf)
                if take > 0:
                    buf += await self.readexactly(take)
                return bytes(buf)
            if len(joined) > limit:
                raise asyncio.LimitOverrunError(f"no {sep!r} in {limit} bytes", limit)
            if ahead:
                buf += await self.readexactly(len(ahead))

    def write(self, data: bytes) -> None:
        self._out += data

    async def drain(self) -> None:
        data, self._out = bytes(self._out), bytearray()
        if not data:
            return
        try:        # a few requests: the socket's buffer takes them at once
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent < len(data):
            await self._loop.sock_sendall(self.sock, data[sent:])

    def close(self) -> None:
        if self.owned:
            self.sock.close()

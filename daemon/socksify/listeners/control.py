"""The control socket: one Unix socket per user where the shim asks "how do I reach
this address?" (binary, docs/wire.md) and the command line tools talk JSON lines
(commands.py: start a session, ask for status)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from asyncio.selector_events import BaseSelectorEventLoop
from functools import partial
from pathlib import Path
from typing import Any, Awaitable, Callable

from ..core import eager
from ..core.router import Router
from ..procinfo import AppInfo, own_uid, peer_credentials
from ..protocol import control as wire
from ..protocol.datagram import WrapReply
from ..sockstream import recv_exactly, within
from . import commands
from .admission import BurstLog, Gate, Ticket
from .commands import HANDSHAKE_TIMEOUT, MAX_JSON, Admin
from .fdpass import recv_with_fds
from .lane import Lane
from .shimconn import SHIM_IDLE_TIMEOUT, ShimConnection

log = logging.getLogger("socksify.control")

_ACCEPT_ERRORS = BurstLog(logging.getLogger("socksify.daemon"))


class Control:
    """The Unix control listener. `tasks` holds the connections being served (the
    TCP control listener adds its own), for the graceful stop."""

    def __init__(self, router: Router, admin: Admin, gate: Gate,
                 burst: BurstLog) -> None:
        self.router = router
        self.admin = admin
        self.gate = gate
        self.burst = burst
        self.tasks: set[asyncio.Task[Any]] = set()
        self.idle: set[asyncio.Task[Any]] = set()   # shims' connections between requests
        self.shims: set[ShimConnection] = set()    # served by callbacks (selector loops)
        self.closing = False
        self.lane: Lane | None = None           # the compiled connect path, if any
        self.sock: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None

    def listen(self, path: Path) -> None:
        try:
            path.unlink()  # stale: the pidfile lock says nobody owns it
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen(512)
        listener.setblocking(False)
        self.sock = listener
        self._accepting = asyncio.ensure_future(self._accept(listener))

    def close(self) -> None:
        """Stop accepting, and end the shims' connections that wait between requests
        (those in the middle of one finish it)."""
        self.closing = True
        if self.lane is not None:   # first: the connections it watches come back
            self.lane.stop()
            self.lane = None
        for task in list(self.idle):
            task.cancel()
        for shim in list(self.shims):
            if shim.busy is None:
                shim.close()
        if self._accepting is not None:
            self._accepting.cancel()
            self._accepting = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    async def _accept(self, listener: socket.socket) -> None:
        """Accept control connections; each is served by serve(), which reads the
        first bytes with any descriptor attached (HANDOFF). On root's shared socket,
        connections of uids it does not serve (answered with a refusal once their
        request is read) wait under the admission caps, so they cannot use up the
        descriptors its users need."""
        loop = asyncio.get_running_loop()
        callbacks = isinstance(loop, BaseSelectorEventLoop)   # (proactor: Tasks)
        while True:
            try:
                conn, _ = await loop.sock_accept(listener)
            except OSError as exc:     # EMFILE and friends: let the others finish
                _ACCEPT_ERRORS.warn("control", f"control socket accept failed: {exc}")
                await asyncio.sleep(0.1)
                continue
            try:
                pid, uid = peer_credentials(conn)
            except OSError:
                conn.close()
                continue
            if self.router.allows(uid):
                if callbacks:
                    ShimConnection(self, loop, conn, pid, uid)
                else:
                    asyncio.ensure_future(self.serve(conn))
            else:
                ticket = self.gate.admit(uid)
                if ticket is None:
                    self.burst.warn(("control-cap", uid), f"control: closed connections "
                                    f"from uid {uid}, which this daemon does not serve: "
                                    f"too many waiting ({self.gate.total} waiting)")
                    conn.close()
                else:
                    asyncio.ensure_future(self._serve_refused(conn, ticket))
            await asyncio.sleep(0)     # a steady flood must not starve the others

    async def _serve_refused(self, conn: socket.socket, ticket: Ticket) -> None:
        try:
            await self.serve(conn)
        finally:
            ticket.release()

    async def serve(self, conn: socket.socket) -> None:
        """Serve one accepted control connection, whatever it turns out to be. A
        shim's requests (SKFY) are read and answered on the raw socket, one after the
        other for as long as the shim keeps the connection (docs/wire.md): a request's
        first bytes may carry a descriptor (HANDOFF: the program's socket) and its
        reply one (SWAP). A command line tool's JSON is served through asyncio
        streams."""
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        fds: list[int] = []
        streams = False
        try:
            conn.setblocking(False)
            pid, uid = peer_credentials(conn)
            # room for two descriptors, so that a request carrying more than one is
            # seen (and refused) rather than silently cut to one by the kernel
            first, fds = await recv_with_fds(conn, wire.REQUEST_SIZE, 2,
                                             HANDSHAKE_TIMEOUT)
            if first[:1] == b"{":
                streams = True
                await self._json_streams(conn, first, pid, uid)
            elif first:
                await self._shim(conn, first, fds, pid, uid, task)
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, OSError) as exc:
            log.debug("control connection ended early: %r", exc)
        except asyncio.CancelledError:
            log.debug("control connection cancelled at shutdown")
        finally:
            for fd in fds:        # whatever was not taken
                os.close(fd)
            if not streams:
                conn.close()
            if task is not None:
                self.tasks.discard(task)
                self.idle.discard(task)

    async def _shim(self, conn: socket.socket, data: bytes, fds: list[int], pid: int,
                    uid: int, task: asyncio.Task[Any] | None) -> None:
        """A shim's requests, the first in data (with fds), until the shim closes, a
        request is malformed or refused, or the connection stays idle for
        SHIM_IDLE_TIMEOUT. The process is identified once, at the first request: the
        shim opens its connections close-on-exec and one per process (a child opens
        its own), so every request on it comes from the same program. Descriptors
        not taken are closed after each request (`fds` is emptied in place)."""
        app = self.router.procs.identify(pid, uid) if self.router.allows(uid) else None
        while True:
            if not await self.answer_one(conn, data, fds, pid, uid, app):
                return
            while fds:
                os.close(fds.pop())
            if task is not None:
                self.idle.add(task)      # a graceful stop need not wait for it
            try:
                data, got = await recv_with_fds(conn, wire.REQUEST_SIZE, 2,
                                                SHIM_IDLE_TIMEOUT)
            finally:
                if task is not None:
                    self.idle.discard(task)
            fds.extend(got)
            if not data:
                return

    def identify(self, pid: int, uid: int) -> AppInfo:
        return self.router.procs.identify(pid, uid)

    async def answer_one(self, conn: socket.socket, data: bytes, fds: list[int],
                         pid: int, uid: int, app: AppInfo | None) -> bool:
        """Answer one shim request; False if the connection must close after it."""
        loop = asyncio.get_running_loop()
        if len(data) < len(wire.MAGIC):
            data += await _recv_exactly(conn, len(wire.MAGIC) - len(data))
        head = data[:len(wire.MAGIC)]
        if not allowed(self.router, pid, uid):
            if head == wire.MAGIC:
                await loop.sock_sendall(conn, wire.Reply.fail(13).dumps())  # EACCES
            return False
        if head != wire.MAGIC:
            log.warning("control connection from pid %d sent %r: neither a shim "
                        "request (SKFY) nor JSON", pid, head)
            return False
        if len(data) < wire.REQUEST_SIZE:
            data += await _recv_exactly(conn, wire.REQUEST_SIZE - len(data))
        swap: socket.socket | None = None
        after: list[Callable[[], None]] = []    # the log lines, once answered
        try:
            reply, swap, ok = await answer(self.router, data,
                                           partial(_recv_exactly, conn), fds, pid,
                                           uid, app, after)
            if swap is not None:
                socket.send_fds(conn, [reply], [swap.fileno()])
            else:
                try:
                    sent = conn.send(reply)     # (a reply is 32 bytes: all of it)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                if sent < len(reply):
                    await loop.sock_sendall(conn, reply[sent:])
        finally:
            if swap is not None:
                swap.close()
            for write in after:
                write()
        return ok

    async def serve_json(self, conn: socket.socket, first: bytes, pid: int,
                         uid: int) -> None:
        """A command line tool's connection whose first bytes a ShimConnection read."""
        if self.lane is not None:   # what the lane answered is logged and listed first
            self.lane.flush()
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        try:
            await self._json_streams(conn, first, pid, uid)
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, OSError) as exc:
            log.debug("control connection ended early: %r", exc)
        except asyncio.CancelledError:
            log.debug("control connection cancelled at shutdown")
        finally:
            if task is not None:
                self.tasks.discard(task)

    async def _json_streams(self, conn: socket.socket, first: bytes, pid: int,
                            uid: int) -> None:
        """A command line tool's JSON lines, through asyncio streams (`first` already
        read)."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=MAX_JSON, loop=loop)
        reader.feed_data(first)
        transport, protocol = await loop.connect_accepted_socket(
            lambda: asyncio.StreamReaderProtocol(reader, loop=loop), sock=conn)
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        try:
            if not allowed(self.router, pid, uid):
                return
            await commands.serve(self.router, self.admin, b"", reader, writer, pid, uid)
        except (asyncio.IncompleteReadError, asyncio.TimeoutError,
                ConnectionError) as exc:
            log.debug("control connection ended early: %r", exc)
        finally:
            writer.close()


def allowed(router: Router, pid: int, uid: int) -> bool:
    if router.allows(uid):
        return True
    log.warning("refused control connection from uid %d (pid %d): this daemon serves "
                "uid %d and the users in [daemon] allow_users only", uid, pid,
                own_uid())
    return False


async def _recv_exactly(conn: socket.socket, n: int) -> bytes:
    """n bytes more of a request: at once when they are there (the usual case: the
    shim sends a request whole), else waited for (in a Task: eager.py)."""
    try:
        data = conn.recv(n)
    except (BlockingIOError, InterruptedError):
        data = b""
    else:
        if not data:
            raise asyncio.IncompleteReadError(b"", n)
    if len(data) == n:
        return data
    await eager.in_task()
    return data + await within(recv_exactly(conn, n - len(data)), HANDSHAKE_TIMEOUT)


async def answer_stream(router: Router, data: bytes, reader: asyncio.StreamReader,
                        pid: int, uid: int, writer: asyncio.StreamWriter) -> None:
    """A shim request on asyncio streams (the TCP control listener, tcpcontrol.py):
    no descriptor can come with it, so no HANDOFF."""
    async def read(n: int) -> bytes:
        return await asyncio.wait_for(reader.readexactly(n), HANDSHAKE_TIMEOUT)
    after: list[Callable[[], None]] = []
    try:
        reply, _, _ = await answer(router, data, read, [], pid, uid, after=after)
        writer.write(reply)
        await writer.drain()
    finally:
        for write in after:
            write()


async def answer(router: Router, data: bytes, read: Callable[[int], Awaitable[bytes]],
                 fds: list[int], pid: int, uid: int, app: AppInfo | None = None,
                 after: list[Callable[[], None]] | None = None
                 ) -> tuple[bytes, socket.socket | None, bool]:
    """The reply to one shim request (its header in data, read() for a body), a
    socket to pass with it (SWAP), and whether the connection may carry another
    request (not after a malformed one: where the next would start is unknown).
    `app`: the process, if the listener identified it already; `after`: where a
    connection's log line waits until the reply is sent (none: written at once)."""
    try:
        head = wire.Header.loads(data)
        if head.op is wire.Op.HANDOFF:
            reply, swap = await _handoff(router, wire.ConnectRequest.from_header(head),
                                         pid, uid, fds, app, after)
            return reply.dumps(), swap, True
        if head.op is wire.Op.WRAP:
            reply, _ = await _wrap(router, wire.ConnectRequest.from_header(head), pid,
                                   uid, fds, app, after)
            return reply.dumps(), None, True
        if head.op is wire.Op.UNWRAP:
            return _unwrap(router, fds, pid, uid).dumps(), None, True
        if head.op is wire.Op.RESOLVE:
            body = await read(head.body_len)
            return router.resolve(wire.ResolveRequest.from_header(head, body), pid,
                                  uid, app), None, True
        if head.op is wire.Op.PEERNAME:
            return await router.peername(wire.ConnectRequest.from_header(head),
                                         uid), None, True
        if head.op is wire.Op.NAMEOF:
            return router.name_of(wire.ConnectRequest.from_header(head), pid, uid,
                                  app), None, True
        request = wire.ConnectRequest.from_header(head)
        return (await router.connect(request, pid, uid, app=app, after=after)
                )[0].dumps(), None, True
    except wire.WireError as exc:
        log.warning("bad request from pid %d: %s", pid, exc)
        return wire.Reply(wire.Verdict.FAIL, wire.Code.PROTO).dumps(), None, False


async def _wrap(router: Router, request: wire.ConnectRequest, pid: int, uid: int,
                fds: list[int], app: AppInfo | None,
                after: list[Callable[[], None]] | None = None
                ) -> tuple[wire.Reply | WrapReply, socket.socket | None]:
    """WRAP: a datagram CONNECT with the program's UDP socket attached. Without a
    socket that is a bound IPv4/IPv6 datagram socket it is answered as a CONNECT;
    the descriptor received is closed before the reply goes out (a handed-off flow
    keeps a copy of its own: core/wrapped.py, docs/wire.md)."""
    app_sock: socket.socket | None = None
    if len(fds) == 1:
        try:
            app_sock = socket.socket(fileno=fds[0])
        except OSError:      # not a socket: closed with the request's other fds
            app_sock = None
        else:
            fds.pop()
    try:
        if app_sock is not None and (app_sock.type != socket.SOCK_DGRAM
                                     or app_sock.family not in (socket.AF_INET,
                                                                socket.AF_INET6)):
            app_sock.close()
            app_sock = None
        return await router.connect(request, pid, uid, app_sock, app, after)
    finally:
        if app_sock is not None:
            app_sock.close()


def _unwrap(router: Router, fds: list[int], pid: int, uid: int) -> wire.Reply:
    """UNWRAP: the program closes its handed-off UDP socket (attached): the flows the
    daemon holds it in for that process end (core/wrapped.py); READY, whether there
    were any."""
    if len(fds) != 1:
        raise wire.WireError(f"an UNWRAP carries one socket, got {len(fds)} descriptor(s)")
    try:
        sock = socket.socket(fileno=fds[0])
    except OSError as exc:
        raise wire.WireError(f"an UNWRAP carries a socket: {exc}") from None
    fds.pop()
    with sock:
        if router.unwrap is not None:
            router.unwrap(sock, pid, uid)
    return wire.Reply(wire.Verdict.READY)


async def _handoff(router: Router, request: wire.ConnectRequest, pid: int, uid: int,
                   fds: list[int], app: AppInfo | None,
                   after: list[Callable[[], None]] | None = None
                   ) -> tuple[wire.Reply | WrapReply, socket.socket | None]:
    """HANDOFF: CONNECT with the program's socket attached. The daemon's copy of it is
    closed before the reply goes out, so the program holds the only one again."""
    if len(fds) != 1 or request.socktype is not wire.SockType.STREAM:
        raise wire.WireError(f"a HANDOFF carries one stream socket, got {len(fds)} "
                             "descriptor(s)")
    try:
        app_sock = socket.socket(fileno=fds[0])
    except OSError as exc:
        raise wire.WireError(f"a HANDOFF carries a socket: {exc}") from None
    fds.pop()
    try:
        if app_sock.type != socket.SOCK_STREAM or app_sock.family not in (
                socket.AF_INET, socket.AF_INET6):
            raise wire.WireError("a HANDOFF carries a TCP socket")
        return await router.connect(request, pid, uid, app_sock, app, after)
    finally:
        app_sock.close()

"""The control socket: one Unix socket per user where the shim asks "how do I reach
this address?" (binary, docs/wire.md) and the command line tools talk JSON lines
(start a session, ask for status)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import stat
from functools import partial
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from .errors import ConfigError
from .fdpass import recv_with_fds
from .procinfo import own_uid, peer_credentials
from .protocol import control as wire
from .sockstream import recv_exactly, within

if TYPE_CHECKING:
    from .daemon import Daemon

log = logging.getLogger("socksify.control")

HANDSHAKE_TIMEOUT = 10.0
MAX_JSON = 64 * 1024


async def serve(daemon: Daemon, conn: socket.socket) -> None:
    """Serve one accepted control connection, whatever it turns out to be. A shim's
    request (SKFY) is read and answered on the raw socket: its first bytes may carry
    a descriptor (HANDOFF: the program's socket) and its reply one (SWAP). A command
    line tool's JSON is served through asyncio streams."""
    task = asyncio.current_task()
    if task is not None:
        daemon.control_tasks.add(task)
    fds: list[int] = []
    streams = False
    try:
        conn.setblocking(False)
        pid, uid = peer_credentials(conn)
        # room for two descriptors, so that a request carrying more than one is seen
        # (and refused) rather than silently cut to one by the kernel
        first, fds = await recv_with_fds(conn, wire.REQUEST_SIZE, 2, HANDSHAKE_TIMEOUT)
        if first[:1] == b"{":
            streams = True
            await _json_streams(daemon, conn, first, pid, uid)
        elif first:
            await _shim(daemon, conn, first, fds, pid, uid)
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
            daemon.control_tasks.discard(task)


def _allowed(daemon: Daemon, pid: int, uid: int) -> bool:
    if daemon.allows(uid):
        return True
    log.warning("refused control connection from uid %d (pid %d): this daemon serves "
                "uid %d and the users in [daemon] allow_users only", uid, pid,
                own_uid())
    return False


async def _recv_exactly(conn: socket.socket, n: int) -> bytes:
    return await within(recv_exactly(conn, n), HANDSHAKE_TIMEOUT)


async def _shim(daemon: Daemon, conn: socket.socket, data: bytes, fds: list[int],
                pid: int, uid: int) -> None:
    loop = asyncio.get_running_loop()
    if len(data) < len(wire.MAGIC):
        data += await _recv_exactly(conn, len(wire.MAGIC) - len(data))
    head = data[:len(wire.MAGIC)]
    if not _allowed(daemon, pid, uid):
        if head == wire.MAGIC:
            await loop.sock_sendall(conn, wire.Reply.fail(13).dumps())  # EACCES
        return
    if head != wire.MAGIC:
        log.warning("control connection from pid %d sent %r: neither a shim "
                    "request (SKFY) nor JSON", pid, head)
        return
    data += await _recv_exactly(conn, wire.REQUEST_SIZE - len(data))
    swap: socket.socket | None = None
    try:
        reply, swap = await _answer(daemon, data, partial(_recv_exactly, conn), fds,
                                    pid, uid)
        if swap is not None:
            socket.send_fds(conn, [reply], [swap.fileno()])
        else:
            await loop.sock_sendall(conn, reply)
    finally:
        if swap is not None:
            swap.close()


async def _shim_request(daemon: Daemon, data: bytes, reader: asyncio.StreamReader,
                        pid: int, uid: int, writer: asyncio.StreamWriter) -> None:
    """A shim request on asyncio streams (the TCP control listener, tcpcontrol.py):
    no descriptor can come with it, so no HANDOFF."""
    async def read(n: int) -> bytes:
        return await asyncio.wait_for(reader.readexactly(n), HANDSHAKE_TIMEOUT)
    reply, _ = await _answer(daemon, data, read, [], pid, uid)
    writer.write(reply)
    await writer.drain()


async def _answer(daemon: Daemon, data: bytes, read: Callable[[int], Awaitable[bytes]],
                  fds: list[int], pid: int, uid: int
                  ) -> tuple[bytes, socket.socket | None]:
    """The reply to one shim request (its header in data, read() for a body), and a
    socket to pass with it (SWAP)."""
    try:
        head = wire.Header.loads(data)
        if head.op is wire.Op.HANDOFF:
            reply, swap = await _handoff(daemon, wire.ConnectRequest.from_header(head),
                                         pid, uid, fds)
            return reply.dumps(), swap
        if head.op is wire.Op.RESOLVE:
            body = await read(head.body_len)
            return daemon.resolve(wire.ResolveRequest.from_header(head, body), pid,
                                  uid), None
        if head.op is wire.Op.PEERNAME:
            return await daemon.peername(wire.ConnectRequest.from_header(head),
                                        uid), None
        if head.op is wire.Op.NAMEOF:
            return daemon.name_of(wire.ConnectRequest.from_header(head), pid, uid), None
        request = wire.ConnectRequest.from_header(head)
        return (await daemon.connect(request, pid, uid))[0].dumps(), None
    except wire.WireError as exc:
        log.warning("bad request from pid %d: %s", pid, exc)
        return wire.Reply(wire.Verdict.FAIL, wire.Code.PROTO).dumps(), None


async def _handoff(daemon: Daemon, request: wire.ConnectRequest, pid: int, uid: int,
                   fds: list[int]) -> tuple[wire.Reply, socket.socket | None]:
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
        return await daemon.connect(request, pid, uid, app_sock)
    finally:
        app_sock.close()


async def _json_streams(daemon: Daemon, conn: socket.socket, first: bytes, pid: int,
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
        if not _allowed(daemon, pid, uid):
            return
        await _json_client(daemon, b"", reader, writer, pid, uid)
    except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError) as exc:
        log.debug("control connection ended early: %r", exc)
    finally:
        writer.close()


async def _json_client(daemon: Daemon, head: bytes, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter, pid: int, uid: int) -> None:
    try:
        line = head + await asyncio.wait_for(reader.readline(), HANDSHAKE_TIMEOUT)
    except ValueError:      # asyncio: no newline within the stream's limit
        line = b""
    if not line or len(line) > MAX_JSON:
        log.warning("control connection from pid %d: no JSON line within %d bytes; "
                    "closed", pid, MAX_JSON)
        return
    try:
        msg = json.loads(line)
        op = msg["op"]
    except (ValueError, KeyError, TypeError):
        _send(writer, {"ok": False, "error": "expected a JSON object with an 'op'"})
        return
    if op == "status":
        _send(writer, {"ok": True, **daemon.status(uid)})
    elif op == "connections":
        _send(writer, {"ok": True, "connections": daemon.connections(uid)})
    elif op == "session":
        await _session(daemon, msg, reader, writer, pid, uid)
    elif op in ("reload", "stop") and uid not in (own_uid(), 0):
        _send(writer, {"ok": False, "error": f"only the daemon's own user may {op} it"})
    elif op == "stop":      # Windows' `socksifyd stop` (there is no SIGTERM to send)
        daemon.stop()
        _send(writer, {"ok": True, "pid": os.getpid()})
    elif op == "reload":
        try:
            source = daemon.reload()
            await daemon.reopen_frontdoor()
            _send(writer, {"ok": True, "policy": source})
        except ConfigError as exc:
            _send(writer, {"ok": False, "error": str(exc)})
    else:
        _send(writer, {"ok": False, "error": f"unknown op {op!r}"})
    await writer.drain()


async def _session(daemon: Daemon, msg: dict[str, Any], reader: asyncio.StreamReader,
                   writer: asyncio.StreamWriter, pid: int, uid: int) -> None:
    """A `socksify` command's session: its chain or policy file, and (with -v) a stream
    of one event line per connection. It lasts as long as this connection."""
    try:
        _check_config_file(msg)
        session = daemon.open_session(msg, writer, pid, uid)
    except (ConfigError, ValueError) as exc:
        _send(writer, {"ok": False, "error": str(exc)})
        return
    except TypeError as exc:    # a field of the wrong JSON type ("via": 5)
        _send(writer, {"ok": False, "error": f"malformed session request: {exc}"})
        return
    try:
        _send(writer, {"ok": True, "session": session.id.hex(),
                       "policy": daemon.session_source(session)})
        await writer.drain()
        while await reader.read(4096):
            pass  # the client says nothing more; EOF ends the session
    finally:
        daemon.close_session(session)


def _check_config_file(msg: dict[str, Any]) -> None:
    """The daemon reads a session's policy file in its event loop: a FIFO or a
    device (/dev/zero) there would stall every connection of every program (or fill
    the memory). Only a regular file is read."""
    config = msg.get("config")
    if not config or msg.get("via"):
        return
    try:
        mode = os.stat(str(config)).st_mode
    except (OSError, ValueError):
        return                      # Policy.load reports it with the reason
    if not stat.S_ISREG(mode):
        raise ConfigError("cannot read policy: not a regular file", str(config))


def _send(writer: asyncio.StreamWriter, obj: dict[str, Any]) -> None:
    if not writer.is_closing():
        writer.write(json.dumps(obj).encode() + b"\n")

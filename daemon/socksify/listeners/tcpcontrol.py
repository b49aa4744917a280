"""The loopback TCP control listener, for programs that cannot reach the Unix control
socket: Windows programs (the injected DLL and the Windows launcher), natively or under
Wine (docs/windows.md). Its control file (port and key) is written and read by
controlfile.py.

Neither end ever sends the key: the two prove they hold it to each other first
(protocol/tcpauth.py, docs/wire.md "The TCP control handshake"), so a listener that
took over the port of a daemon that died gets nothing and is refused by the client.
Then the client sends exactly what it would send on the Unix control socket: a v1 wire
request (docs/wire.md) or a JSON line. Who is asking comes from the kernel's TCP table
(the process owning the other end), not from the request; a process of another user is
refused.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

from ..controlfile import PROOF_TIMEOUT, SECRET_SIZE, wanted
from ..core.router import Router
from ..procinfo import own_uid, process_uid, tcp_peer_owner
from ..protocol import control as wire
from ..protocol import tcpauth
from . import commands, control, socktable
from .commands import Admin

log = logging.getLogger("socksify.tcpcontrol")

HANDSHAKE_TIMEOUT = 10.0   # the request, once proven


async def listen(router: Router, admin: Admin, tasks: set[asyncio.Task[Any]]
                 ) -> tuple[list[asyncio.Server], bytes]:
    """Start the listener if wanted: (the servers to close at shutdown, none when not
    wanted; the key). control.tcp is written later by controlfile.publish(), once
    every other listener is up too. `tasks` holds the connections being served."""
    if not wanted():
        return [], b""
    secret = secrets.token_bytes(SECRET_SIZE)
    server = await asyncio.start_server(
        lambda r, w: handle(router, admin, tasks, secret, r, w), "127.0.0.1", 0)
    return [server], secret


async def handle(router: Router, admin: Admin, tasks: set[asyncio.Task[Any]],
                 secret: bytes, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
    task = asyncio.current_task()
    if task is not None:
        tasks.add(task)
    try:
        peer = writer.get_extra_info("peername")
        try:
            await asyncio.wait_for(prove(secret, reader, writer), PROOF_TIMEOUT)
        except tcpauth.ProofError as exc:
            log.warning("TCP control connection from %s refused: %s", peer, exc)
            return
        ours = writer.get_extra_info("sockname")
        pid = await asyncio.get_running_loop().run_in_executor(
            None, tcp_peer_owner, (peer[0], peer[1]), (ours[0], ours[1]))
        pid = pid or 0
        uid = own_uid()
        if socktable.supported():
            # the kernel knows the socket's owner even where its process cannot be
            # read (another user's, when we are not root): not found is refused
            owner = await asyncio.get_running_loop().run_in_executor(
                None, socktable.peer_uid, (peer[0], peer[1]), (ours[0], ours[1]))
            if owner is None:
                log.warning("TCP control connection from %s refused: its owner is "
                            "not in the kernel's socket table", peer)
                return
        else:
            owner = process_uid(pid) if pid else None
        if owner is not None:
            if not router.allows(owner):
                log.warning("TCP control connection from pid %d of another user "
                            "(uid %d) refused", pid, owner)
                return
            uid = owner
        head = await asyncio.wait_for(reader.readexactly(len(wire.MAGIC)),
                                      HANDSHAKE_TIMEOUT)
        if head == wire.MAGIC:
            rest = await asyncio.wait_for(
                reader.readexactly(wire.REQUEST_SIZE - len(head)), HANDSHAKE_TIMEOUT)
            await control.answer_stream(router, head + rest, reader, pid, uid, writer)
        elif head.startswith(b"{"):
            await commands.serve(router, admin, head, reader, writer, pid, uid)
        else:
            log.warning("TCP control connection from pid %d sent %r: neither a shim "
                        "request (SKFY) nor JSON", pid, head)
    except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError) as exc:
        log.debug("TCP control connection ended early: %r", exc)
    except asyncio.CancelledError:
        log.debug("TCP control connection cancelled at shutdown")
    finally:
        writer.close()
        if task is not None:
            tasks.discard(task)


async def prove(secret: bytes, reader: asyncio.StreamReader,
                writer: asyncio.StreamWriter) -> None:
    """The daemon's half of the mutual proof (protocol/tcpauth.py); ProofError, or
    the stream's own errors, when the client does not hold the key."""
    nc = tcpauth.parse_hello(await reader.readexactly(tcpauth.HELLO_SIZE))
    nd = secrets.token_bytes(tcpauth.NONCE_SIZE)
    writer.write(tcpauth.answer(secret, nc, nd))
    await writer.drain()
    tcpauth.check_proof(secret, nc, nd, await reader.readexactly(tcpauth.PROOF_SIZE))

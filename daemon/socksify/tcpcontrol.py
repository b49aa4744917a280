"""The loopback TCP control listener, for programs that cannot reach the Unix control
socket: Windows programs (the injected DLL and the Windows launcher), natively or under
Wine (docs/windows.md).

It listens on 127.0.0.1 (kernel-chosen port) and is guarded by a per-daemon random
key: the port and the key are written to `control.tcp` in the runtime directory
(mode 0600, inside the 0700 directory), one line:

    tcp 127.0.0.1:PORT KEYHEX

Neither end ever sends the key: the two prove they hold it to each other first
(protocol/tcpauth.py, docs/wire.md "The TCP control handshake"), so a listener that
took over the port of a daemon that died gets nothing and is refused by the client.
Then the client sends exactly what it would send on the Unix control socket: a v1 wire
request (docs/wire.md) or a JSON line. Who is asking comes from the kernel's TCP table
(the process owning the other end), not from the request; a process of another user is
refused.

Enabled when the daemon runs on Windows, or when SOCKSIFY_TCP_CONTROL=1 (a Linux
daemon serving Windows programs under Wine). The file is written once every listener
is up, and removed at shutdown and when the start fails.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .protocol import control as wire
from . import socktable
from .protocol import tcpauth

if TYPE_CHECKING:
    from .daemon import Daemon
    from .paths import Paths

log = logging.getLogger("socksify.tcpcontrol")

FILE_NAME = "control.tcp"
SECRET_SIZE = tcpauth.KEY_SIZE
HANDSHAKE_TIMEOUT = 10.0   # the request, once proven
PROOF_TIMEOUT = 5.0        # hello to proof, both ways


def wanted(env: dict[str, str] | None = None) -> bool:
    env = dict(os.environ) if env is None else env
    return sys.platform == "win32" or env.get("SOCKSIFY_TCP_CONTROL", "") == "1"


def file_path(paths: Paths) -> Path:
    """control.tcp beside the control socket."""
    return paths.socket.with_name(FILE_NAME)


def format_line(port: int, secret: bytes) -> str:
    return f"tcp 127.0.0.1:{port} {secret.hex()}\n"


def parse_line(text: str) -> tuple[int, bytes]:
    """(port, secret) from a control file's line; ValueError if it is not one."""
    parts = text.split()
    if len(parts) != 3 or parts[0] != "tcp" or not parts[1].startswith("127.0.0.1:"):
        raise ValueError(f"not a socksify control file line: {text[:80]!r}")
    port = int(parts[1].split(":", 1)[1])
    secret = bytes.fromhex(parts[2])
    if not 0 < port < 65536 or len(secret) != SECRET_SIZE:
        raise ValueError(f"bad port or secret in control file line: {text[:80]!r}")
    return port, secret


async def listen(daemon: Daemon) -> tuple[list[asyncio.Server], bytes]:
    """Start the listener if wanted: (the servers to close at shutdown, none when not
    wanted; the key). control.tcp is written later by publish(), once every other
    listener is up too."""
    if not wanted():
        return [], b""
    secret = secrets.token_bytes(SECRET_SIZE)
    server = await asyncio.start_server(
        lambda r, w: handle(daemon, secret, r, w), "127.0.0.1", 0)
    return [server], secret


def publish(paths: Paths, server: asyncio.Server, secret: bytes) -> None:
    """Write control.tcp (0600, through a temporary file and a rename) naming the
    listener's port and its key. On Windows the file and its directory first get an
    ACL for the user only (winacl.py)."""
    port = server.sockets[0].getsockname()[1]
    path = file_path(paths)
    tmp = path.with_name(f".{FILE_NAME}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if sys.platform == "win32":   # modes mean nothing there: an owner-only ACL
            from . import winacl
            winacl.restrict_to_owner(path.parent)
            winacl.restrict_to_owner(tmp)
        os.write(fd, format_line(port, secret).encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
    log.info("TCP control on 127.0.0.1:%d (key in %s)", port, path)


def forget(paths: Paths) -> None:
    """Remove control.tcp and our temporary copy (shutdown, a failed start): a client
    then fails closed at once. Called only by the daemon holding the pidfile lock, so
    never on another live daemon's file."""
    for p in (file_path(paths), file_path(paths).with_name(f".{FILE_NAME}.{os.getpid()}")):
        try:
            p.unlink()
        except FileNotFoundError:
            pass


async def handle(daemon: Daemon, secret: bytes, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
    # here, not at the top: the Windows launcher imports this module for
    # parse_line(), and control/procinfo need Linux-only modules (pwd)
    from . import control
    from .procinfo import own_uid, process_uid, tcp_peer_owner

    task = asyncio.current_task()
    if task is not None:
        daemon.control_tasks.add(task)
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
            if not daemon.allows(owner):
                log.warning("TCP control connection from pid %d of another user "
                            "(uid %d) refused", pid, owner)
                return
            uid = owner
        head = await asyncio.wait_for(reader.readexactly(len(wire.MAGIC)),
                                      HANDSHAKE_TIMEOUT)
        if head == wire.MAGIC:
            rest = await asyncio.wait_for(
                reader.readexactly(wire.REQUEST_SIZE - len(head)), HANDSHAKE_TIMEOUT)
            await control._shim_request(daemon, head + rest, reader, pid, uid, writer)
        elif head.startswith(b"{"):
            await control._json_client(daemon, head, reader, writer, pid, uid)
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
            daemon.control_tasks.discard(task)


async def prove(secret: bytes, reader: asyncio.StreamReader,
                writer: asyncio.StreamWriter) -> None:
    """The daemon's half of the mutual proof (protocol/tcpauth.py); ProofError, or
    the stream's own errors, when the client does not hold the key."""
    nc = tcpauth.parse_hello(await reader.readexactly(tcpauth.HELLO_SIZE))
    nd = secrets.token_bytes(tcpauth.NONCE_SIZE)
    writer.write(tcpauth.answer(secret, nc, nd))
    await writer.drain()
    tcpauth.check_proof(secret, nc, nd, await reader.readexactly(tcpauth.PROOF_SIZE))

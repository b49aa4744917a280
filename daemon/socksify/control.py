"""The control socket: one Unix socket per user where the shim asks "how do I reach
this address?" (binary, docs/wire.md) and the command line tools talk JSON lines
(start a session, ask for status)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .procinfo import peer_credentials
from .protocol import control as wire

if TYPE_CHECKING:
    from .daemon import Daemon

log = logging.getLogger("socksify.control")

HANDSHAKE_TIMEOUT = 10.0
MAX_JSON = 64 * 1024


async def handle(daemon: Daemon, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
    """Serve one control connection, whatever it turns out to be."""
    task = asyncio.current_task()
    if task is not None:
        daemon.control_tasks.add(task)
    try:
        sock = writer.get_extra_info("socket")
        pid, uid = peer_credentials(sock)
        head = await asyncio.wait_for(reader.readexactly(len(wire.MAGIC)),
                                      HANDSHAKE_TIMEOUT)
        if not daemon.allows(uid):
            log.warning("refused control connection from uid %d (pid %d): this "
                        "daemon serves uid %d and the users in [daemon] allow_users "
                        "only", uid, pid, os.getuid())
            if head == wire.MAGIC:
                writer.write(wire.Reply.fail(13).dumps())  # EACCES
            return
        if head == wire.MAGIC:
            rest = await asyncio.wait_for(
                reader.readexactly(wire.REQUEST_SIZE - len(head)), HANDSHAKE_TIMEOUT)
            await _shim_request(daemon, head + rest, reader, pid, uid, writer)
        elif head.startswith(b"{"):
            await _json_client(daemon, head, reader, writer, pid, uid)
        else:
            log.warning("control connection from pid %d sent %r: neither a shim "
                        "request (SKFY) nor JSON", pid, head)
    except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError) as exc:
        log.debug("control connection ended early: %r", exc)
    except asyncio.CancelledError:
        log.debug("control connection cancelled at shutdown")
    finally:
        writer.close()
        if task is not None:
            daemon.control_tasks.discard(task)


async def _shim_request(daemon: Daemon, data: bytes, reader: asyncio.StreamReader,
                        pid: int, uid: int, writer: asyncio.StreamWriter) -> None:
    try:
        head = wire.Header.loads(data)
        if head.op is wire.Op.RESOLVE:
            body = await asyncio.wait_for(reader.readexactly(head.body_len),
                                          HANDSHAKE_TIMEOUT)
            writer.write(daemon.resolve(wire.ResolveRequest.from_header(head, body),
                                        pid, uid))
        elif head.op is wire.Op.PEERNAME:
            writer.write(daemon.peername(wire.ConnectRequest.from_header(head)))
        elif head.op is wire.Op.NAMEOF:
            writer.write(daemon.name_of(wire.ConnectRequest.from_header(head), pid, uid))
        else:
            request = wire.ConnectRequest.from_header(head)
            writer.write((await daemon.connect(request, pid, uid)).dumps())
    except wire.WireError as exc:
        log.warning("bad request from pid %d: %s", pid, exc)
        writer.write(wire.Reply(wire.Verdict.FAIL, wire.Code.PROTO).dumps())
    await writer.drain()


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
        _send(writer, {"ok": True, **daemon.status()})
    elif op == "connections":
        mine = [c for c in daemon.connections()
                if uid in (os.getuid(), 0) or c["uid"] == uid]
        _send(writer, {"ok": True, "connections": mine})
    elif op == "session":
        await _session(daemon, msg, reader, writer, pid, uid)
    elif op == "reload" and uid not in (os.getuid(), 0):
        _send(writer, {"ok": False, "error": "only the daemon's own user may reload it"})
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

"""The JSON commands of the control listeners (`socksify`, `socksifyd status`, ...):
one JSON line in, JSON lines out. One small handler per operation, in COMMANDS; each
one's docstring says what it does. They reach the daemon through the router and the
Admin interface only."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Protocol

from ..core.router import Router
from ..errors import ConfigError
from ..procinfo import own_uid

log = logging.getLogger("socksify.control")

HANDSHAKE_TIMEOUT = 10.0
MAX_JSON = 64 * 1024


class Admin(Protocol):
    """What a command may ask of the daemon process itself."""

    def stop(self) -> None: ...

    def reload(self) -> str: ...        # the new policy's source; ConfigError

    async def reopen_frontdoor(self) -> None: ...

    def status(self, uid: int | None = None) -> dict[str, Any]: ...


@dataclass
class Request:
    msg: dict[str, Any]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    pid: int
    uid: int


Handler = Callable[[Router, Admin, Request], Awaitable[None]]


async def status(router: Router, admin: Admin, req: Request) -> None:
    """The daemon's state, as this user may see it."""
    send(req.writer, {"ok": True, **admin.status(req.uid)})


async def connections(router: Router, admin: Admin, req: Request) -> None:
    """The live connections this user may see (of "app" and "chain" when given), and
    the daemon's monotonic clock ("now"), for rates between two requests."""
    app, chain = req.msg.get("app"), req.msg.get("chain")
    send(req.writer, {"ok": True, "now": round(time.monotonic(), 3),
                      "connections": router.connections(
                          req.uid, str(app) if app else None,
                          str(chain) if chain else None)})


async def events(router: Router, admin: Admin, req: Request) -> None:
    """A stream of connect, close, refuse and direct events, one JSON line each, of
    the connections this user may see, until the client hangs up or the daemon
    stops."""
    sub = router.events.subscribe(None if router.sees_all(req.uid) else req.uid)
    router.handed.watch(True)
    hangup = asyncio.ensure_future(req.reader.read(4096))
    try:
        send(req.writer, {"ok": True, "now": round(time.monotonic(), 3)})
        await req.writer.drain()
        while True:
            got = asyncio.ensure_future(sub.queue.get())
            done, _ = await asyncio.wait({got, hangup},
                                         return_when=asyncio.FIRST_COMPLETED)
            if got not in done:
                got.cancel()
                if hangup.result():
                    hangup = asyncio.ensure_future(req.reader.read(4096))
                    continue
                return                  # EOF: the client is gone
            event = got.result()
            if event is None:
                return                  # the daemon stops
            send(req.writer, event)
            await req.writer.drain()
    finally:
        hangup.cancel()
        router.events.unsubscribe(sub)
        router.handed.watch(False)


async def session(router: Router, admin: Admin, req: Request) -> None:
    """A `socksify` command's session: its chain or policy file, and (with -v) a stream
    of one event line per connection. It lasts as long as this connection."""
    writer = req.writer
    try:
        _check_config_file(req.msg)
        opened = router.sessions.start(req.msg, writer, req.pid, req.uid, router.policy)
    except (ConfigError, ValueError) as exc:
        send(writer, {"ok": False, "error": str(exc)})
        return
    except TypeError as exc:    # a field of the wrong JSON type ("via": 5)
        send(writer, {"ok": False, "error": f"malformed session request: {exc}"})
        return
    try:
        policy = opened.policy or router.policy
        send(writer, {"ok": True, "session": opened.id.hex(),
                      "policy": policy.source if policy else "none"})
        await writer.drain()
        while await req.reader.read(4096):
            pass  # the client says nothing more; EOF ends the session
    finally:
        router.sessions.end(opened)


async def stop(router: Router, admin: Admin, req: Request) -> None:
    """Stop the daemon (Windows' `socksifyd stop`: there is no SIGTERM to send)."""
    admin.stop()
    send(req.writer, {"ok": True, "pid": os.getpid()})


async def reload(router: Router, admin: Admin, req: Request) -> None:
    """Re-read the policy (as SIGHUP does); a broken file keeps the old one."""
    try:
        source = admin.reload()
        await admin.reopen_frontdoor()
        send(req.writer, {"ok": True, "policy": source})
    except ConfigError as exc:
        send(req.writer, {"ok": False, "error": str(exc)})


COMMANDS: dict[str, Handler] = {"status": status, "connections": connections,
                                "events": events, "session": session, "stop": stop,
                                "reload": reload}
OWNER_ONLY = {"stop", "reload"}     # the daemon's own user (or root) only


async def serve(router: Router, admin: Admin, head: bytes,
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pid: int,
                uid: int) -> None:
    """Read one JSON line (after `head`, already read) and run its command."""
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
        send(writer, {"ok": False, "error": "expected a JSON object with an 'op'"})
        return
    handler = COMMANDS.get(op) if isinstance(op, str) else None
    if handler is None:
        send(writer, {"ok": False, "error": f"unknown op {op!r}"})
    elif op in OWNER_ONLY and uid not in (own_uid(), 0):
        send(writer, {"ok": False, "error": f"only the daemon's own user may {op} it"})
    else:
        await handler(router, admin, Request(msg, reader, writer, pid, uid))
    await writer.drain()


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


def send(writer: asyncio.StreamWriter, obj: dict[str, Any]) -> None:
    if not writer.is_closing():
        writer.write(json.dumps(obj).encode() + b"\n")

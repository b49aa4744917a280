"""The live connection table: relayed tunnels waiting for their program (by relay
token), connections being carried (for status, PEERNAME and the graceful stop), and
the carrying itself."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import socket
import time
from typing import Any, Callable

from ..chains import Tunnel
from ..dns import StandIn
from ..protocol import control as wire
from .carry import relay, relay_sockets
from .events import Events
from .records import Connection

log = logging.getLogger("socksify.daemon")

TOKEN_TTL = 10.0         # seconds a relayed tunnel waits for its program to attach
PEERNAME_WAIT = 2.0      # seconds a PEERNAME may wait for its relay to be attached

AppStreams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class ConnectionTable:
    def __init__(self, release: Callable[[StandIn], None],
                 events: Events | None = None) -> None:
        self._release = release      # a stand-in address held by a connection is free
        self.events = events or Events()
        self.pending: dict[bytes, tuple[Connection, Tunnel, asyncio.TimerHandle]] = {}
        self.live: dict[str, Connection] = {}
        # relay connections by the app side's address, for PEERNAME
        self.by_app_end: dict[tuple[wire.IPAddress, int], Connection] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self._attached = asyncio.Event()   # a relay connection was attached

    # ----- relay tokens ----------------------------------------------------------
    def park(self, conn: Connection, tunnel: Tunnel) -> bytes:
        """Keep tunnel for conn's program until it attaches to the relay with the
        token returned (or TOKEN_TTL passes)."""
        token = secrets.token_bytes(wire.TOKEN_SIZE)
        timer = asyncio.get_running_loop().call_later(TOKEN_TTL, self._expire, token)
        self.pending[token] = (conn, tunnel, timer)
        return token

    def claim(self, token: bytes) -> tuple[Connection, Tunnel] | None:
        """The connection and tunnel waiting for token, taken off the table."""
        entry = self.pending.pop(token, None)
        if entry is None:
            return None
        conn, tunnel, timer = entry
        timer.cancel()
        return conn, tunnel

    def _expire(self, token: bytes) -> None:
        entry = self.pending.pop(token, None)
        if entry:
            conn, tunnel, _ = entry
            log.warning("[%s] the app never attached to its tunnel; closed", conn.id)
            tunnel.close()
            if conn.stand_in is not None:
                self._release(conn.stand_in)

    def close_pending(self) -> None:
        for _conn, tunnel, timer in self.pending.values():
            timer.cancel()
            tunnel.close()
        self.pending.clear()

    # ----- carrying --------------------------------------------------------------
    async def carry(self, conn: Connection, tunnel: Tunnel,
                    app_sock: socket.socket | None = None,
                    app_streams: AppStreams | None = None) -> None:
        """Carry conn's bytes between the program and its tunnel, as a live connection
        (the connections table, PEERNAME, graceful stop): splice(2) between two
        sockets, or the stream relay for a program's asyncio streams (the front
        door's clients)."""
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        if app_streams is not None and conn.path == "relay":
            conn.path = "frontdoor"
        self.live[conn.id] = conn
        self.events.emit("connect", conn)
        app_end = _app_end(peer_of(app_sock) if app_sock is not None else
                           app_streams[1].get_extra_info("peername")
                           if app_streams is not None else None)
        if app_end is not None:
            self.by_app_end[app_end] = conn
            self._attached.set()
        try:
            if app_sock is not None:
                app_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                await relay_sockets(app_sock, tunnel.sock, conn.counters, conn.id)
            elif app_streams is not None:
                sock = app_streams[1].get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                far_reader, far_writer = await tunnel.streams()
                await relay(*app_streams, far_reader, far_writer, conn.counters,
                            conn.id)
        finally:
            tunnel.close()
            if conn.stand_in is not None:
                self._release(conn.stand_in)
            self.live.pop(conn.id, None)
            if app_end is not None:
                self.by_app_end.pop(app_end, None)
            self.tasks.discard(task)
            log.info("[%s] %s closed after %.1fs: %d bytes up, %d down", conn.id,
                     conn.app, time.monotonic() - conn.started, conn.counters.up,
                     conn.counters.down)
            self.events.emit("close", conn)

    async def finish(self, grace: float) -> None:
        """Graceful stop: wait up to grace seconds for the carried connections, then
        cancel the rest."""
        if not self.tasks:
            return
        _, still = await asyncio.wait(set(self.tasks), timeout=grace)
        for task in still:
            task.cancel()
        if still:
            log.warning("cancelled %d connection(s) still open after %.0fs",
                        len(still), grace)
            await asyncio.gather(*still, return_exceptions=True)

    # ----- PEERNAME --------------------------------------------------------------
    async def by_app_address(self, addr: wire.IPAddress, port: int) -> Connection | None:
        """The relayed connection whose app end is addr:port. A program may ask before
        its relay connection is accepted here (it sent the token and went on): while
        tokens are pending, wait for it a little."""
        key = (addr, port)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PEERNAME_WAIT
        while key not in self.by_app_end and self.pending and loop.time() < deadline:
            self._attached.clear()
            try:
                await asyncio.wait_for(self._attached.wait(), deadline - loop.time())
            except asyncio.TimeoutError:
                break
        return self.by_app_end.get(key)


def peer_of(sock: socket.socket) -> Any:
    try:
        return sock.getpeername()
    except OSError:
        return None


def _app_end(peer: Any) -> tuple[wire.IPAddress, int] | None:
    """(address, port) of a relay connection's app end, from asyncio's peername."""
    try:
        return ipaddress.ip_address(peer[0]), int(peer[1])
    except (TypeError, ValueError, IndexError):
        return None

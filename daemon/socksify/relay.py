"""The relay data path: the daemon copies bytes between the application's connection
and the chain's tunnel, carrying half-close (EOF) each way.

This is the one seam between "a tunnel is ready" and "bytes flow": a kernel-direct
path (hand the app's own socket to hop 1) can sit beside `relay` without touching the
chain engine."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from dataclasses import dataclass

log = logging.getLogger("socksify.relay")

CHUNK = 1 << 18


@dataclass
class Counters:
    up: int = 0      # app -> target
    down: int = 0    # target -> app


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

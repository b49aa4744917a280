"""Receiving descriptors (SCM_RIGHTS) on a non-blocking Unix socket under asyncio."""

from __future__ import annotations

import asyncio
import socket


async def recv_with_fds(conn: socket.socket, size: int, maxfds: int,
                        timeout: float) -> tuple[bytes, list[int]]:
    """Up to `size` bytes from conn and the descriptors that came with them (close-on-
    exec). b"" at EOF. Raises asyncio.TimeoutError, or OSError."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[bytes, list[int]]] = loop.create_future()

    def ready() -> None:
        if done.done():
            return
        try:
            data, fds, _, _ = socket.recv_fds(conn, size, maxfds,
                                              socket.MSG_CMSG_CLOEXEC)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            done.set_exception(exc)
        else:
            done.set_result((data, fds))

    ready()                      # usually the request is already there
    if done.done():
        return done.result()
    def expire() -> None:
        if not done.done():
            done.set_exception(asyncio.TimeoutError())

    loop.add_reader(conn.fileno(), ready)
    timer = loop.call_later(timeout, expire)   # (cheaper than wait_for: once a request)
    try:
        return await done
    finally:
        timer.cancel()
        loop.remove_reader(conn.fileno())

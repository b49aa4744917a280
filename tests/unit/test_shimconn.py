"""listeners/shimconn.py: a shim's control connection served by callbacks. Each
request is answered in the reader's callback when its answer does not wait (no
Task); one that waits goes on in a Task listed in the host's tasks, and the
connection is not read meanwhile (one request at a time); descriptors not taken are
closed; an idle connection is closed after SHIM_IDLE_TIMEOUT; JSON goes to the host's
serve_json; a stopping host closes the connection once its request is answered."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any, Awaitable

import pytest

from socksify.listeners import shimconn
from socksify.procinfo import AppInfo
from socksify.protocol import control as wire

REQUEST = b"SKFY" + bytes(wire.REQUEST_SIZE - 4)


class Host:
    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()
        self.shims: set[shimconn.ShimConnection] = set()
        self.closing = False
        self.gate: asyncio.Future[None] | None = None   # set: requests wait on it
        self.seen: list[tuple[bytes, list[int], bool]] = []
        self.json: list[bytes] = []
        self.lane: FakeLane | None = None

    def identify(self, pid: int, uid: int) -> AppInfo:
        return AppInfo(pid, "test", "", uid, "u", ())

    async def _answer(self, conn: socket.socket, data: bytes, fds: list[int]) -> bool:
        in_task = asyncio.current_task() is not None
        if self.gate is not None:
            await self.gate
            in_task = True
        self.seen.append((data, list(fds), in_task))
        conn.send(b"R" * wire.REPLY_SIZE)
        return data[4:5] != b"\xff"          # a "malformed" request closes

    def answer_one(self, conn: socket.socket, data: bytes, fds: list[int], pid: int,
                   uid: int, app: AppInfo | None) -> Awaitable[bool]:
        return self._answer(conn, data, fds)

    async def serve_json(self, conn: socket.socket, first: bytes, pid: int,
                         uid: int) -> None:
        self.json.append(first)
        conn.close()


class FakeLane:
    """The lane as a ShimConnection sees it (listeners/lane.py): it watches the
    connection between requests and gives it back with one it leaves to the loop."""

    def __init__(self, taken: int = 1) -> None:
        self.watched: list[shimconn.ShimConnection] = []
        self.taken = taken          # what release() answers
        self.attached = 0

    def attach(self, app: AppInfo) -> int:
        self.attached += 1
        return 7

    def detach(self, app: AppInfo) -> None:
        self.attached -= 1

    def watch(self, shim: shimconn.ShimConnection, key: int) -> bool:
        self.watched.append(shim)
        return True

    def release(self, shim: shimconn.ShimConnection, idle: float) -> int:
        return self.taken


async def recv(sock: socket.socket, n: int) -> bytes:
    loop = asyncio.get_running_loop()
    return await asyncio.wait_for(loop.sock_recv(sock, n), 5)


async def served() -> tuple[Host, socket.socket, shimconn.ShimConnection]:
    host = Host()
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    shim = shimconn.ShimConnection(host, asyncio.get_running_loop(), ours, 1, 2)
    return host, theirs, shim


def test_requests_that_do_not_wait_are_answered_in_the_callback() -> None:
    async def main() -> None:
        host, sock, shim = await served()
        for _ in range(3):
            sock.send(REQUEST)
            assert await recv(sock, wire.REPLY_SIZE) == b"R" * wire.REPLY_SIZE
        assert [s[2] for s in host.seen] == [False, False, False]   # no Task
        assert not host.tasks and shim in host.shims
        sock.close()
        await asyncio.sleep(0.05)
        assert shim.closed and shim not in host.shims
    asyncio.run(main())


def test_a_request_that_waits_goes_on_in_a_task_and_the_next_waits_for_it() -> None:
    async def main() -> None:
        host, sock, shim = await served()
        host.gate = asyncio.get_running_loop().create_future()
        sock.send(REQUEST)
        await asyncio.sleep(0.05)
        assert len(host.tasks) == 1 and shim.busy in host.tasks
        sock.send(REQUEST[:5] + b"\x01" + REQUEST[6:])   # the next, not read yet
        await asyncio.sleep(0.05)
        assert host.seen == []
        host.gate.set_result(None)
        await recv(sock, wire.REPLY_SIZE)
        await recv(sock, wire.REPLY_SIZE)
        assert [s[0][5] for s in host.seen] == [0, 1] and not host.tasks
        sock.close()
    asyncio.run(main())


def test_descriptors_not_taken_are_closed() -> None:
    async def main() -> None:
        host, sock, shim = await served()
        r, w = os.pipe()
        socket.send_fds(sock, [REQUEST], [r, w])
        await recv(sock, wire.REPLY_SIZE)
        got = host.seen[0][1]
        assert len(got) == 2
        for fd in got:
            with pytest.raises(OSError):
                os.fstat(fd)
        os.close(r)
        os.close(w)
        sock.close()
    asyncio.run(main())


def test_a_malformed_request_closes_the_connection() -> None:
    async def main() -> None:
        host, sock, shim = await served()
        sock.send(REQUEST[:4] + b"\xff" + REQUEST[5:])
        await recv(sock, wire.REPLY_SIZE)
        assert await recv(sock, 1) == b""
        assert shim.closed
    asyncio.run(main())


def test_an_idle_connection_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shimconn, "SHIM_IDLE_TIMEOUT", 0.2)
    async def main() -> None:
        host, sock, shim = await served()
        sock.send(REQUEST)
        await recv(sock, wire.REPLY_SIZE)
        await asyncio.sleep(0.1)
        assert not shim.closed
        assert await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 1),
                                      5) == b""
        assert shim.closed
    asyncio.run(main())


def test_json_goes_to_the_host() -> None:
    async def main() -> None:
        host, sock, shim = await served()
        sock.send(b'{"op": "status"}\n')
        assert await recv(sock, 1) == b""
        assert host.json == [b'{"op": "status"}\n'] and shim not in host.shims
    asyncio.run(main())


def test_a_stopping_host_closes_after_the_answer() -> None:
    async def main() -> None:
        host, sock, shim = await served()
        host.gate = asyncio.get_running_loop().create_future()
        sock.send(REQUEST)
        await asyncio.sleep(0.05)
        host.closing = True                   # Control.close(): leaves busy ones
        host.gate.set_result(None)
        await recv(sock, wire.REPLY_SIZE)     # the request in flight is answered
        assert await recv(sock, 1) == b""
        assert shim.closed and not host.tasks
    asyncio.run(main())


def test_between_requests_the_lane_reads_the_connection() -> None:
    """After its first request (read by the loop: it identifies the process) the
    connection is the lane's: the loop reads nothing more until the lane gives it
    back with a request, which is answered and the connection handed back again."""
    async def main() -> None:
        host, sock, shim = await served()
        lane = host.lane = FakeLane()
        sock.send(REQUEST)
        await recv(sock, wire.REPLY_SIZE)
        assert lane.watched == [shim] and shim.watched
        sock.send(REQUEST[:5] + b"\x01" + REQUEST[6:])   # the lane's to read
        await asyncio.sleep(0.05)
        assert len(host.seen) == 1
        loop = asyncio.get_running_loop()     # the lane's records: read in a callback
        loop.call_soon(shim.given, shim.conn.recv(wire.REQUEST_SIZE), [])
        await recv(sock, wire.REPLY_SIZE)
        assert [s[0][5] for s in host.seen] == [0, 1]
        assert lane.watched == [shim, shim] and shim.watched
        assert lane.attached == 1             # since the first request
        loop.call_soon(shim.given, b"", [])   # the lane saw the connection end
        await asyncio.sleep(0.05)
        assert shim.closed and shim not in host.shims
        assert lane.attached == 0             # the process's routes may go
    asyncio.run(main())


def test_an_idle_connection_the_lane_watches_is_closed_only_when_released(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shimconn, "SHIM_IDLE_TIMEOUT", 0.1)
    async def main() -> None:
        host, sock, shim = await served()
        lane = host.lane = FakeLane(taken=0)  # the lane is using it
        sock.send(REQUEST)
        await recv(sock, wire.REPLY_SIZE)
        await asyncio.sleep(0.35)
        assert not shim.closed
        lane.taken = 1                        # idle: the lane lets go
        assert await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 1),
                                      5) == b""
        assert shim.closed and not shim.watched
    asyncio.run(main())

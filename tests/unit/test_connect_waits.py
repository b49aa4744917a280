"""The chain engine's cheap waits (issue 16's daemon CPU per connect): a reply read
within a timeout with exact reads (sockstream.recv_exactly_within), a pipelined
chain's replies waited for together (one wake-up, SO_RCVLOWAT), and hop 1's connect,
polled briefly before the loop sleeps on it (chains/connect.py)."""

from __future__ import annotations

import asyncio
import errno
import socket
import sys
import time
from typing import Awaitable, Callable, TypeVar

import pytest

from socksify import sockstream
from socksify.chains import connect as dial
from socksify.chains.hops import _ahead
from socksify.chains.steps import Message
from socksify.errors import HopUnreachable
from socksify.protocol import socks5
from socksify.sockstream import recv_exactly_within

T = TypeVar("T")
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="SO_RCVLOWAT gathering is Linux's")


def over_tcp(body: Callable[[socket.socket, socket.socket], Awaitable[T]]) -> T:
    """body(ours, theirs) on a loopback TCP connection (SO_RCVLOWAT is TCP's)."""
    async def main() -> T:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            ours = socket.create_connection(listener.getsockname())
            theirs, _ = listener.accept()
            with ours, theirs:
                ours.setblocking(False)
                return await body(ours, theirs)
    return asyncio.run(main())


def test_a_reply_is_read_exactly_and_what_follows_stays_queued() -> None:
    async def main() -> tuple[bytes, bytes]:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            ours.setblocking(False)
            theirs.sendall(b"12345678" + b"after")
            got = await recv_exactly_within(ours, 8, 2.0)
            return got, ours.recv(100)
    assert asyncio.run(main()) == (b"12345678", b"after")


def test_a_reply_in_pieces_is_waited_for() -> None:
    async def main() -> bytes:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            ours.setblocking(False)
            loop = asyncio.get_running_loop()
            theirs.sendall(b"123")
            loop.call_later(0.05, theirs.sendall, b"45678")
            return await recv_exactly_within(ours, 8, 5.0)
    assert asyncio.run(main()) == b"12345678"


def test_silence_times_out_and_eof_is_an_incomplete_read() -> None:
    async def silent() -> None:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            ours.setblocking(False)
            await recv_exactly_within(ours, 8, 0.05)

    async def closed() -> None:
        ours, theirs = socket.socketpair()
        with ours:
            ours.setblocking(False)
            theirs.sendall(b"12")
            theirs.close()
            await recv_exactly_within(ours, 8, 2.0)
    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(silent())
    with pytest.raises(asyncio.IncompleteReadError) as info:
        asyncio.run(closed())
    assert info.value.partial == b"12"


def test_a_near_hop_is_connected_by_polling_and_a_miss_sleeps_for_a_while(
        monkeypatch: pytest.MonkeyPatch) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    address = listener.getsockname()
    key = (address[0], address[1])
    monkeypatch.setattr(dial, "_spin_skip", {})

    def started() -> socket.socket:
        sock = socket.socket()
        sock.setblocking(False)
        assert sock.connect_ex(address) in (0, errno.EINPROGRESS)
        return sock
    with listener:
        monkeypatch.setattr(dial, "SPIN_SECONDS", 5.0)    # bounded: loopback answers
        with started() as sock:
            assert dial._connected_soon(sock, address)
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
            assert sock.getpeername() == address
        assert key not in dial._spin_skip

    # a listener whose accept queue is full drops further SYNs: that connect stays
    # in progress past any spin
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    slow = full.getsockname()
    slow_key = (slow[0], slow[1])
    monkeypatch.setattr(dial, "SPIN_SECONDS", 0.01)
    with full, socket.create_connection(slow), socket.socket() as waiting:
        waiting.setblocking(False)
        assert waiting.connect_ex(slow) == errno.EINPROGRESS
        assert not dial._connected_soon(waiting, slow)
        assert dial._spin_skip[slow_key] == dial.SPIN_RETRY
        assert not dial._connected_soon(waiting, slow)     # no spin: the loop sleeps
        assert dial._spin_skip[slow_key] == dial.SPIN_RETRY - 1


def test_a_refused_hop_is_reported_after_the_poll() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()                          # nothing listens there now

    async def main() -> None:
        sock = socket.socket()
        with sock:
            await dial.sock_connect(sock, "127.0.0.1", port, 5.0, "hop 1")
    with pytest.raises(HopUnreachable) as info:
        asyncio.run(main())
    assert info.value.errno == errno.ECONNREFUSED


@linux_only
def test_replies_behind_one_are_waited_for_together(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Reply 1 now, reply 2 a little later: the wait ends once both are in (one
    wake-up), only reply 1 is read, and the socket's SO_RCVLOWAT is its own again."""
    monkeypatch.setattr(sockstream, "GATHER_SECONDS", 30.0)

    async def body(ours: socket.socket, theirs: socket.socket) -> tuple[bytes, bytes]:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 3)   # the program's
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, theirs.sendall, b"reply 1!")
        loop.call_later(0.05, theirs.sendall, b"reply 2!")
        got = await recv_exactly_within(ours, 8, 60.0, more=8)
        queued = ours.recv(100, socket.MSG_PEEK)
        assert ours.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 3
        return got, queued
    assert over_tcp(body) == (b"reply 1!", b"reply 2!")


@linux_only
def test_a_reply_alone_is_looked_at_after_the_gathering_wait() -> None:
    """A hop that refuses and keeps the connection open: its reply is read after
    GATHER_SECONDS, not after the timeout."""
    async def body(ours: socket.socket, theirs: socket.socket) -> tuple[bytes, float]:
        theirs.sendall(b"refused!")
        started = time.monotonic()
        got = await recv_exactly_within(ours, 8, 60.0, more=16)
        assert ours.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 1
        return got, time.monotonic() - started
    got, took = over_tcp(body)
    assert got == b"refused!" and took < 30, took       # never the 60 s timeout


@linux_only
def test_a_close_ends_the_gathering_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reply and then EOF (a refusing hop closes): the reply at once, then the EOF."""
    monkeypatch.setattr(sockstream, "GATHER_SECONDS", 60.0)

    async def body(ours: socket.socket, theirs: socket.socket) -> tuple[bytes, float]:
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, theirs.sendall, b"refused!")
        loop.call_later(0.02, theirs.shutdown, socket.SHUT_WR)
        started = time.monotonic()
        got = await recv_exactly_within(ours, 8, 120.0, more=8)
        took = time.monotonic() - started
        with pytest.raises(asyncio.IncompleteReadError):
            await recv_exactly_within(ours, 8, 120.0)
        return got, took
    got, took = over_tcp(body)
    assert got == b"refused!" and took < 30, took


@linux_only
def test_a_socket_without_a_low_water_mark_is_waited_on_as_before(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """setsockopt(SO_RCVLOWAT) refused (an MPTCP socket on an older kernel): the
    reply is still read when it comes, not turned into an error."""
    monkeypatch.setattr(sockstream, "GATHER_SECONDS", 30.0)

    class NoLowat(socket.socket):
        def setsockopt(  # type: ignore[override]
                self, level: int, opt: int, value: object, *rest: object) -> None:
            if opt == socket.SO_RCVLOWAT:
                raise OSError(errno.EOPNOTSUPP, "no")
            super().setsockopt(level, opt, value, *rest)  # type: ignore[call-overload]

    async def body(ours: socket.socket, theirs: socket.socket) -> bytes:
        mine = NoLowat(ours.family, ours.type, fileno=ours.detach())
        with mine:
            mine.setblocking(False)
            asyncio.get_running_loop().call_later(0.01, theirs.sendall, b"reply 1!")
            return await recv_exactly_within(mine, 8, 60.0, more=8)
    assert over_tcp(body) == b"reply 1!"


def test_what_a_batch_waits_for_together() -> None:
    """CONNECT replies in a row are gathered; a greeting's reply (a refusal that
    keeps the connection open is normal there) is gathered with the CONNECT reply
    before it but ends the run: nothing behind it is waited for with it."""
    def msg(least: int, last: bool = False) -> Message:
        async def check() -> None:
            pass
        return Message(b"", check, None, least=least,  # type: ignore[arg-type]
                       last=last)
    assert _ahead([msg(8), msg(8), msg(8)]) == [16, 8, 0]
    assert _ahead([msg(8)]) == [0]
    assert _ahead([msg(0), msg(8), msg(0), msg(8), msg(8)]) == [0, 0, 0, 8, 0]
    # three SOCKS5 hops: greeting, CONNECT, each; a CONNECT reply with the next greeting's
    greet, connect = (2, True), (10, False)
    assert _ahead([msg(*greet), msg(*connect)] * 3) == [0, 2, 0, 2, 0, 0]
    # SOCKS4 to SOCKS5: the SOCKS4 reply with the greeting's, not the CONNECT's behind it
    assert _ahead([msg(8), msg(*greet), msg(*connect)]) == [2, 0, 0]
    # SOCKS5 to SOCKS4: the SOCKS5 CONNECT reply with the SOCKS4 one
    assert _ahead([msg(*greet), msg(*connect), msg(8)]) == [0, 8, 0]


@linux_only
def test_a_socks5_reply_read_head_first_is_waited_for_whole_with_those_behind(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A SOCKS5 CONNECT reply (10 bytes, read as a 5-byte head and the rest) with a
    greeting reply (2 bytes) behind it: the head's wait lasts until all 12 are in,
    not until the reply alone (which is more than head + greeting) is."""
    monkeypatch.setattr(sockstream, "GATHER_SECONDS", 30.0)
    reply = b"\x05\x00\x00\x01\x0a\x00\x00\x01\x04\x38"

    async def body(ours: socket.socket, theirs: socket.socket) -> tuple[bytes, bytes]:
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, theirs.sendall, reply)
        loop.call_later(0.2, theirs.sendall, b"\x05\x00")
        stream = sockstream.RawStream(ours, owned=False)
        stream.ahead = 2
        head = await stream.read_within(5, 60.0, rest=5)
        return head, ours.recv(100, socket.MSG_PEEK)
    assert over_tcp(body) == (reply[:5], reply[5:] + b"\x05\x00")


@linux_only
def test_a_socks5_reply_shorter_than_usual_is_still_read_exactly(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A 7-byte reply (an empty name as its bound address) and a greeting reply: 9
    bytes, short of the 12 the head's wait counts on. Looked at once that wait runs
    out (GATHER_SECONDS), and read exactly: nothing lost, nothing read ahead."""
    monkeypatch.setattr(sockstream, "GATHER_SECONDS", 0.05)
    reply = b"\x05\x00\x00\x03\x00\x01\xbb"

    async def body(ours: socket.socket, theirs: socket.socket) -> tuple[bytes, bytes]:
        theirs.sendall(reply + b"\x05\x00")
        stream = sockstream.RawStream(ours, owned=False)
        stream.ahead = 2
        head = await stream.read_within(5, 60.0, rest=5)
        rest = await stream.read_within(socks5.Reply.rest_size(head), 60.0)
        return head + rest, ours.recv(100)
    assert over_tcp(body) == (reply, b"\x05\x00")

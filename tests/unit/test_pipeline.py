"""Pipelined negotiation without a lab: the engine (chains/hops.negotiate) against a
scripted peer on a socketpair -- what is written before any reply, what is read, and
which hop a failure is put on -- and the early-data memory."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from socksify.chains.earlydata import EarlyData
from socksify.chains.hops import EarlyDataSuspect, negotiate
from socksify.chains.spec import ChainSpec
from socksify.errors import HopRefused
from socksify.proxies import Proxy
from socksify.sockstream import RawStream

HOPS = (Proxy.parse("socks4://10.0.0.1:1081"), Proxy.parse("socks4://10.0.0.2:1082"),
        Proxy.parse("socks5://10.0.0.3:1083"))
GRANT4 = bytes([0, 90, 0, 0, 0, 0, 0, 0])
GRANT5 = b"\x05\x00\x00\x01" + bytes(6)


def req4(host: str, port: int) -> bytes:
    return struct.pack("!BBH", 4, 1, port) + socket.inet_aton(host) + b"\0"


WANT = (req4("10.0.0.2", 1082) + req4("10.0.0.3", 1083) + b"\x05\x01\x00"
        + b"\x05\x01\x00\x01" + socket.inet_aton("192.0.2.7") + struct.pack("!H", 80))


def run(replies: bytes, pipelined: bool, early: EarlyData,
        close: bool = False) -> tuple[bytes, BaseException | None]:
    """Negotiate HOPS to 192.0.2.7:80 on one end of a socketpair; the other end
    answers `replies` once everything it expects (pipelined) or the first request
    (step by step) is in. Returns what was written before the first reply, and the
    error."""
    async def main() -> tuple[bytes, BaseException | None]:
        ours, theirs = socket.socketpair()
        theirs.setblocking(False)
        loop = asyncio.get_running_loop()
        spec = ChainSpec("c", HOPS, read_timeout=2.0, pipeline=pipelined)

        async def peer() -> bytes:
            got = b""
            want = len(WANT) if pipelined else len(req4("10.0.0.2", 1082))
            while len(got) < want:
                got += await loop.sock_recv(theirs, 4096)
            await loop.sock_sendall(theirs, replies)
            if close:
                theirs.close()
            return got
        task = asyncio.ensure_future(peer())
        err: BaseException | None = None
        try:
            await negotiate(RawStream(ours, owned=True), HOPS, 0, 3, "192.0.2.7", 80,
                            spec, "t", early=early)
        except Exception as exc:      # noqa: BLE001 -- the test looks at it
            err = exc
        if not pipelined:
            task.cancel()
            return b"", err
        first = await task
        ours.close()
        return first, err
    return asyncio.run(main())


def test_every_request_at_once_then_replies_in_order() -> None:
    early = EarlyData()
    first, err = run(GRANT4 + GRANT4 + b"\x05\x00" + GRANT5, True, early)
    assert err is None and first == WANT
    assert all(early.good(h) for h in HOPS)      # each had bytes behind its request


def test_refusal_is_put_on_the_hop_behind_the_refusing_one() -> None:
    """Hop 2 refuses (SOCKS4 91): blamed on hop 3 (index 2), a plain refusal, not a
    suspect of early data."""
    first, err = run(GRANT4 + bytes([0, 91]) + bytes(6), True, EarlyData())
    assert isinstance(err, HopRefused) and not isinstance(err, EarlyDataSuspect)
    assert err.hop == 2 and "hop 2 socks4://10.0.0.2:1082" in str(err)


def test_close_without_reply_is_suspect_unless_the_hops_coped_before() -> None:
    early = EarlyData()
    _, err = run(GRANT4, True, early, close=True)
    assert isinstance(err, EarlyDataSuspect) and err.hop == 2
    assert err.suspects == [HOPS[0], HOPS[1]]     # nearest the failure last
    early.mark_good(HOPS[0])
    early.mark_good(HOPS[1])
    _, err = run(GRANT4, True, early, close=True)
    assert isinstance(err, HopRefused) and not isinstance(err, EarlyDataSuspect)


def test_stepwise_hop_gets_nothing_behind_its_request() -> None:
    """Hop 1 remembered as stepwise: its request goes alone."""
    early = EarlyData()
    early.mark_stepwise(HOPS[0])

    async def main() -> bytes:
        ours, theirs = socket.socketpair()
        theirs.setblocking(False)
        loop = asyncio.get_running_loop()
        spec = ChainSpec("c", HOPS, read_timeout=0.5, pipeline=True)
        task = asyncio.ensure_future(negotiate(RawStream(ours, owned=True), HOPS, 0, 3,
                                               "192.0.2.7", 80, spec, "t", early=early))
        await asyncio.sleep(0.2)
        got = await loop.sock_recv(theirs, 4096)
        task.cancel()
        with pytest.raises((asyncio.CancelledError, Exception)):
            await task
        return got
    assert asyncio.run(main()) == req4("10.0.0.2", 1082)


def test_memory() -> None:
    early = EarlyData()
    hop = HOPS[2]
    assert not early.good(hop) and not early.stepwise(hop) and not early.userpass(hop)
    early.mark_stepwise(hop)
    early.mark_good(hop)                 # never undoes stepwise
    assert early.stepwise(hop) and early.snapshot() == {"10.0.0.3:1083": "stepwise"}
    early.set_userpass(hop, True)
    assert early.userpass(hop)
    early.set_userpass(hop, False)
    assert not early.userpass(hop)

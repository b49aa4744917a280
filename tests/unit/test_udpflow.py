"""The one UDP flow (core/udpflow.py) the carrier, the datagram handoff, the isolation
path and the front door share: the association opened once for concurrent first
datagrams and callers, their order kept; a refused opening or a lost association
reported once to the way back; counts and fragments on the record. The association
opener is stubbed (its wire is tests/unit/test_udp_engine.py's)."""

from __future__ import annotations

import asyncio
import errno
from typing import Any

import pytest

from socksify.chains import ChainSpec
from socksify.chains.udp import UdpCounters
from socksify.core import udpflow
from socksify.core.records import UdpFlow
from socksify.core.udpflow import ChainFlow
from socksify.errors import HopRefused, SocksifyError, Unsupported
from socksify.procinfo import uid_only
from socksify.proxies import Proxy

CHAIN = ChainSpec("u", (Proxy.parse("socks5://127.0.0.1:1080"),))


class FakeAssoc:
    def __init__(self) -> None:
        self.sent: list[tuple[str, int, bytes]] = []
        self.counters = UdpCounters()
        self.closed = False
        self.describe = "socks5://127.0.0.1:1080"
        self.setup_seconds = 0.0
        self.deliver: Any = None
        self.lost: Any = None
        self.started = False

    async def start(self, deliver: Any, lost: Any) -> None:
        await asyncio.sleep(0)                 # the real one awaits the loop too
        self.deliver, self.lost, self.started = deliver, lost, True

    def send(self, host: str, port: int, payload: bytes) -> bool:
        assert self.started, "sent before the association was started"
        self.sent.append((host, port, payload))
        return not self.closed

    def close(self) -> None:
        self.closed = True


class Opener:
    """Stands for open_association: counts calls, opens when released (or fails)."""

    def __init__(self, fail: SocksifyError | None = None) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.fail = fail
        self.assoc = FakeAssoc()

    async def __call__(self, route: Any, spec: Any, conn: str,
                       client_port: int | None = None) -> FakeAssoc:
        self.calls += 1
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return self.assoc


class Selector:
    def next_route(self, tried: Any) -> tuple[Proxy, ...]:
        return CHAIN.hops


def make(monkeypatch: pytest.MonkeyPatch, opener: Opener
         ) -> tuple[ChainFlow, UdpFlow, list[tuple[str, int, bytes]],
                    list[tuple[int, str]]]:
    monkeypatch.setattr(udpflow, "open_association", opener)
    record = UdpFlow("c1", uid_only(0, "t"), None, 0, 0.0)
    replies: list[tuple[str, int, bytes]] = []
    lost: list[tuple[int, str]] = []
    flow = ChainFlow(record, CHAIN, lambda r, c: Selector(),  # type: ignore[arg-type,return-value]
                     lambda h, p, b: replies.append((h, p, b)),
                     lambda e, w: lost.append((e, w)))
    return flow, record, replies, lost


def test_first_datagrams_and_callers_wait_for_one_opening(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        opener = Opener()
        flow, record, replies, lost = make(monkeypatch, opener)
        flow.send("10.0.0.1", 7, b"a")
        flow.send("far.example", 9, b"b")
        waiting = [asyncio.ensure_future(flow.open()) for _ in range(3)]
        await asyncio.sleep(0.01)
        assert opener.calls == 1 and not opener.assoc.sent
        opener.release.set()
        got = await asyncio.gather(*waiting)
        assert all(a is opener.assoc for a in got) and opener.calls == 1
        flow.send("10.0.0.1", 7, b"c")
        assert opener.assoc.sent == [("10.0.0.1", 7, b"a"), ("far.example", 9, b"b"),
                                     ("10.0.0.1", 7, b"c")]
        assert (record.datagrams_up, record.counters.up) == (3, 3)
        assert record.chain == "u" and record.route == opener.assoc.describe
        opener.assoc.deliver("10.0.0.1", 7, b"back")
        assert replies == [("10.0.0.1", 7, b"back")] and not lost
        opener.assoc.counters.fragments, opener.assoc.counters.bad = 2, 1
        flow.close()
        assert opener.assoc.closed and record.dropped == 3
        flow.send("10.0.0.1", 7, b"late")
        assert record.dropped == 4 and len(opener.assoc.sent) == 3
    asyncio.run(asyncio.wait_for(main(), 10))


def test_a_refused_opening_is_lost_once_and_raises_for_callers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        opener = Opener(HopRefused("hop 1 refused UDP ASSOCIATE", errno.ECONNREFUSED))
        flow, record, replies, lost = make(monkeypatch, opener)
        flow.send("10.0.0.1", 7, b"a")
        flow.send("10.0.0.1", 7, b"b")
        caller = asyncio.ensure_future(flow.open())
        opener.release.set()
        with pytest.raises(SocksifyError):
            await caller
        await asyncio.sleep(0)
        assert len(lost) == 1 and lost[0][0] == errno.ECONNREFUSED, lost
        assert "refused" in lost[0][1] and flow.closed and not flow.queue
        assert opener.calls == 1 and record.datagrams_up == 0
        with pytest.raises(Unsupported):
            await flow.open()
    asyncio.run(asyncio.wait_for(main(), 10))


def test_a_lost_association_is_reported_once_and_closes_the_flow(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        opener = Opener()
        opener.release.set()
        flow, record, replies, lost = make(monkeypatch, opener)
        await flow.open()
        opener.assoc.lost("hop 2 closed the control connection")
        opener.assoc.lost("again")                      # the flow is closed: ignored
        assert lost == [(errno.ECONNRESET, "hop 2 closed the control connection")]
        assert flow.closed and opener.assoc.closed
    asyncio.run(asyncio.wait_for(main(), 10))


def test_idle_is_silence_both_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    flow, _, _, _ = make(monkeypatch, Opener())
    assert not flow.idle(flow.last + 5, 10) and flow.idle(flow.last + 11, 10)

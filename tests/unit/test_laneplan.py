"""The lane's plans (chains/laneplan.py) and the Python side's reading of its records
(listeners/lane.py): which chains the lane may build, with which bytes, and how a
refusal is worded and blamed."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import socket
import sys
from types import SimpleNamespace
from typing import Any, cast

from socksify.chains.earlydata import EarlyData
from socksify.chains.laneplan import (REPLY_SOCKS4, REPLY_SOCKS5, REPLY_SOCKS5_METHOD,
                                      plan, tunnel_plan)
from socksify.chains.spec import ChainSpec, Strategy
from socksify.lanelib import sockaddr_of
from socksify.core.records import Connection
from socksify.listeners.lane import Lane, _endpoint, describe_failure
from socksify.procinfo import AppInfo
from socksify.protocol import control as wire
from socksify.proxies import Proxy

H1 = Proxy.parse("socks4://10.0.0.1:1080")
H2 = Proxy.parse("socks5://10.0.0.2:1080")
H3 = Proxy.parse("socks4://10.0.0.3:1080")


def spec(*hops: Proxy, **kw: Any) -> ChainSpec:
    return ChainSpec("c", hops, **kw)


def test_a_chain_of_socks_hops_is_one_write_and_its_replies_in_order() -> None:
    made = plan(spec(H1, H2, H3), (H1, H2, H3), "192.0.2.7", 443, EarlyData())
    assert made is not None
    assert made.requests == (
        b"\x04\x01\x04\x38" + bytes([10, 0, 0, 2]) + b"\x00"          # hop 1: hop 2
        + b"\x05\x01\x00"                                              # hop 2: greeting
        + b"\x05\x01\x00\x01" + bytes([10, 0, 0, 3]) + b"\x04\x38"     # hop 2: hop 3
        + b"\x04\x01\x01\xbb" + bytes([192, 0, 2, 7]) + b"\x00")       # hop 3: target
    assert made.replies == bytes([REPLY_SOCKS4, REPLY_SOCKS5_METHOD, REPLY_SOCKS5,
                                  REPLY_SOCKS4])
    assert made.timeout == 5.0 + 10.0 * 3


def test_the_lane_gets_no_chain_the_engine_would_build_differently() -> None:
    early = EarlyData()
    target = ("192.0.2.7", 443)
    none = [
        (spec(H1, H3, strategy=Strategy.DYNAMIC), (H1, H3)),      # hops may be skipped
        (spec(H1, H3), (H3,)),                                    # not the whole chain
        (spec(H1, H3, pipeline=False), (H1, H3)),                 # step by step
        (spec(H1, H3, prebuilt=2), (H1, H3)),                     # the pool's
        (spec(Proxy.parse("socks5://u:p@10.0.0.2:1080")),
         (Proxy.parse("socks5://u:p@10.0.0.2:1080"),)),            # credentials
        (spec(Proxy.parse("http://10.0.0.4:3128")),
         (Proxy.parse("http://10.0.0.4:3128"),)),                  # HTTP CONNECT
        (spec(H1, isolate="process"), (H1,)),                      # stream isolation
        (spec(H1, data_path="relay"), (H1,)),
    ]
    for chain, route in none:
        assert plan(chain, route, *target, early) is None, chain
    assert plan(spec(H1), (H1,), "2001:db8::1", 443, early) is None   # SOCKS4: no IPv6
    early.mark_stepwise(H3)
    assert plan(spec(H1, H3), (H1, H3), *target, early) is None
    assert plan(spec(H1), (H1,), *target, early) is not None


def test_a_pool_route_is_the_last_hops_request_alone() -> None:
    """A chain with pre-built tunnels: the pool's tunnel reaches hop 3, so the lane
    writes hop 3's request and reads its reply, within one hop's time; a chain
    without a pool gets no such plan, nor a pool chain a whole one."""
    made = plan(spec(H1, H2, H3, prebuilt=4), (H1, H2, H3), "192.0.2.7", 443,
                EarlyData(), prebuilt=True)
    assert made is not None
    assert made.requests == b"\x04\x01\x01\xbb" + bytes([192, 0, 2, 7]) + b"\x00"
    assert made.replies == bytes([REPLY_SOCKS4])
    assert made.timeout == 5.0 + 10.0
    made = plan(spec(H1, H2, prebuilt=4), (H1, H2), "192.0.2.7", 443, EarlyData(),
                prebuilt=True)
    assert made is not None and made.replies == bytes([REPLY_SOCKS5_METHOD, REPLY_SOCKS5])
    assert plan(spec(H1, H3), (H1, H3), "192.0.2.7", 443, EarlyData(),
                prebuilt=True) is None
    early = EarlyData()
    early.mark_stepwise(H3)
    assert plan(spec(H1, H3, prebuilt=4), (H1, H3), "192.0.2.7", 443, early,
                prebuilt=True) is None


def test_a_pools_tunnel_is_every_request_but_the_last() -> None:
    """The lane builds a pool's tunnels as the engine does (open_chain up to the last
    hop): hop 1 asked for hop 2, hop 2 for hop 3, within a hop's time each."""
    made = tunnel_plan(spec(H1, H2, H3, prebuilt=4), EarlyData())
    assert made is not None
    assert made.requests == (
        b"\x04\x01\x04\x38" + bytes([10, 0, 0, 2]) + b"\x00"
        + b"\x05\x01\x00" + b"\x05\x01\x00\x01" + bytes([10, 0, 0, 3]) + b"\x04\x38")
    assert made.replies == bytes([REPLY_SOCKS4, REPLY_SOCKS5_METHOD, REPLY_SOCKS5])
    assert made.timeout == 5.0 + 10.0 * 2
    one = tunnel_plan(spec(H1, prebuilt=4), EarlyData())        # a TCP connect alone
    assert one is not None and (one.requests, one.replies) == (b"", b"")
    assert tunnel_plan(spec(H1, H3), EarlyData()) is None        # no pool
    assert tunnel_plan(spec(H1, H3, prebuilt=4, pipeline=False), EarlyData()) is None


def test_hop_1s_address_goes_to_the_lane_as_a_sockaddr_and_comes_back() -> None:
    for host, port, family, plain in [
            ("10.0.0.1", 1080, socket.AF_INET, ("10.0.0.1", 1080)),
            ("2001:db8::5", 1080, socket.AF_INET6, ("2001:db8::5", 1080)),
            ("::ffff:10.0.0.1", 1080, socket.AF_INET6, ("10.0.0.1", 1080))]:
        raw = sockaddr_of(host, port)
        assert len(raw) == (16 if family == socket.AF_INET else 28)
        assert int.from_bytes(raw[:2], sys.byteorder) == family
        assert _endpoint(raw) == plain


def done(**kw: Any) -> Any:
    fields = {"code": 0, "failed": 0, "got": 0, "reply": b"\x00\x00", "err": 0}
    fields.update(kw)
    return SimpleNamespace(**fields)


def test_a_refusal_is_worded_and_blamed_as_the_engine_does() -> None:
    route = (H1, H2, H3)          # replies: 0 hop 1, 1 hop 2's greeting, 2 hop 2, 3 hop 3
    err, why, blame = describe_failure(done(code=wire.Code.CONNREFUSED, failed=255,
                                            err=errno.ECONNREFUSED), route)
    assert (err, blame) == (errno.ECONNREFUSED, 0) and "hop 1" in why
    # hop 1 refused to reach hop 2: hop 2 is blamed
    err, why, blame = describe_failure(done(code=wire.Code.CONNREFUSED, failed=0,
                                            got=2, reply=b"\x00\x5b"), route)
    assert blame == 1 and "hop 1" in why and "hop 2 10.0.0.2:1080" in why, why
    assert "005b" in why
    # hop 2 refused our greeting: hop 2 itself
    err, why, blame = describe_failure(done(code=wire.Code.CONNREFUSED, failed=1,
                                            got=2, reply=b"\x05\xff"), route)
    assert blame == 1 and "authentication" in why
    # hop 2 said "host unreachable" for hop 3
    err, why, blame = describe_failure(done(code=wire.Code.HOSTUNREACH, failed=2,
                                            got=2, reply=b"\x05\x04"), route)
    assert (err, blame) == (errno.EHOSTUNREACH, 2)
    # the last hop refused the target: no hop is blamed
    err, why, blame = describe_failure(done(code=wire.Code.CONNREFUSED, failed=3,
                                            got=2, reply=b"\x00\x5b"), route)
    assert blame is None and "the target" in why
    # garbage from hop 3: hop 3 itself
    err, why, blame = describe_failure(done(code=wire.Code.CONNREFUSED, failed=3,
                                            got=2, reply=b"\x05\x5a",
                                            err=errno.EPROTO), route)
    assert blame == 2
    err, why, blame = describe_failure(done(code=wire.Code.TIMEDOUT, failed=3), route)
    assert err == errno.ETIMEDOUT and "no reply in time" in why and blame is None


class FakeLib:
    """lanelib.LaneLib's calls, recorded (the Lane's bookkeeping without the thread)."""

    def __init__(self) -> None:
        self.added: list[Any] = []
        self.forgotten: list[int] = []

    def start(self) -> int:
        return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def add(self, route: Any) -> None:
        self.added.append(route)

    def forget(self, proc: int) -> None:
        self.forgotten.append(proc)

    def done(self, limit: int) -> list[Any]:
        out, self.queued = self.queued[:limit], self.queued[limit:]
        return out

    queued: list[Any] = []


class FakeRouter:
    """The router as the lane's records reach it."""

    def __init__(self) -> None:
        self.outcomes: list[tuple[Connection, Any, Any]] = []

    def new_connection(self, app: AppInfo, addr: Any, port: int) -> Connection:
        return Connection("c9", app, addr, port, 0.0)

    def lane_outcome(self, conn: Connection, route: Any, seconds: float, kernel: Any,
                     refused: Any, prebuilt: bool = False) -> None:
        self.outcomes.append((conn, kernel, refused))


def test_a_process_routes_live_as_long_as_its_control_connections() -> None:
    """A route is left for the process that made the connect, under the number its
    connections are watched with; the last of its connections to close takes its
    routes along (a program that connects once leaves nothing in the lane)."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        lib = FakeLib()
        router = FakeRouter()
        lane = Lane(cast(Any, lib), loop, router)
        app = AppInfo(42, "curl", "/usr/bin/curl", 1000, "u", ())
        key = lane.attach(app)
        assert lane.attach(app) == key              # a second connection, one number
        conn = Connection("c1", app, ipaddress.ip_address("192.0.2.7"), 443, 0.0)
        conn.rule, conn.chain = "default", "c"
        # the program's socket, connected to hop 1: only its peer address is asked
        lane.offer(conn, b"S" * 8, spec(H1), (H1,),
                   cast(socket.socket, _Peer(("10.0.0.1", 1080))))
        [route] = lib.added
        assert (route.proc, route.family, route.port, route.session) == \
            (key, 4, 443, b"S" * 8)
        assert route.addr == bytes([192, 0, 2, 7]) and route.replies == (REPLY_SOCKS4,)
        assert _endpoint(route.hop1) == ("10.0.0.1", 1080)
        lane.detach(app)
        assert lib.forgotten == []                  # one connection still open
        # its last connect, answered by the lane just before the program exited: its
        # record is reported before the route it names goes
        lib.queued = [SimpleNamespace(
            proc=key, route=route.route, family=4, addr=route.addr.ljust(16, b"\0"),
            port=443, code=0, started_ns=1_000_000, answered_ns=3_000_000,
            local=sockaddr_of("10.77.1.5", 40000), peer=route.hop1, cookie=7,
            bytes_acked=10, bytes_received=8)]
        lane.detach(app)
        assert lib.forgotten == [key]
        [(conn, kernel, refused)] = router.outcomes
        assert refused is None and conn.chain == "c" and conn.port == 443
        assert kernel == (("10.77.1.5", 40000, "10.0.0.1", 1080), socket.AF_INET, 7,
                          (10, 8))
        assert lane.attach(app) != key              # a new number from now on
        loop.remove_reader(lane.notify)
        os.close(lane.notify)
    asyncio.run(main())


class _Peer:
    """A socket whose getpeername() says what the test wants (hop 1's address)."""

    def __init__(self, peer: tuple[str, int]) -> None:
        self.peer = peer

    def getpeername(self) -> tuple[str, int]:
        return self.peer

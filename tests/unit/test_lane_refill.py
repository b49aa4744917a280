"""A pool that the lane refills by itself (lane_pool_refill): what a take leaves
missing is built in C, by chains/pool.py's rules, with no Python per take. The hop
is a thread on 127.0.0.1 that grants every SOCKS4 request on every connection, or
refuses them all; every wait is bounded by WAIT."""

from __future__ import annotations

import errno
import socket
import threading
import time
from typing import Any, Callable, Iterator, cast

import pytest

from socksify import lanelib
from socksify.lanelib import Done, LaneLib, Route
from socksify.protocol import control as wire
from test_lane import (POOL, PROC, ROUTE_ID, SOCKS4_GRANTED, WAIT, Lane, handoff_header,
                       lane, lib, recv_exactly, socks4_request)

__all__ = ["lane", "lib"]          # the fixtures, shared with test_lane.py

REFILL_ID = ROUTE_ID + 1
SOCKS4_REFUSED = b"\x00\x5b" + bytes(6)
REQUEST = socks4_request("10.9.9.9", 1080)      # hop 1 asked for the last hop


class GrantingHop:
    """Accepts every connection and answers each 9-byte SOCKS4 request on it with
    `reply`, for as long as the connection stays open; counts the connections."""

    def __init__(self, reply: bytes = SOCKS4_GRANTED) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.listener.settimeout(0.05)
        self.port: int = self.listener.getsockname()[1]
        self.reply = reply
        self.requests: list[bytes] = []
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    @property
    def accepted(self) -> int:
        with self.lock:
            return len(self.conns)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(WAIT)
            with self.lock:
                self.conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            while not self._stop.is_set():
                request = recv_exactly(conn, len(REQUEST))
                if len(request) < len(REQUEST):
                    return
                with self.lock:
                    self.requests.append(request)
                conn.sendall(self.reply)
        except OSError:
            return

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        with self.lock:
            for conn in self.conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)   # wakes its thread's recv
                except OSError:
                    pass
                conn.close()
        for t in self._threads:
            t.join(WAIT)


@pytest.fixture
def hop() -> Iterator[GrantingHop]:
    h = GrantingHop()
    try:
        yield h
    finally:
        h.close()


def build_route(hop: GrantingHop) -> Route:
    return Route(proc=0, family=4, addr=bytes(16), port=0,
                 hop1=lanelib.sockaddr_of("127.0.0.1", hop.port), timeout_ms=3000,
                 requests=REQUEST, replies=(lanelib.REPLY_SOCKS4,), route=REFILL_ID)


def state(lib: LaneLib) -> lanelib.PoolState:
    s = lib.pool_state(POOL)
    assert s is not None
    return s


def until(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, f"not within {WAIT}s: {what}"
        time.sleep(0.005)


def take_by_a_program(lane: Lane, shim: socket.socket) -> None:
    """A program's connect, finished by the lane on one of the pool's tunnels."""
    sock = lane.program()
    socket.send_fds(shim, [handoff_header()], [sock.fileno()])
    data, fds, _, _ = socket.recv_fds(shim, wire.REPLY_SIZE, 2)
    assert wire.Reply.loads(data).verdict is wire.Verdict.SWAP
    for fd in fds:
        socket.socket(fileno=fd).close()


def builds(done: list[Done]) -> list[Done]:
    return [d for d in done if d.proc == 0]


def test_a_pool_fills_itself_and_replaces_what_programs_take(lane: Lane,
                                                             hop: GrantingHop) -> None:
    """target 3, low 1: the pool fills at once. A take that leaves it above its low
    mark waits for a pause (quiet: longer than any wait here, so nothing is built);
    the take that brings it to its low mark builds every missing tunnel at once."""
    lane.lib.pool_refill(POOL, build_route(hop), 3, 1, int(WAIT * 2000),
                         int(WAIT * 4e9))
    first = lane.done(3)
    assert [(d.proc, d.route, d.code, d.fd) for d in first] == [(0, REFILL_ID, 0, -1)] * 3
    s = state(lane.lib)
    assert (s.ready, s.building, s.target, s.low) == (3, 0, 3, 1)
    assert hop.requests == [REQUEST] * 3

    lane.add(None, socks4_request("203.0.113.5", 443), [lanelib.REPLY_SOCKS4], pool=POOL)
    shim, _ = lane.control()
    take_by_a_program(lane, shim)
    [connect] = lane.done()                   # announced with the connects
    assert (connect.proc, connect.code) == (PROC, 0)
    s = state(lane.lib)
    assert (s.ready, s.building, s.taken) == (2, 0, 1)   # waiting for a pause
    take_by_a_program(lane, shim)             # 1 left: at its low mark
    done = lane.done(3)                       # the connect and two builds
    assert len(builds(done)) == 2 and all(d.code == 0 for d in done)
    s = state(lane.lib)
    assert (s.ready, s.building, s.taken, s.discarded) == (3, 0, 2, 0)
    assert hop.accepted == 5


def test_a_take_above_the_low_mark_is_replaced_after_the_quiet_time(
        lane: Lane, hop: GrantingHop) -> None:
    quiet = 0.3
    lane.lib.pool_refill(POOL, build_route(hop), 2, 0, int(quiet * 1000),
                         int(WAIT * 4e9))
    lane.done(2)
    lane.add(None, socks4_request("203.0.113.5", 443), [lanelib.REPLY_SOCKS4], pool=POOL)
    shim, _ = lane.control()
    take_by_a_program(lane, shim)
    taken = time.monotonic()
    until("the replacement", lambda: state(lane.lib).ready == 2)
    assert time.monotonic() - taken >= quiet   # never beside the connection
    assert len(builds(lane.done(2))) == 1
    assert hop.accepted == 3


def test_a_refill_that_fails_stops_and_is_told_at_once(lane: Lane) -> None:
    """Builds the hop refuses are reported at once, as a connect's refusal would be,
    and the pool refills no more by itself; called again, it tries again."""
    refusing = GrantingHop(SOCKS4_REFUSED)
    try:
        lane.lib.pool_refill(POOL, build_route(refusing), 2, 1, 0, int(WAIT * 4e9))
        failed = lane.done(2)
        assert [(d.proc, d.route, d.code, d.failed, d.reply) for d in failed] == \
            [(0, REFILL_ID, wire.Code.CONNREFUSED, 0, b"\x00\x5b")] * 2
        s = state(lane.lib)
        assert (s.ready, s.building, s.target) == (0, 0, 0)
        lane.lib.pool_refill(POOL, build_route(refusing), 1, 0, 0, int(WAIT * 4e9))
        [again] = lane.done()
        assert again.code == wire.Code.CONNREFUSED and refusing.accepted == 3
    finally:
        refusing.close()


def test_target_0_stops_the_refill(lane: Lane, hop: GrantingHop) -> None:
    lane.lib.pool_refill(POOL, build_route(hop), 2, 0, 0, int(WAIT * 4e9))
    lane.done(2)
    lane.lib.pool_refill(POOL, None, 0, 0, 0, 0)
    assert state(lane.lib).target == 0
    lane.add(None, socks4_request("203.0.113.5", 443), [lanelib.REPLY_SOCKS4], pool=POOL)
    shim, _ = lane.control()
    take_by_a_program(lane, shim)
    [connect] = lane.done()
    assert connect.proc == PROC
    time.sleep(0.2)                  # a refill would have connected by now
    s = state(lane.lib)
    assert (s.ready, s.building, s.taken) == (1, 0, 1) and hop.accepted == 2


def test_bad_refills_are_refused(lib: LaneLib, hop: GrantingHop) -> None:
    route = build_route(hop)
    for pool, bad, target, age in ((0, route, 1, 1), (POOL, None, 1, 1),
                                   (POOL, Route(**{**route.__dict__, "hop1": b""}), 1, 1),
                                   (POOL, route, 1, 0)):
        with pytest.raises(OSError) as info:
            lib.pool_refill(pool, bad, target, 0, 0, age)
        assert info.value.errno == errno.EINVAL
    lib.pool_refill(POOL + 5, None, 0, 0, 0, 0)      # nothing to stop: fine
    assert lib.pool_state(POOL + 5) is None
    lib.stop()
    with pytest.raises(OSError) as info:
        lib.pool_refill(POOL, route, 1, 0, 0, 1)
    assert info.value.errno == errno.ESRCH


def test_the_daemons_pool_lets_the_lane_refill_it(lib: LaneLib,
                                                  hop: GrantingHop) -> None:
    """chains/pool.py over listeners/lane.py over the C lane: the pool's first use
    has the lane fill it (no build of the pool's own), a take is replaced by the
    lane, and each build the lane made is counted and marks the hops up; closed,
    the pool leaves nothing in the lane."""
    import asyncio

    from socksify.chains.health import HopHealth
    from socksify.chains.pool import TunnelPool
    from socksify.chains.spec import ChainSpec
    from socksify.listeners.lane import Lane as DaemonLane
    from socksify.proxies import Proxy

    class NoOwnBuilds(TunnelPool):
        async def _build(self) -> None:
            raise AssertionError("the pool built a tunnel itself")

    async def wait_for(what: str, check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + WAIT
        while not check():
            assert time.monotonic() < deadline, f"not within {WAIT}s: {what}"
            await asyncio.sleep(0.01)

    async def main() -> tuple[dict[str, int], int, int]:
        lane = DaemonLane(lib, asyncio.get_running_loop(), cast(Any, None))
        spec = ChainSpec("t", (Proxy.parse(f"socks4://127.0.0.1:{hop.port}"),
                               Proxy.parse("socks4://10.9.9.9:1080")), prebuilt=3)
        health = HopHealth()
        pool = NoOwnBuilds(spec, health, lane.tunnels)
        try:
            assert pool.take() is None            # the first use starts the pool
            await wait_for("the fill", lambda: pool.built == 3)
            ready = pool.take()                   # the daemon's own take
            assert ready is not None
            ready.stream.close()
            pool.refill()                         # as chains/route.py does after it
            await wait_for("the replacement", lambda: pool.built == 4)
            await wait_for("in the pool", lambda: len(pool.store) == 3)
            return pool.describe(), lane.tunnels_built, hop.accepted
        finally:
            pool.close()
            assert lib.pool_state(1) is None
            lane.stop()

    described, built, accepted = asyncio.run(main())
    assert described == {"ready": 3, "size": 3, "built": 4, "used": 1, "discarded": 0}
    assert (built, accepted) == (4, 4)
    assert hop.requests == [socks4_request("10.9.9.9", 1080)] * 4

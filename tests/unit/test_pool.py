"""The pre-built tunnel pool's refill rule (chains/pool.py): tunnels taken from a pool
still more than half full are replaced only after a pause without takes; once half
or more are gone, at once. The builds are stand-ins here (a socket pair end: nothing
to read, so the pool thinks the tunnel usable); no network, no timed assertion."""

from __future__ import annotations

import asyncio
import socket
import time

from socksify.chains import pool as poolmod
from socksify.chains.health import HopHealth
from socksify.errors import ChainError
from socksify.chains.spec import ChainSpec
from socksify.proxies import Proxy
from socksify.sockstream import RawStream

WAIT = 10.0     # bound for what must happen (seconds); never a timing assertion


class CountingPool(poolmod.TunnelPool):
    """A pool whose builds make socket pairs instead of SOCKS chains."""

    def __init__(self, size: int, quiet: float,
                 store: poolmod.StoreFactory = poolmod.Tunnels) -> None:
        spec = ChainSpec("t", (Proxy.parse("socks4://10.0.0.1:1080"),
                               Proxy.parse("socks4://10.0.0.2:1080")), prebuilt=size)
        super().__init__(spec, HopHealth(), store)
        self.quiet = quiet
        self.builds = 0
        self.peers: list[socket.socket] = []

    async def _build(self) -> poolmod.Prebuilt:
        self.builds += 1
        ours, theirs = socket.socketpair()
        self.peers.append(theirs)
        return poolmod.Prebuilt(RawStream(ours, owned=True), self.route,
                                time.monotonic())

    def close(self) -> None:
        super().close()
        for peer in self.peers:
            peer.close()


async def until(what: str, check: object) -> None:
    deadline = time.monotonic() + WAIT
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {WAIT}s: {what}")
        await asyncio.sleep(0.005)


async def settle() -> None:
    """Let every ready callback and task step run (no time passes for them)."""
    for _ in range(20):
        await asyncio.sleep(0)


def take_and_refill(pool: CountingPool) -> None:
    ready = pool.take()
    assert ready is not None
    ready.stream.close()
    pool.refill()


def test_a_pool_more_than_half_full_waits_for_a_pause() -> None:
    async def main() -> tuple[int, int, int]:
        pool = CountingPool(size=8, quiet=WAIT * 10)   # no pause comes in this test
        try:
            assert pool.take() is None                 # the first use starts the pool
            await until("the first fill", lambda: len(pool._ready) == 8)
            filled = pool.builds
            for _ in range(3):                         # 8 -> 5 ready: more than half
                take_and_refill(pool)
                await settle()
            after_three = pool.builds
            take_and_refill(pool)                      # 4 ready: half gone, build now
            await until("the refill at half", lambda: len(pool._ready) == 8)
            return filled, after_three, pool.builds
        finally:
            pool.close()

    filled, after_three, after_four = asyncio.run(main())
    assert filled == 8
    assert after_three == 8, "a take from a pool more than half full built at once"
    assert after_four == 12, "four taken: all four are replaced together"


def test_after_a_pause_the_taken_tunnels_are_replaced() -> None:
    async def main() -> int:
        pool = CountingPool(size=8, quiet=0.01)
        try:
            pool.take()
            await until("the first fill", lambda: len(pool._ready) == 8)
            take_and_refill(pool)
            await until("the replacement after a pause", lambda: len(pool._ready) == 8)
            return pool.builds
        finally:
            pool.close()

    assert asyncio.run(main()) == 9


def test_a_small_pool_refills_at_once() -> None:
    """prebuilt = 1 or 2: one take is half the pool; the old rule (refill after each
    connection) is unchanged for them."""
    async def main() -> int:
        pool = CountingPool(size=2, quiet=WAIT * 10)
        try:
            pool.take()
            await until("the first fill", lambda: len(pool._ready) == 2)
            take_and_refill(pool)
            await until("the replacement", lambda: len(pool._ready) == 2)
            return pool.builds
        finally:
            pool.close()

    assert asyncio.run(main()) == 3


class SelfFilling(poolmod.Tunnels):
    """A store that keeps itself full (as the lane's does): it records each refill
    call, and the test plays its builds' outcomes through `told`."""

    def __init__(self, spec: ChainSpec) -> None:
        super().__init__(spec)
        self.calls = 0
        self.told: poolmod.Told | None = None

    def refill(self, quiet: float, told: poolmod.Told) -> bool:
        self.calls += 1
        self.told = told
        return True


def test_a_store_that_refills_itself_gets_no_call_per_take() -> None:
    """The pool starts the store's refill and leaves it alone while it works: no
    build and no refill call of the pool's per take (the lane's, taken_elsewhere).
    A failure stops it: the pool builds the missing tunnels itself (the engine's
    turn), then lets the store refill again."""
    async def main() -> tuple[int, int, int, int, dict[str, int]]:
        stores: list[SelfFilling] = []

        def store(s: ChainSpec) -> SelfFilling:
            stores.append(SelfFilling(s))
            return stores[-1]

        pool = CountingPool(size=4, quiet=0.0, store=store)
        try:
            assert pool.take() is None           # the first use starts the pool
            await until("the refill started", lambda: stores[0].calls == 1)
            told = stores[0].told
            assert told is not None
            for _ in range(4):
                told(None)                       # four built by the store
            for _ in range(10):
                pool.taken_elsewhere()
                await settle()
            calls_while_working = stores[0].calls
            told(ChainError("hop 2 refused", hop=1))
            await until("the refill again", lambda: stores[0].calls == 2)
            return (calls_while_working, pool.builds, len(stores[0]), len(stores),
                    pool.describe())
        finally:
            pool.close()

    calls, builds, ready, made, described = asyncio.run(main())
    assert (calls, made) == (1, 1)
    assert (builds, ready) == (4, 4), "after the failure the pool built the pool's four"
    assert described["built"] == 8

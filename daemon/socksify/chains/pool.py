"""Pre-built tunnels: a strict chain's hops 1..n-1 do not depend on the target, so a
few tunnels that already reach the last hop can wait, ready, and a connect then costs
one SOCKS exchange instead of n (docs/performance.md).

A pool belongs to one chain (one Selector). It starts filling at the chain's first
connection, keeps `prebuilt` tunnels ready (replacing the ones taken at once when half
of them or more are gone, else once no connection has taken one for QUIET seconds: a
build beside a connection slows that connection down), replaces each one older than
`prebuilt_max_age` (a hop closes a connection that sends no request for its own
negotiation timeout: danted's timeout.negotiate is 30 s by default), hands each
tunnel out once, and stops (closing what it holds) after IDLE_STOP seconds without a
connection, on reload and at shutdown.

The ready tunnels wait in a store: a deque here (Tunnels), or, where the daemon runs
the lane, the lane's pool in C (listeners/lanetunnels.py), from which the lane
finishes a program's repeat connects itself and tells the pool (taken_elsewhere). A
store may keep itself full by the same rules (TunnelStore.refill: the lane does,
with no Python per take); the pool then only starts it, has what expired replaced,
builds by itself after the store's build failed (until a round of its own works) and
stops it.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import select
import socket
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Protocol

from ..errors import ChainError
from ..proxies import Proxy
from ..sockstream import RawStream
from .health import HopHealth
from .hops import open_chain
from .spec import ChainSpec

log = logging.getLogger("socksify.pool")

IDLE_STOP = 300.0        # seconds without a connection before a pool empties itself
QUIET = 0.05             # seconds without a take before a pool more than half full refills
RETRY_MIN, RETRY_MAX = 1.0, 30.0   # back-off after a failed pre-build


@dataclass
class Prebuilt:
    """A tunnel through route[:-1] that reaches route[-1], which waits for a request."""

    stream: RawStream
    route: tuple[Proxy, ...]
    born: float


def usable(sock: socket.socket) -> bool:
    """A waiting tunnel must have nothing to read: readable means the hop closed it,
    reset it or sent something unasked."""
    if not hasattr(select, "poll"):     # Windows
        readable, _, errored = select.select([sock], [], [sock], 0)
        return not readable and not errored
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN | select.POLLPRI)
    return not poller.poll(0)


Told = Callable[["BaseException | None"], None]    # a build's outcome: None, or why


class TunnelStore(Protocol):
    """Where a pool's ready tunnels wait, oldest first; each is handed out once."""

    def __len__(self) -> int: ...

    @property
    def family(self) -> int | None:
        """The address family of the waiting tunnels' sockets (None while empty)."""

    def put(self, ready: Prebuilt) -> None: ...

    def take(self) -> Prebuilt | None:
        """The oldest usable tunnel; unusable ones met on the way are discarded."""

    def prune(self) -> float | None:
        """Discard the tunnels too old or unusable; the birth (time.monotonic) of the
        oldest left, None if none is."""

    def counts(self) -> tuple[int, int]:
        """(taken, discarded) since the store began."""

    def build(self) -> Awaitable[None] | None:
        """A tunnel built into the store by the store itself (awaited: raises the
        ChainError of a failure), or None: the pool builds it (_build)."""

    def refill(self, quiet: float, told: Told) -> bool:
        """Keep spec.prebuilt tunnels ready by itself from now on, by TunnelPool's
        rules (the missing ones at once when half or more are gone, else after
        `quiet` seconds without a take), each build told (None, or the ChainError of
        a failure, after which it stops): True. False: it cannot, the pool builds
        (_build). A second call replaces the tunnels that expired."""

    def close(self) -> None: ...


StoreFactory = Callable[[ChainSpec], TunnelStore]


class Tunnels:
    """The ready tunnels in a deque, in Python."""

    def __init__(self, spec: ChainSpec) -> None:
        self.spec = spec
        self._ready: collections.deque[Prebuilt] = collections.deque()
        self.taken = self.discarded = 0

    def __len__(self) -> int:
        return len(self._ready)

    @property
    def family(self) -> int | None:
        return self._ready[0].stream.sock.family if self._ready else None

    def put(self, ready: Prebuilt) -> None:
        self._ready.append(ready)

    def take(self) -> Prebuilt | None:
        now = time.monotonic()
        while self._ready:
            ready = self._ready.popleft()
            if now - ready.born < self.spec.prebuilt_max_age and usable(ready.stream.sock):
                self.taken += 1
                return ready
            self._discard(ready)
        return None

    def prune(self) -> float | None:
        now = time.monotonic()
        while self._ready and (now - self._ready[0].born >= self.spec.prebuilt_max_age
                               or not usable(self._ready[0].stream.sock)):
            self._discard(self._ready.popleft())
        return self._ready[0].born if self._ready else None

    def counts(self) -> tuple[int, int]:
        return self.taken, self.discarded

    def build(self) -> None:
        return None

    def refill(self, quiet: float, told: Told) -> bool:
        return False

    def close(self) -> None:
        while self._ready:
            self._ready.popleft().stream.close()

    def _discard(self, ready: Prebuilt) -> None:
        self.discarded += 1
        ready.stream.close()


class TunnelPool:
    def __init__(self, spec: ChainSpec, health: HopHealth,
                 store: StoreFactory = Tunnels) -> None:
        self.spec = spec
        self.health = health
        self.route = spec.hops
        self._ready: TunnelStore = store(spec)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_use = time.monotonic()
        self._closed = False
        self.quiet = QUIET
        self._calming = False
        self._refilling = False     # the store keeps itself full (TunnelStore.refill)
        self._store_refills = True  # may it (not since its own build failed)
        self.built = 0

    @property
    def family(self) -> int | None:
        """The address family of the ready tunnels' sockets (None while empty)."""
        return self._ready.family

    @property
    def store(self) -> TunnelStore:
        return self._ready

    def fits(self, app_sock: socket.socket) -> bool:
        """May a tunnel's socket replace the program's? Only one of the same family
        that the program has not bound to an address or port of its choosing (the
        lane checks the same: lane/lane.c socket_fits)."""
        if self.family is not None and app_sock.family != self.family:
            return False
        try:
            local = app_sock.getsockname()
        except OSError:
            return False
        return local[1] == 0 and ipaddress.ip_address(local[0]).is_unspecified

    def take(self) -> Prebuilt | None:
        """A fresh, healthy tunnel, never handed out before; None if there is none
        ready. The caller calls refill() once its
        connection is through: building the replacement at the same moment would slow
        that connection down (the hops are busy with both)."""
        self._last_use = time.monotonic()
        self._start()
        return self._ready.take()

    def taken_elsewhere(self) -> None:
        """The lane took a tunnel from the store for a connect of its own: a use, as
        take() is, followed by its refill() unless the store refills itself."""
        self._last_use = time.monotonic()
        self._start()
        if not self._refilling:
            self.refill()

    def refill(self) -> None:
        """Build what is missing: at once if half the pool or more is used, else once
        no connection has taken a tunnel for QUIET seconds. Measured on the lab chain
        (docs/performance.md): a replacement built right after each connection ran
        beside the next one, on the same hops and the same cores, and slowed it by
        about as much as the pool saved; connections in a burst now take ready
        tunnels while the builds wait for a pause or for the pool to run low."""
        if self._refilling:
            self._refilling = self._ready.refill(self.quiet, self._told)
            return
        if self._calming and len(self._ready) > self.spec.prebuilt // 2:
            return      # the pool task waits for the pause already: no wake-up per take
        self._wake.set()

    def close(self) -> None:
        self._closed = True
        self._refilling = False
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._ready.close()

    def describe(self) -> dict[str, int]:
        used, discarded = self._ready.counts()
        return {"ready": len(self._ready), "size": self.spec.prebuilt,
                "built": self.built, "used": used, "discarded": discarded}

    def _start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        retry = RETRY_MIN
        try:
            while not self._closed:
                now = time.monotonic()
                if now - self._last_use > IDLE_STOP:
                    log.info("chain %s: no connection for %.0fs; %d pre-built "
                             "tunnel(s) closed", self.spec.name, IDLE_STOP,
                             len(self._ready))
                    self._refilling = False
                    self._ready.close()
                    return
                oldest = self._ready.prune()
                if self._store_refills:
                    self._refilling = self._ready.refill(self.quiet, self._told)
                if self._refilling:     # until the oldest expires (then replaced)
                    wait = max(0.05, (oldest if oldest is not None else now)
                               + self.spec.prebuilt_max_age - now)
                    await self._sleep(min(wait, IDLE_STOP))
                    continue
                deficit = self.spec.prebuilt - len(self._ready)
                calm = self._last_use + self.quiet - now
                if deficit > 0 and len(self._ready) > self.spec.prebuilt // 2 \
                        and calm > 0:
                    self._calming = True       # until no take for self.quiet
                    try:
                        await self._sleep(calm)
                    finally:
                        self._calming = False
                    continue
                if deficit > 0:
                    # all missing tunnels at once: a burst of connections drains
                    # the pool faster than one build at a time refills it
                    results = await asyncio.gather(
                        *(self._build() for _ in range(deficit)), return_exceptions=True)
                    failed: BaseException | None = None
                    for result in results:
                        if isinstance(result, Prebuilt):
                            self._ready.put(result)
                            self.built += 1
                        elif result is None:        # built into the store by it
                            self.built += 1
                        elif isinstance(result, (ChainError, OSError)):
                            failed = result
                        else:
                            raise result
                    if failed is None:
                        retry = RETRY_MIN
                        self._store_refills = True
                        continue
                    log.warning("chain %s: cannot pre-build a tunnel: %s; again in "
                                "%.0fs", self.spec.name, failed, retry)
                    await asyncio.sleep(retry)
                    retry = min(retry * 2, RETRY_MAX)
                    continue
                wait = max(0.05, (oldest if oldest is not None else now)
                           + self.spec.prebuilt_max_age - now)
                await self._sleep(min(wait, IDLE_STOP))
        finally:
            if self._task is asyncio.current_task():
                self._task = None

    def _told(self, failure: BaseException | None) -> None:
        """A tunnel the store built by itself (refill), or why it could not: then
        it refills no more, and the pool builds until a round of its own works."""
        if failure is None:
            self.built += 1
            for hop in self.route[:-1]:
                self.health.mark_up(hop)
            return
        if self._refilling and not self._closed:
            # the pool builds (_build: the engine tries what the store could not,
            # with its retries, messages and early-data check), and lets the store
            # refill itself again once a round of its own works
            log.debug("chain %s: the store stopped refilling (%s)", self.spec.name,
                      failure)
            self._refilling = self._store_refills = False
            self._wake.set()

    async def _sleep(self, seconds: float) -> None:
        """For `seconds`, or until refill() wakes the pool."""
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def _build(self) -> Prebuilt | None:
        """A tunnel: built by the store into itself (None) where it can (the lane,
        in C), else here, by the chain engine. A tunnel the store could not build is
        tried here once more, with the engine's retries and messages."""
        route = self.route
        made = self._ready.build()
        if made is not None:
            try:
                await made
            except (ChainError, OSError) as exc:
                log.debug("chain %s: no pre-built tunnel from the store (%s); the "
                          "engine tries", self.spec.name, exc)
            else:
                for hop in route[:-1]:
                    self.health.mark_up(hop)
                return None
        stream = await open_chain(route, len(route) - 1, "", 0, self.spec, "pool")
        for hop in route[:-1]:
            self.health.mark_up(hop)
        return Prebuilt(stream, route, time.monotonic())

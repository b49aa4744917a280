"""Routes: turn a chain into the route to try next (per strategy), build it (a
pre-built tunnel from the pool first), and retry on the next route when a hop fails."""

from __future__ import annotations

import asyncio
import errno
import itertools
import logging
import random
import socket
import time
from dataclasses import dataclass, field

from ..errors import ChainError, HopUnreachable, RequestRefused
from ..proxies import Proxy
from ..sockstream import RawStream, replies_readable
from .connect import disconnect, open_socket, sock_connect
from .health import HopHealth
from .hops import build, target_addr
from .pool import TunnelPool
from .spec import ChainSpec, Strategy
from .streamauth import StreamAuth

log = logging.getLogger("socksify.chain")


@dataclass
class Tunnel:
    """A socket of the daemon's (non-blocking) that reaches the target through `route`:
    the chain was negotiated on it with exact reads, so nothing the target sent is
    held anywhere but in the socket."""

    sock: socket.socket
    route: tuple[Proxy, ...]
    setup_seconds: float = 0.0
    skipped: tuple[Proxy, ...] = field(default_factory=tuple)
    prebuilt: bool = False      # hops 1..n-1 came from the pool

    async def streams(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The tunnel as asyncio streams (for a relay to another stream)."""
        return await asyncio.open_connection(sock=self.sock, limit=1 << 18)

    def close(self) -> None:
        self.sock.close()


@dataclass
class Handed:
    """A chain built on the program's own socket (handoff): nothing for the daemon to
    carry. `swap` is a pre-built tunnel's socket to put in place of the program's."""

    route: tuple[Proxy, ...]
    setup_seconds: float = 0.0
    skipped: tuple[Proxy, ...] = field(default_factory=tuple)
    swap: socket.socket | None = None


class Selector:
    """Turns a chain's hop list into the route to try next, per strategy."""

    def __init__(self, spec: ChainSpec, health: HopHealth,
                 rng: random.Random | None = None) -> None:
        self.spec = spec
        self.health = health
        self._rng = rng or random.Random()
        self._rr = itertools.count()
        self.pool: TunnelPool | None = None    # pre-built tunnels (strict chains)

    def next_route(self, excluded: set[Proxy]) -> tuple[Proxy, ...] | None:
        spec = self.spec
        if spec.strategy is Strategy.STRICT:
            return spec.hops if not excluded else None
        usable = [h for h in spec.hops if h not in excluded]
        alive = [h for h in usable if not self.health.is_down(h)]
        pool = alive or usable  # when every hop looks down, try them anyway
        want = len(spec.hops) if spec.chain_len is None else spec.chain_len
        if spec.strategy is Strategy.DYNAMIC:
            return tuple(pool) if pool else None
        if len(pool) < min(want, len(spec.hops)):
            return None
        if spec.strategy is Strategy.RANDOM:
            return tuple(self._rng.sample(pool, want))
        start = next(self._rr) % len(pool)
        return tuple((pool * 2)[start:start + want])


async def open_direct(host: str, port: int, timeout: float = 10.0) -> Tunnel:
    """A plain TCP connection (for a `direct` rule on a name the program looked up
    through the daemon: only the daemon knows the real address)."""
    started = time.monotonic()
    sock = await open_socket(host, port, timeout, f"{host}:{port}")
    return Tunnel(sock, (), time.monotonic() - started)


async def hand_direct(app_sock: socket.socket, host: str, port: int,
                      timeout: float = 10.0) -> Handed:
    """open_direct on the program's own socket."""
    started = time.monotonic()
    await sock_connect(app_sock, host, port, timeout, f"{host}:{port}")
    return Handed((), time.monotonic() - started)


async def open_tunnel(selector: Selector, host: str, port: int,
                      conn: str = "-", dns: str = "remote",
                      auth: StreamAuth | None = None) -> Tunnel:
    """Build a tunnel to host:port through the selector's chain; retry per strategy.
    A host name goes to the last hop if it carries names; else dns = "local" resolves
    it here first, and anything else refuses. A pre-built tunnel from the selector's
    pool is used when there is one.

    Raises a ChainError (or Unsupported) whose errno is what the application sees."""
    started = time.monotonic()
    stream, route, skipped, prebuilt = await _establish(
        selector, host, port, conn, dns, None, selector.pool, auth)
    return Tunnel(stream.sock, route, time.monotonic() - started, skipped, prebuilt)


async def hand_tunnel(selector: Selector, host: str, port: int, app_sock: socket.socket,
                      conn: str = "-", dns: str = "remote",
                      swappable: bool = False,
                      auth: StreamAuth | None = None) -> Handed:
    """open_tunnel on the program's own socket (handoff): connect it to hop 1 and
    negotiate the whole chain on it, reading exactly the replies. With `swappable`, a
    pre-built tunnel from the pool may be finished instead and returned as `swap`.
    On failure the program's socket is disconnected again (as after a failed
    connect) and the ChainError raised; HandoffImpossible if it cannot reach hop 1."""
    started = time.monotonic()
    with replies_readable(app_sock):
        stream, route, skipped, prebuilt = await _establish(
            selector, host, port, conn, dns, app_sock,
            selector.pool if swappable else None, auth)
    return Handed(route, time.monotonic() - started, skipped,
                  stream.sock if prebuilt else None)


async def _establish(selector: Selector, host: str, port: int, conn: str, dns: str,
                     app_sock: socket.socket | None, pool: TunnelPool | None,
                     auth: StreamAuth | None = None
                     ) -> tuple[RawStream, tuple[Proxy, ...], tuple[Proxy, ...], bool]:
    """The route-trying loop behind open_tunnel and hand_tunnel: (the stream, route,
    skipped hops, whether a pre-built tunnel was used)."""
    ready = pool.take() if pool is not None else None
    try:
        if ready is not None:
            try:
                stream = await build(ready.route, target_addr(host), port,
                                     selector.spec, conn, dns, start=ready.stream,
                                     auth=auth)
            except RequestRefused:
                # the last hop's answer, the program's as on any route: a fresh chain
                # would only hear it again (and the target see a second attempt)
                ready.stream.close()
                raise
            except ChainError as exc:
                # A tunnel that died while it waited looks like a refusal of the target
                # (closed without a reply); a fresh chain tells the two apart.
                ready.stream.close()
                log.info("[%s] pre-built tunnel failed (%s); building a new one", conn,
                         exc)
            except BaseException:
                ready.stream.close()
                raise
            else:
                log.debug("[%s] used a pre-built tunnel", conn)
                return stream, ready.route, (), True
        return (*await _try_routes(selector, host, port, conn, dns, app_sock, auth),
                False)
    finally:
        # the replacement is built once this connection is through: building it at
        # the same time would slow this one down (the hops are busy with both)
        if pool is not None:
            pool.refill()


async def _try_routes(selector: Selector, host: str, port: int, conn: str, dns: str,
                      app_sock: socket.socket | None, auth: StreamAuth | None = None
                      ) -> tuple[RawStream, tuple[Proxy, ...], tuple[Proxy, ...]]:
    spec = selector.spec
    target = target_addr(host)
    excluded: set[Proxy] = set()
    skipped: list[Proxy] = []
    while True:
        route = selector.next_route(excluded)
        if not route:
            raise HopUnreachable(f"chain {spec.name!r}: no usable hop left "
                                 f"(skipped {', '.join(map(str, skipped))})",
                                 hop=0, err=errno.ECONNREFUSED)
        try:
            stream = await build(route, target, port, spec, conn, dns,
                                  app_sock=app_sock, auth=auth)
        except ChainError as exc:
            if app_sock is not None:
                disconnect(app_sock)
            if exc.hop >= len(route):       # the target failed, not a hop
                raise
            bad = route[exc.hop]
            selector.health.mark_down(bad)
            log.warning("[%s] hop %s failed: %s", conn, bad, exc)
            if spec.strategy is Strategy.STRICT:
                raise
            excluded.add(bad)
            skipped.append(bad)
            continue
        except BaseException:
            if app_sock is not None:
                disconnect(app_sock)
            raise
        for hop in route:
            selector.health.mark_up(hop)
        return stream, route, tuple(skipped)

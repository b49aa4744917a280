"""The chain engine: pick hops by strategy, then tunnel through them one SOCKS request
at a time (ask hop 1 for hop 2, ask hop 2 for hop 3 through that tunnel, ...)."""

from __future__ import annotations

import asyncio
import enum
import errno
import ipaddress
import itertools
import logging
import random
import socket
import time
from dataclasses import dataclass, field

from .errors import (ChainError, HopProtocolError, HopRefused, HopTimeout,
                     HopUnreachable, Unsupported)
from .protocol import socks4
from .proxies import Proxy

log = logging.getLogger("socksify.chain")


class Strategy(str, enum.Enum):
    STRICT = "strict"          # every hop, in order; any failure fails the connection
    DYNAMIC = "dynamic"        # in order, skipping hops that are down; at least one
    RANDOM = "random"          # chain_len hops drawn at random
    ROUND_ROBIN = "round_robin"  # chain_len hops, starting one further each time


@dataclass(frozen=True)
class ChainSpec:
    name: str
    hops: tuple[Proxy, ...]
    strategy: Strategy = Strategy.STRICT
    chain_len: int | None = None      # random / round_robin only; default: all hops
    connect_timeout: float = 5.0      # seconds for the TCP connect to hop 1
    read_timeout: float = 10.0        # seconds for each hop's SOCKS reply (the hop
                                      # connects onwards before it replies)

    def __post_init__(self) -> None:
        if not self.hops:
            raise ValueError(f"chain {self.name!r} has no hops")
        if self.chain_len is not None and not 1 <= self.chain_len <= len(self.hops):
            raise ValueError(f"chain {self.name!r}: chain_len {self.chain_len} must be "
                             f"between 1 and the number of hops ({len(self.hops)})")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ValueError(f"chain {self.name!r}: connect_timeout and read_timeout "
                             "must be positive")

    def describe(self) -> str:
        return " -> ".join(str(h) for h in self.hops)


class HopHealth:
    """Which hops were found dead lately; shared by every connection of the daemon so
    one failure spares the next connections the wait. A dead hop is skipped for a
    back-off period that doubles on each repeated failure (up to max_backoff)."""

    def __init__(self, backoff: float = 5.0, max_backoff: float = 120.0) -> None:
        self._backoff = backoff
        self._max = max_backoff
        self._down: dict[tuple[str, int], tuple[float, float]] = {}  # until, period

    def is_down(self, hop: Proxy) -> bool:
        entry = self._down.get((hop.host, hop.port))
        return entry is not None and time.monotonic() < entry[0]

    def retry_in(self, hop: Proxy) -> float | None:
        """Seconds until a hop that is down is tried again; None if it is up."""
        entry = self._down.get((hop.host, hop.port))
        if entry is None or entry[0] <= time.monotonic():
            return None
        return round(entry[0] - time.monotonic(), 1)

    def mark_down(self, hop: Proxy) -> None:
        key = (hop.host, hop.port)
        prev = self._down.get(key)
        period = min(prev[1] * 2, self._max) if prev else self._backoff
        self._down[key] = (time.monotonic() + period, period)

    def mark_up(self, hop: Proxy) -> None:
        self._down.pop((hop.host, hop.port), None)

    def snapshot(self) -> dict[str, float]:
        """Hop address -> seconds until it is tried again, for hops now down."""
        now = time.monotonic()
        return {f"{h}:{p}": round(until - now, 1)
                for (h, p), (until, _) in self._down.items() if until > now}


@dataclass
class Tunnel:
    """A byte stream that reaches the target through `route`."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    route: tuple[Proxy, ...]
    setup_seconds: float = 0.0
    skipped: tuple[Proxy, ...] = field(default_factory=tuple)


class Selector:
    """Turns a chain's hop list into the route to try next, per strategy."""

    def __init__(self, spec: ChainSpec, health: HopHealth,
                 rng: random.Random | None = None) -> None:
        self.spec = spec
        self.health = health
        self._rng = rng or random.Random()
        self._rr = itertools.count()

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


async def open_tunnel(selector: Selector, host: str, port: int,
                      conn: str = "-") -> Tunnel:
    """Build a tunnel to host:port through the selector's chain; retry per strategy.

    Raises a ChainError (or Unsupported) whose errno is what the application sees."""
    spec = selector.spec
    target = _target_addr(host)
    excluded: set[Proxy] = set()
    skipped: list[Proxy] = []
    started = time.monotonic()
    while True:
        route = selector.next_route(excluded)
        if not route:
            raise HopUnreachable(f"chain {spec.name!r}: no usable hop left "
                                 f"(skipped {', '.join(map(str, skipped))})",
                                 hop=0, err=errno.ECONNREFUSED)
        try:
            reader, writer = await _build(route, target, port, spec, conn)
        except ChainError as exc:
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
        for hop in route:
            selector.health.mark_up(hop)
        return Tunnel(reader, writer, route, time.monotonic() - started, tuple(skipped))


def _target_addr(host: str) -> str:
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return host
    if addr.version == 6:
        mapped = addr.ipv4_mapped
        if mapped is None:
            raise Unsupported(f"{host} is IPv6 and a SOCKS4 chain carries only IPv4")
        return str(mapped)
    return str(addr)


async def _build(route: tuple[Proxy, ...], host: str, port: int, spec: ChainSpec,
                 conn: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    timeout = spec.connect_timeout
    first = route[0]
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(first.host, first.port, limit=1 << 18), timeout)
    except asyncio.TimeoutError:
        raise HopTimeout(f"hop 1 {first}: no TCP connection within {timeout:g}s",
                         hop=0) from None
    except OSError as exc:
        raise HopUnreachable(f"hop 1 {first}: {exc.strerror or exc}", hop=0,
                             err=exc.errno or errno.ECONNREFUSED) from None
    try:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i, hop in enumerate(route):
            if i + 1 < len(route):
                nxt = route[i + 1]
                want_host, want_port = await _hop_address(hop, nxt), nxt.port
            else:
                want_host, want_port = host, port
            await _socks4_connect(reader, writer, hop, i, want_host, want_port,
                                  spec.read_timeout, len(route))
            log.debug("[%s] hop %d %s -> %s:%d granted", conn, i + 1, hop,
                      want_host, want_port)
    except BaseException:
        writer.close()
        raise
    return reader, writer


async def _hop_address(asker: Proxy, hop: Proxy) -> str:
    """The address to ask `asker` for, to reach `hop`: its name if the asker carries
    names, else its IPv4 address (resolved here: it is a proxy, not the target)."""
    try:
        ipaddress.IPv4Address(hop.host)
        return hop.host
    except ValueError:
        pass
    if asker.carries_names:
        return hop.host
    infos = await asyncio.get_running_loop().getaddrinfo(
        hop.host, hop.port, family=socket.AF_INET, type=socket.SOCK_STREAM)
    return str(infos[0][4][0])


async def _socks4_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          hop: Proxy, index: int, host: str, port: int,
                          timeout: float, route_len: int) -> None:
    """Ask `hop` (route index `index`) to connect to host:port. A failure is blamed on
    the next hop (index + 1), or on the target when index is the last hop."""
    blame = index + 1
    what = f"{host}:{port}" if blame >= route_len else f"hop {blame + 1} {host}:{port}"
    writer.write(socks4.ConnectRequest(host, port, hop.user).dumps())
    try:
        await writer.drain()
        data = await asyncio.wait_for(reader.readexactly(socks4.REPLY_SIZE), timeout)
    except asyncio.TimeoutError:
        raise HopTimeout(f"hop {index + 1} {hop}: no reply within {timeout:g}s "
                         f"to CONNECT {what}", hop=blame) from None
    except asyncio.IncompleteReadError as exc:
        raise HopRefused(f"hop {index + 1} {hop}: closed after {len(exc.partial)} "
                         f"reply bytes to CONNECT {what}", hop=blame) from None
    except OSError as exc:
        raise HopUnreachable(f"hop {index + 1} {hop}: {exc.strerror or exc}",
                             hop=index, err=exc.errno or errno.ECONNRESET) from None
    try:
        reply = socks4.Reply.loads(data)
    except socks4.ProtocolError as exc:
        raise HopProtocolError(f"hop {index + 1} {hop}: {exc}", hop=index) from None
    if not reply.granted:
        raise HopRefused(f"hop {index + 1} {hop}: CONNECT {what} refused, "
                         f"code {reply.describe()}", hop=blame)

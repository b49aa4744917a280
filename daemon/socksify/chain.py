"""The chain engine: pick hops by strategy, then tunnel through them one SOCKS request
at a time (ask hop 1 for hop 2, ask hop 2 for hop 3 through that tunnel, ...)."""

from __future__ import annotations

import asyncio
import ctypes
import enum
import functools
import errno
import ipaddress
import itertools
import logging
import os
import random
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import (ChainError, HopProtocolError, HopRefused, HopTimeout,
                     HopUnreachable, Unsupported)
from .protocol import socks4, socks5
from .proxies import Proxy
from .sockstream import RawStream, within

if TYPE_CHECKING:
    from .pool import Prebuilt, TunnelPool

log = logging.getLogger("socksify.chain")


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
DATA_PATHS = ("handoff", "relay")
MAX_PREBUILT = 64


class HandoffImpossible(Exception):
    """The program's socket cannot be connected to hop 1 (another address family, or
    IPV6_V6ONLY against an IPv4 hop): carry this connection on the relay instead."""


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
    dns: str = "remote"               # a target name: remote | local | block
    data_path: str = "handoff"        # handoff (the program's own socket) | relay
    prebuilt: int = 0                 # tunnels kept ready up to the last hop (strict)
    prebuilt_max_age: float = 20.0    # seconds a ready tunnel may wait for a request

    def __post_init__(self) -> None:
        if not self.hops:
            raise ValueError(f"chain {self.name!r} has no hops")
        if self.chain_len is not None and not 1 <= self.chain_len <= len(self.hops):
            raise ValueError(f"chain {self.name!r}: chain_len {self.chain_len} must be "
                             f"between 1 and the number of hops ({len(self.hops)})")
        if not (self.connect_timeout > 0 and self.read_timeout > 0):   # NaN too
            raise ValueError(f"chain {self.name!r}: connect_timeout and read_timeout "
                             "must be positive")
        if self.data_path not in DATA_PATHS:
            raise ValueError(f"chain {self.name!r}: data_path {self.data_path!r} must be "
                             f"one of {', '.join(DATA_PATHS)}")
        if not 0 <= self.prebuilt <= MAX_PREBUILT:
            raise ValueError(f"chain {self.name!r}: prebuilt {self.prebuilt} must be "
                             f"between 0 (off) and {MAX_PREBUILT}")
        if not self.prebuilt_max_age > 0:
            raise ValueError(f"chain {self.name!r}: prebuilt_max_age must be positive")

    def describe(self) -> str:
        return " -> ".join(str(h) for h in self.hops)

    @property
    def carries_names(self) -> bool:
        """Whichever hop ends up last, can it be asked for a host name?"""
        if self.strategy is Strategy.STRICT:
            return self.hops[-1].carries_names
        return all(h.carries_names for h in self.hops)


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
                      conn: str = "-", dns: str = "remote") -> Tunnel:
    """Build a tunnel to host:port through the selector's chain; retry per strategy.
    A host name goes to the last hop if it carries names; else dns = "local" resolves
    it here first, and anything else refuses. A pre-built tunnel from the selector's
    pool is used when there is one.

    Raises a ChainError (or Unsupported) whose errno is what the application sees."""
    started = time.monotonic()
    stream, route, skipped, prebuilt = await _establish(
        selector, host, port, conn, dns, None, selector.pool)
    return Tunnel(stream.sock, route, time.monotonic() - started, skipped, prebuilt)


async def hand_tunnel(selector: Selector, host: str, port: int, app_sock: socket.socket,
                      conn: str = "-", dns: str = "remote",
                      swappable: bool = False) -> Handed:
    """open_tunnel on the program's own socket (handoff): connect it to hop 1 and
    negotiate the whole chain on it, reading exactly the replies. With `swappable`, a
    pre-built tunnel from the pool may be finished instead and returned as `swap`.
    On failure the program's socket is disconnected again (as after a failed
    connect) and the ChainError raised; HandoffImpossible if it cannot reach hop 1."""
    started = time.monotonic()
    stream, route, skipped, prebuilt = await _establish(
        selector, host, port, conn, dns, app_sock,
        selector.pool if swappable else None)
    return Handed(route, time.monotonic() - started, skipped,
                  stream.sock if prebuilt else None)


async def _establish(selector: Selector, host: str, port: int, conn: str, dns: str,
                     app_sock: socket.socket | None, pool: TunnelPool | None
                     ) -> tuple[RawStream, tuple[Proxy, ...], tuple[Proxy, ...], bool]:
    """The route-trying loop behind open_tunnel and hand_tunnel: (the stream, route,
    skipped hops, whether a pre-built tunnel was used)."""
    ready = pool.take() if pool is not None else None
    try:
        if ready is not None:
            try:
                await _build(ready.route, _target_addr(host), port, selector.spec, conn,
                             dns, start=ready)
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
                return ready.stream, ready.route, (), True
        return (*await _try_routes(selector, host, port, conn, dns, app_sock), False)
    finally:
        # the replacement is built once this connection is through: building it at
        # the same time would slow this one down (the hops are busy with both)
        if pool is not None:
            pool.refill()


async def _try_routes(selector: Selector, host: str, port: int, conn: str, dns: str,
                      app_sock: socket.socket | None
                      ) -> tuple[RawStream, tuple[Proxy, ...], tuple[Proxy, ...]]:
    spec = selector.spec
    target = _target_addr(host)
    excluded: set[Proxy] = set()
    skipped: list[Proxy] = []
    while True:
        route = selector.next_route(excluded)
        if not route:
            raise HopUnreachable(f"chain {spec.name!r}: no usable hop left "
                                 f"(skipped {', '.join(map(str, skipped))})",
                                 hop=0, err=errno.ECONNREFUSED)
        try:
            stream = await _build(route, target, port, spec, conn, dns,
                                  app_sock=app_sock)
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


_AF_UNSPEC_ADDR = bytes(16)   # struct sockaddr with sa_family AF_UNSPEC


def disconnect(sock: socket.socket) -> None:
    """Dissolve a TCP socket's association (connect() to AF_UNSPEC): a connection the
    daemon made on the program's socket and could not finish is reset, and the socket
    can be connected again, as after a failed connect()."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.connect(sock.fileno(), _AF_UNSPEC_ADDR, len(_AF_UNSPEC_ADDR)) != 0:
        log.debug("disconnect fd %d: %s", sock.fileno(), errno.errorcode.get(
            ctypes.get_errno(), ctypes.get_errno()))


async def open_socket(host: str, port: int, timeout: float, what: str) -> socket.socket:
    """A new TCP socket of the daemon's, connected to host:port (to hop 1, or to a
    direct target), with the errors a program should see: ETIMEDOUT, or the kernel's
    errno."""
    addrs = await _addresses(host, port)
    sock = socket.socket(socket.AF_INET6 if addrs[0].version == 6 else socket.AF_INET,
                         socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await sock_connect(sock, host, port, timeout, what, addrs)
    except BaseException:
        sock.close()
        raise
    return sock


async def sock_connect(sock: socket.socket, host: str, port: int, timeout: float,
                       what: str, addrs: list[IPAddress] | None = None) -> None:
    """Connect a given socket (the program's, or one of the daemon's) to host:port
    (whose addresses may be known already), with open_socket's errors."""
    address = sockaddr_for(sock, host, port,
                           addrs if addrs is not None else await _addresses(host, port))
    sock.setblocking(False)
    try:
        await within(_connect_to(sock, address), timeout)
    except asyncio.TimeoutError:
        raise HopTimeout(f"{what}: no TCP connection within {timeout:g}s",
                         hop=0) from None
    except OSError as exc:
        raise HopUnreachable(f"{what}: {exc.strerror or exc}", hop=0,
                             err=exc.errno or errno.ECONNREFUSED) from None


async def _connect_to(sock: socket.socket,
                      address: tuple[str, int] | tuple[str, int, int, int]) -> None:
    """loop.sock_connect() to a numeric address. An MPTCP socket (protocol 262, a TCP
    connection to hop 1 as far as the chain is concerned) is connected without it:
    asyncio looks even a numeric address up again with the socket's protocol, which
    getaddrinfo() rejects (EAI_SOCKTYPE)."""
    loop = asyncio.get_running_loop()
    if sock.proto in (0, socket.IPPROTO_TCP):
        await loop.sock_connect(sock, address)
        return
    err = sock.connect_ex(address)
    if err in (errno.EINPROGRESS, errno.EAGAIN):
        ready: asyncio.Future[None] = loop.create_future()

        def writable() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_writer(sock.fileno(), writable)
        try:
            await ready
        finally:
            loop.remove_writer(sock.fileno())
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err != 0:
        raise OSError(err, os.strerror(err))


async def _addresses(host: str, port: int) -> list[IPAddress]:
    """host's addresses: itself if it is one, else what the resolver says."""
    parsed = _parse(host)
    if parsed is not None:
        return [parsed]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise HopUnreachable(f"{host}: cannot resolve ({exc})", hop=0,
                             err=errno.EHOSTUNREACH) from None
    return [ipaddress.ip_address(info[4][0]) for info in infos]


def sockaddr_for(sock: socket.socket, host: str, port: int, addrs: list[IPAddress]
                 ) -> tuple[str, int] | tuple[str, int, int, int]:
    """An address of host's (addrs) as `sock`'s family can connect to it: an IPv4
    address on an IPv6 socket as ::ffff:a.b.c.d. HandoffImpossible if it has none."""
    if sock.family == socket.AF_INET:
        for addr in addrs:
            if addr.version == 4:
                return (str(addr), port)
    elif sock.family == socket.AF_INET6:
        for addr in addrs:
            if addr.version == 6:
                return (str(addr), port, 0, 0)
        if addrs and not sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY):
            return (f"::ffff:{addrs[0]}", port, 0, 0)
    raise HandoffImpossible(f"a {sock.family.name} socket cannot reach {host}")


def _target_addr(host: str) -> str:
    """The target as the last hop is asked for it: IPv4-mapped IPv6 unwrapped."""
    addr = _parse(host)
    if addr is None:
        return host
    if addr.version == 6 and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def _check_carriable(asker: Proxy, host: str, what: str) -> None:
    """Raise Unsupported (ENETUNREACH) if `asker` cannot be asked for host."""
    parsed = _parse(host)
    if parsed is None:
        if not asker.carries_names:
            raise Unsupported(f"{asker} cannot be asked for the host name {what} "
                              "(SOCKS4 carries only IPv4 addresses; use socks4a:// "
                              "or socks5://)") from None
        return
    if parsed.version == 6 and not asker.carries_ipv6:
        raise Unsupported(f"{what} is IPv6 and {asker} ({asker.scheme}) carries only "
                          "IPv4")


async def final_target(last: Proxy, host: str, port: int, dns: str) -> str:
    """The target as `last` will be asked for it (resolved here for dns = "local" on
    a hop that carries no names); Unsupported if it cannot be asked."""
    if dns == "local" and not last.carries_names and not _is_address(host):
        host = await _resolve_here(host, port, last)
    elif not last.carries_names and not _is_address(host):
        raise Unsupported(f"the last hop {last} cannot carry the host name {host} "
                          "(SOCKS4): use a socks4a:// or socks5:// last hop, or set "
                          'dns = "local" to resolve names here')
    _check_carriable(last, host, f"{host}:{port}")
    return host


async def _build(route: tuple[Proxy, ...], host: str, port: int, spec: ChainSpec,
                 conn: str, dns: str = "remote", app_sock: socket.socket | None = None,
                 start: Prebuilt | None = None) -> RawStream:
    """Connect to hop 1 (on app_sock, if given; else on a new socket of the daemon's)
    and ask each hop for the next, the last for host:port, reading exactly the
    replies. With `start`, a pre-built tunnel already reaches the last hop: only the
    last request is left."""
    host = await final_target(route[-1], host, port, dns)
    first = route[0]
    if start is not None:
        stream = start.stream
    elif app_sock is not None:
        await sock_connect(app_sock, first.host, first.port, spec.connect_timeout,
                           f"hop 1 {first}")
        stream = RawStream(app_sock, owned=False)
    else:
        stream = RawStream(await open_socket(first.host, first.port,
                                             spec.connect_timeout, f"hop 1 {first}"),
                           owned=True)
    try:
        await negotiate(stream, route, len(route) - 1 if start else 0,
                        len(route), host, port, spec, conn)
    except BaseException:
        stream.close()
        raise
    return stream


async def negotiate(stream: RawStream, route: tuple[Proxy, ...],
                    begin: int, end: int, host: str, port: int, spec: ChainSpec,
                    conn: str) -> None:
    """Send the SOCKS requests of route[begin:end] on a stream that already reaches
    route[begin]: each hop is asked for the next, the last hop of the route for
    host:port."""
    for i in range(begin, end):
        hop = route[i]
        if i + 1 < len(route):
            nxt = route[i + 1]
            want_host, want_port = await _hop_address(hop, nxt), nxt.port
        else:
            want_host, want_port = host, port
        step = _Step(stream, hop, i, want_host, want_port,
                     spec.read_timeout, len(route))
        if hop.scheme == "socks5":
            await step.socks5()
        else:
            await step.socks4()
        log.debug("[%s] hop %d %s -> %s:%d granted", conn, i + 1, hop,
                  want_host, want_port)


@functools.lru_cache(maxsize=1024)
def _parse(host: str) -> IPAddress | None:
    """host as an address, None for a name (cached: every connection asks this of its
    target and its hops several times)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _is_address(host: str) -> bool:
    return _parse(host) is not None


async def _resolve_here(host: str, port: int, last: Proxy) -> str:
    family = socket.AF_UNSPEC if last.carries_ipv6 else socket.AF_INET
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, family=family, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise HopUnreachable(f"{host}: cannot resolve here ({exc})", hop=len((last,)),
                             err=errno.EHOSTUNREACH) from None
    return str(infos[0][4][0])


async def _hop_address(asker: Proxy, hop: Proxy) -> str:
    """The address to ask `asker` for, to reach `hop`: its name if the asker carries
    names, else its IPv4 address (resolved here: it is a proxy, not the target)."""
    if _parse(hop.host) is not None:
        _check_carriable(asker, hop.host, f"hop {hop}")
        return hop.host
    if asker.carries_names:
        return hop.host
    infos = await asyncio.get_running_loop().getaddrinfo(
        hop.host, hop.port, family=socket.AF_INET, type=socket.SOCK_STREAM)
    return str(infos[0][4][0])


# SOCKS5 reply codes -> the errno the application sees
_SOCKS5_ERRNO: dict[int, int] = {
    socks5.ReplyCode.NETWORK_UNREACHABLE: errno.ENETUNREACH,
    socks5.ReplyCode.HOST_UNREACHABLE: errno.EHOSTUNREACH,
    socks5.ReplyCode.CONNECTION_REFUSED: errno.ECONNREFUSED,
    socks5.ReplyCode.TTL_EXPIRED: errno.ETIMEDOUT,
    socks5.ReplyCode.ADDRESS_TYPE_NOT_SUPPORTED: errno.EAFNOSUPPORT,
}


@dataclass
class _Step:
    """One request to one hop: ask `hop` (route index `index`) to connect to
    host:port. A refusal is blamed on the next hop (index + 1), or on the target when
    index is the last hop; a hop that breaks the protocol is blamed itself."""

    stream: RawStream
    hop: Proxy
    index: int
    host: str
    port: int
    timeout: float
    route_len: int

    @property
    def blame(self) -> int:
        return self.index + 1

    @property
    def what(self) -> str:
        target = f"{self.host}:{self.port}"
        return target if self.blame >= self.route_len else f"hop {self.blame + 1} {target}"

    @property
    def me(self) -> str:
        return f"hop {self.index + 1} {self.hop}"

    async def send(self, data: bytes) -> None:
        self.stream.write(data)
        try:
            await self.stream.drain()
        except OSError as exc:
            raise HopUnreachable(f"{self.me}: {exc.strerror or exc}", hop=self.index,
                                 err=exc.errno or errno.ECONNRESET) from None

    async def read(self, size: int, during: str, request: bool = True) -> bytes:
        """Read a reply. While waiting for a CONNECT reply (request=True), a hop that
        closes or resets has failed that request, and the failure is blamed where a
        refusal would be: danted, for one, sends SOCKS5 'connection refused' and resets
        at once, and asyncio reports the reset before the bytes that preceded it.
        Before that (greeting, authentication), the hop itself is at fault."""
        blame = self.blame if request else self.index
        try:
            return await within(self.stream.readexactly(size), self.timeout)
        except asyncio.TimeoutError:
            raise HopTimeout(f"{self.me}: no reply within {self.timeout:g}s to "
                             f"{during}", hop=blame) from None
        except asyncio.IncompleteReadError as exc:
            raise HopRefused(f"{self.me}: closed after {len(exc.partial)} reply bytes "
                             f"to {during}", hop=blame) from None
        except OSError as exc:
            raise HopRefused(f"{self.me}: {exc.strerror or exc} in reply to {during}",
                             hop=blame) from None

    def broken(self, exc: Exception) -> HopProtocolError:
        return HopProtocolError(f"{self.me}: {exc}", hop=self.index)

    def encode(self, request: socks4.ConnectRequest | socks5.ConnectRequest) -> bytes:
        try:
            return request.dumps()
        except ValueError as exc:
            raise Unsupported(f"{self.me}: cannot ask for {self.what}: {exc}") from None

    async def socks4(self) -> None:
        await self.send(self.encode(socks4.ConnectRequest(self.host, self.port,
                                                          self.hop.user)))
        data = await self.read(socks4.REPLY_SIZE, f"CONNECT {self.what}")
        try:
            reply = socks4.Reply.loads(data)
        except socks4.ProtocolError as exc:
            raise self.broken(exc) from None
        if not reply.granted:
            raise HopRefused(f"{self.me}: CONNECT {self.what} refused, code "
                             f"{reply.describe()}", hop=self.blame)

    async def socks5(self) -> None:
        methods = (socks5.METHOD_NO_AUTH, socks5.METHOD_USERPASS) if self.hop.user \
            else (socks5.METHOD_NO_AUTH,)
        await self.send(socks5.Greeting(methods).dumps())
        try:
            choice = socks5.MethodChoice.loads(await self.read(2, "the greeting",
                                                               request=False))
        except socks5.ProtocolError as exc:
            raise self.broken(exc) from None
        if choice.method == socks5.METHOD_USERPASS and self.hop.user:
            await self.send(socks5.UserPassAuth(self.hop.user, self.hop.password).dumps())
            try:
                auth = socks5.AuthReply.loads(await self.read(2, "authentication",
                                                              request=False))
            except socks5.ProtocolError as exc:
                raise self.broken(exc) from None
            if not auth.ok:
                raise HopRefused(f"{self.me}: user {self.hop.user!r} was refused "
                                 f"(status {auth.status})", hop=self.index)
        elif choice.method != socks5.METHOD_NO_AUTH:
            raise HopRefused(f"{self.me}: accepts none of our authentication methods "
                             f"(answered {choice.method:#x})", hop=self.index)
        await self.send(self.encode(socks5.ConnectRequest(self.host, self.port)))
        try:
            head = await self.read(socks5.Reply.head_size, f"CONNECT {self.what}")
            rest = await self.read(socks5.Reply.rest_size(head), f"CONNECT {self.what}")
            reply = socks5.Reply.loads(head + rest)
        except socks5.ProtocolError as exc:
            raise self.broken(exc) from None
        if not reply.granted:
            raise HopRefused(f"{self.me}: CONNECT {self.what} refused, code "
                             f"{reply.describe()}", hop=self.blame,
                             err=_SOCKS5_ERRNO.get(reply.code, errno.ECONNREFUSED))

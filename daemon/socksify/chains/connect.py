"""Dialling: a TCP connection to hop 1 (or a direct target) on a socket of the
daemon's or on the program's own, with the errno a program should see; and undoing
one that could not be finished."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import functools
import ipaddress
import logging
import os
import select
import socket
import time
from asyncio.selector_events import BaseSelectorEventLoop

from ..errors import HopTimeout, HopUnreachable
from ..sockstream import wait_ready, within

log = logging.getLogger("socksify.chain")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class HandoffImpossible(Exception):
    """The program's socket cannot be connected to hop 1 (another address family, or
    IPV6_V6ONLY against an IPv4 hop): carry this connection on the relay instead."""


MAX_ADDRESSES = 4      # of a hop's name, tried in turn
_AF_UNSPEC_ADDR = bytes(16)   # struct sockaddr with sa_family AF_UNSPEC


def disconnect(sock: socket.socket) -> None:
    """Dissolve a TCP socket's association (connect() to AF_UNSPEC): a connection the
    daemon made on the program's socket and could not finish is reset, and the socket
    can be connected again, as after a failed connect()."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.connect(sock.fileno(), _AF_UNSPEC_ADDR, len(_AF_UNSPEC_ADDR)) != 0:
        log.debug("disconnect fd %d: %s", sock.fileno(), errno.errorcode.get(
            ctypes.get_errno(), ctypes.get_errno()))


async def open_socket(host: str, port: int, timeout: float, what: str,
                      addrs: list[IPAddress] | None = None) -> socket.socket:
    """A new TCP socket of the daemon's, connected to host:port (to hop 1, or to a
    direct target), with the errors a program should see: ETIMEDOUT, or the kernel's
    errno. Each of host's addresses (up to MAX_ADDRESSES) is tried in turn."""
    if addrs is None:
        addrs = await resolve(host, port)
    failure: BaseException | None = None
    for addr in addrs[:MAX_ADDRESSES]:
        sock = socket.socket(socket.AF_INET6 if addr.version == 6 else socket.AF_INET,
                             socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await sock_connect(sock, host, port, timeout, what, [addr])
        except (HopTimeout, HopUnreachable) as exc:
            sock.close()
            if len(addrs) > 1:
                log.info("%s: address %s failed (%s)", what, addr, exc)
            failure = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    assert failure is not None
    raise failure


async def dial_hop(host: str, port: int, timeout: float, what: str, conn: str,
                   app_sock: socket.socket | None = None) -> socket.socket:
    """A connection to hop 1: on app_sock (handoff) if given, else on a new socket
    of the daemon's. A name is resolved here (the log says so, with its addresses),
    each address tried in turn; when all fail the name is resolved once more, and
    any address new in that answer is tried."""
    if parse_address(host) is not None:
        addrs = [ipaddress.ip_address(host)]
    else:
        addrs = await resolve(host, port)
        log.info("[%s] %s: name %s resolved here: %s", conn, what, host,
                 ", ".join(map(str, addrs)))
    try:
        return await _dial_each(host, port, timeout, what, addrs, app_sock)
    except (HopTimeout, HopUnreachable):
        if parse_address(host) is not None:
            raise
        again = [a for a in await resolve(host, port) if a not in addrs]
        if not again:
            raise
        log.info("[%s] %s: name %s resolved again: trying %s", conn, what, host,
                 ", ".join(map(str, again)))
        return await _dial_each(host, port, timeout, what, again, app_sock)


async def _dial_each(host: str, port: int, timeout: float, what: str,
                     addrs: list[IPAddress], app_sock: socket.socket | None
                     ) -> socket.socket:
    if app_sock is None:
        return await open_socket(host, port, timeout, what, addrs)
    failure: BaseException | None = None
    for addr in addrs[:MAX_ADDRESSES]:
        try:
            await sock_connect(app_sock, host, port, timeout, what, [addr])
        except HandoffImpossible as exc:      # another family than the program's
            failure = failure or exc
            continue
        except (HopTimeout, HopUnreachable) as exc:
            disconnect(app_sock)              # connectable again, as after a failure
            if len(addrs) > 1:
                log.info("%s: address %s failed (%s)", what, addr, exc)
            failure = exc
            continue
        return app_sock
    assert failure is not None
    raise failure


async def sock_connect(sock: socket.socket, host: str, port: int, timeout: float,
                       what: str, addrs: list[IPAddress] | None = None) -> None:
    """Connect a given socket (the program's, or one of the daemon's) to host:port
    (whose addresses may be known already), with open_socket's errors."""
    address = sockaddr_for(sock, host, port,
                           addrs if addrs is not None else await resolve(host, port))
    sock.setblocking(False)
    try:
        loop = asyncio.get_running_loop()
        if isinstance(loop, BaseSelectorEventLoop):
            await _connect_within(loop, sock, address, timeout)
        else:
            await within(_connect_to(sock, address), timeout)
    except asyncio.TimeoutError:
        raise HopTimeout(f"{what}: no TCP connection within {timeout:g}s",
                         hop=0) from None
    except OSError as exc:
        raise HopUnreachable(f"{what}: {exc.strerror or exc}", hop=0,
                             err=exc.errno or errno.ECONNREFUSED) from None


async def _connect_within(loop: BaseSelectorEventLoop, sock: socket.socket,
                          address: tuple[str, int] | tuple[str, int, int, int],
                          timeout: float) -> None:
    """A non-blocking connect to a numeric address and one wait for writability
    (sockstream.wait_ready): what loop.sock_connect() does inside a timeout context,
    without its address check, its future's done callback and the context. Any
    protocol (an MPTCP socket too: no address is looked up)."""
    err = sock.connect_ex(address)
    if err in (errno.EINPROGRESS, errno.EAGAIN, errno.EINTR):
        if not _connected_soon(sock, address):
            await wait_ready(loop, sock, True, loop.time() + timeout)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err != 0:
        raise OSError(err, os.strerror(err))


# A hop on this host or its link answers a SYN within tens of microseconds; sleeping
# in epoll for it costs the daemon a wake-up (a context switch and cold caches:
# far more CPU than the wait). So a connect polls for up to SPIN_SECONDS first, as
# long as the last one to that address was done within it; after a miss, the next
# SPIN_RETRY connects there sleep at once (a far hop costs one spin per SPIN_RETRY).
SPIN_SECONDS = 100e-6
SPIN_RETRY = 64
_spin_skip: dict[tuple[str, int], int] = {}


def _connected_soon(sock: socket.socket,
                    address: tuple[str, int] | tuple[str, int, int, int]) -> bool:
    """Whether sock's connect finished (or failed) within SPIN_SECONDS of polling."""
    key = (address[0], address[1])
    skip = _spin_skip.get(key, 0)
    if skip > 0 or not hasattr(select, "poll"):
        _spin_skip[key] = skip - 1
        return False
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLOUT)
    end = time.perf_counter() + SPIN_SECONDS
    while not poller.poll(0):
        if time.perf_counter() >= end:
            if len(_spin_skip) >= 4096:
                _spin_skip.clear()
            _spin_skip[key] = SPIN_RETRY
            return False
    return True


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


async def resolve(host: str, port: int, family: int = socket.AF_UNSPEC, hop: int = 0,
                  where: str = "") -> list[IPAddress]:
    """host's addresses for a stream: itself if it is one, else what the resolver
    here says for `family` (AF_UNSPEC: any; AF_INET for a hop that carries only IPv4),
    in its order. HopUnreachable naming `hop` (ChainError's index) when it has none;
    `where` goes into its message."""
    parsed = parse_address(host)
    if parsed is not None:
        return [parsed]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, family=family, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise HopUnreachable(f"{host}: cannot resolve{where} ({exc})", hop=hop,
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


@functools.lru_cache(maxsize=1024)
def parse_address(host: str) -> IPAddress | None:
    """host as an address, None for a name (cached: every connection asks this of its
    target and its hops several times)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_address(host: str) -> bool:
    return parse_address(host) is not None

"""Hop negotiation: connect to hop 1, then ask each hop for the next and the last
for the target, one SOCKS request at a time, reading exactly the replies."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from dataclasses import dataclass

from ..errors import HopProtocolError, HopRefused, HopTimeout, HopUnreachable, Unsupported
from ..protocol import socks4, socks5, socks5udp
from ..proxies import Proxy
from ..sockstream import RawStream, within
from .connect import is_address, open_socket, parse_address, sock_connect
from .spec import ChainSpec

log = logging.getLogger("socksify.chain")


def target_addr(host: str) -> str:
    """The target as the last hop is asked for it: IPv4-mapped IPv6 unwrapped."""
    addr = parse_address(host)
    if addr is None:
        return host
    if addr.version == 6 and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def _check_carriable(asker: Proxy, host: str, what: str) -> None:
    """Raise Unsupported (ENETUNREACH) if `asker` cannot be asked for host."""
    parsed = parse_address(host)
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
    if dns == "local" and not last.carries_names and not is_address(host):
        host = await _resolve_here(host, port, last)
    elif not last.carries_names and not is_address(host):
        raise Unsupported(f"the last hop {last} cannot carry the host name {host} "
                          "(SOCKS4): use a socks4a:// or socks5:// last hop, or set "
                          'dns = "local" to resolve names here')
    _check_carriable(last, host, f"{host}:{port}")
    return host


async def build(route: tuple[Proxy, ...], host: str, port: int, spec: ChainSpec,
                 conn: str, dns: str = "remote", app_sock: socket.socket | None = None,
                 start: RawStream | None = None) -> RawStream:
    """Connect to hop 1 (on app_sock, if given; else on a new socket of the daemon's)
    and ask each hop for the next, the last for host:port, reading exactly the
    replies. With `start`, the stream of a pre-built tunnel that already reaches the
    last hop: only the last request is left."""
    host = await final_target(route[-1], host, port, dns)
    first = route[0]
    if start is not None:
        stream = start
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
    if parse_address(hop.host) is not None:
        _check_carriable(asker, hop.host, f"hop {hop}")
        return hop.host
    if asker.carries_names:
        return hop.host
    infos = await asyncio.get_running_loop().getaddrinfo(
        hop.host, hop.port, family=socket.AF_INET, type=socket.SOCK_STREAM)
    return str(infos[0][4][0])


async def associate(stream: RawStream, route: tuple[Proxy, ...], index: int, host: str,
                    port: int, spec: ChainSpec) -> socks5.Reply:
    """Ask route[index] (a SOCKS5 hop that `stream` reaches) for a UDP association
    whose datagrams come from host:port; its reply names the relay (BND)."""
    step = _Step(stream, route[index], index, host, port, spec.read_timeout,
                 len(route), socks5udp.CMD_UDP_ASSOCIATE)
    return await step.socks5()


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
    command: int = socks5.CMD_CONNECT   # or UDP ASSOCIATE (chains/udp.py)

    @property
    def verb(self) -> str:
        return "CONNECT" if self.command == socks5.CMD_CONNECT else "UDP ASSOCIATE"

    @property
    def blame(self) -> int:
        return self.index + 1 if self.command == socks5.CMD_CONNECT else self.index

    @property
    def what(self) -> str:
        target = f"{self.host}:{self.port}"
        if self.command != socks5.CMD_CONNECT or self.blame >= self.route_len:
            return target
        return f"hop {self.blame + 1} {target}"

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

    async def socks5(self) -> socks5.Reply:
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
        await self.send(self.encode(socks5.ConnectRequest(self.host, self.port,
                                                          self.command)))
        try:
            head = await self.read(socks5.Reply.head_size, f"{self.verb} {self.what}")
            rest = await self.read(socks5.Reply.rest_size(head),
                                   f"{self.verb} {self.what}")
            reply = socks5.Reply.loads(head + rest)
        except socks5.ProtocolError as exc:
            raise self.broken(exc) from None
        if not reply.granted:
            raise HopRefused(f"{self.me}: {self.verb} {self.what} refused, code "
                             f"{reply.describe()}", hop=self.blame,
                             err=_SOCKS5_ERRNO.get(reply.code, errno.ECONNREFUSED))
        return reply

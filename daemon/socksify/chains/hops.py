"""Hop negotiation: connect to hop 1, then ask each hop for the next and the last
for the target, reading exactly the replies: one request at a time, or pipelined
(every request that needs no earlier reply sent at once; docs/data-path.md)."""

from __future__ import annotations

import logging
import socket
from typing import Callable

from ..errors import ChainError, Unsupported
from ..protocol import socks5, socks5udp
from ..proxies import Proxy
from ..sockstream import RawStream
from . import tlshop
from .connect import (HandoffImpossible, dial_hop, disconnect, is_address, parse_address,
                      resolve)
from .earlydata import EARLY_DATA, EarlyData
from .spec import ChainSpec
from .steps import Message, Step, suspects
from .streamauth import StreamAuth

log = logging.getLogger("socksify.chain")


def target_addr(host: str) -> str:
    """The target as the last hop is asked for it: IPv4-mapped IPv6 unwrapped."""
    addr = parse_address(host)
    if addr is None:
        return host
    if addr.version == 6 and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def _check_carriable(asker: Proxy, host: str, what: Callable[[], str]) -> None:
    """Raise Unsupported (ENETUNREACH) if `asker` cannot be asked for host; `what()`
    names it in the error (formatted only then: this runs per hop per connect)."""
    parsed = parse_address(host)
    if parsed is None:
        if not asker.carries_names:
            raise Unsupported(f"{asker} cannot be asked for the host name {what()} "
                              "(SOCKS4 carries only IPv4 addresses; use socks4a:// "
                              "or socks5://)") from None
        return
    if parsed.version == 6 and not asker.carries_ipv6:
        raise Unsupported(f"{what()} is IPv6 and {asker} ({asker.scheme}) carries only "
                          "IPv4")


async def final_target(route: tuple[Proxy, ...], host: str, port: int, dns: str) -> str:
    """The target as route's last hop will be asked for it (resolved here for dns =
    "local" on a hop that carries no names); Unsupported if it cannot be asked."""
    last = route[-1]
    if dns == "local" and not last.carries_names and not is_address(host):
        family = socket.AF_UNSPEC if last.carries_ipv6 else socket.AF_INET
        host = str((await resolve(host, port, family, len(route), " here"))[0])
    elif not last.carries_names and not is_address(host):
        raise Unsupported(f"the last hop {last} cannot carry the host name {host} "
                          "(SOCKS4): use a socks4a:// or socks5:// last hop, or set "
                          'dns = "local" to resolve names here')
    _check_carriable(last, host, lambda: f"{host}:{port}")
    return host


async def build(route: tuple[Proxy, ...], host: str, port: int, spec: ChainSpec,
                 conn: str, dns: str = "remote", app_sock: socket.socket | None = None,
                 start: RawStream | None = None,
                 auth: StreamAuth | None = None) -> RawStream:
    """Connect to hop 1 (on app_sock, if given; else on a new socket of the daemon's)
    and ask each hop for the next, the last for host:port, reading exactly the
    replies. With `start`, the stream of a pre-built tunnel that already reaches the
    last hop: only the last request is left. `auth`: stream isolation credentials for
    the SOCKS5 hops written without any."""
    host = await final_target(route, host, port, dns)
    if app_sock is not None and any(h.tls for h in route):
        raise HandoffImpossible("a TLS hop's session lives in the daemon")
    if start is None:
        return await open_chain(route, len(route), host, port, spec, conn, app_sock,
                                auth=auth)
    try:
        return await negotiate(start, route, len(route) - 1, len(route), host, port,
                               spec, conn, auth=auth)
    except BaseException:
        start.close()
        raise


async def open_chain(route: tuple[Proxy, ...], end: int, host: str, port: int,
                     spec: ChainSpec, conn: str, app_sock: socket.socket | None = None,
                     early: EarlyData = EARLY_DATA,
                     auth: StreamAuth | None = None) -> RawStream:
    """Connect to hop 1 and negotiate route[:end] (host:port is what the last of
    them is asked for). A pipelined negotiation that fails the way a hop mishandling
    early data would is tried once more, step by step, on a new connection; if that
    works, the hop is remembered and negotiated step by step from then on."""
    stream = await _connect_first(route[0], spec, conn, app_sock)
    try:
        return await negotiate(stream, route, 0, end, host, port, spec, conn,
                               early=early, auth=auth)
    except EarlyDataSuspect as exc:
        _drop(stream, app_sock)
        suspect = exc.suspects[-1]
        log.info("[%s] pipelined negotiation failed (%s); once more step by step",
                 conn, exc)
    except BaseException:
        stream.close()
        raise
    stream = await _connect_first(route[0], spec, conn, app_sock)
    try:
        stream = await negotiate(stream, route, 0, end, host, port, spec, conn,
                                 pipelined=False, early=early, auth=auth)
    except BaseException:
        stream.close()
        raise
    early.mark_stepwise(suspect)
    log.warning("[%s] hop %s mishandles early data (pipelined requests failed, step by "
                "step works): it is negotiated step by step from now on", conn, suspect)
    return stream


async def _connect_first(first: Proxy, spec: ChainSpec, conn: str,
                         app_sock: socket.socket | None) -> RawStream:
    if app_sock is not None:
        await dial_hop(first.host, first.port, spec.connect_timeout, f"hop 1 {first}",
                       conn, app_sock)
        return RawStream(app_sock, owned=False)
    return RawStream(await dial_hop(first.host, first.port, spec.connect_timeout,
                                    f"hop 1 {first}", conn), owned=True)


def _drop(stream: RawStream, app_sock: socket.socket | None) -> None:
    """Undo a connection to hop 1 so that it can be made again."""
    stream.close()
    if app_sock is not None:
        disconnect(app_sock)


class EarlyDataSuspect(ChainError):
    """A pipelined negotiation failed as a hop that mishandles early data would make
    it fail (no proper reply); `suspects` are the hops that had bytes behind their
    request, nearest the failure last. Otherwise the very error (hop, errno, text)."""

    def __init__(self, error: ChainError, suspects: list[Proxy]) -> None:
        super().__init__(str(error), error.hop, error.errno)
        self.suspects = suspects


async def negotiate(stream: RawStream, route: tuple[Proxy, ...],
                    begin: int, end: int, host: str, port: int, spec: ChainSpec,
                    conn: str, pipelined: bool | None = None,
                    early: EarlyData = EARLY_DATA,
                    auth: StreamAuth | None = None) -> RawStream:
    """Send the requests of route[begin:end] on a stream that already reaches
    route[begin]: each hop is asked for the next, the last hop of the route for
    host:port. Pipelined (spec.pipeline, unless `pipelined` says), every message
    that needs no earlier reply goes out at once and the replies are then checked in
    order, so the first failure is the one step by step would have met; a hop known
    to mishandle early data gets nothing past its request before its reply.
    Returns the stream to carry on: a TLS hop's session (tlshop.py) replaces it once
    every earlier reply is in; on failure that session is closed (and with it
    `stream`)."""
    pipelined = spec.pipeline if pipelined is None else pipelined
    wants = []
    for i in range(begin, end):
        if i + 1 < len(route):
            nxt = route[i + 1]
            want = _known_address(route[i], nxt)
            if want is None:
                want = await _hop_address(route[i], nxt, i + 1)
            if parse_address(want) is None:
                log.info("[%s] hop %d %s: name %s carried by hop %d (resolved there, "
                         "not here)", conn, i + 2, nxt, want, i + 1)
            wants.append((want, nxt.port))
        else:
            wants.append((host, port))
    first = stream
    run = _Run(stream, early, pipelined, conn)
    try:
        for i, (want_host, want_port) in zip(range(begin, end), wants):
            hop = route[i]
            if hop.tls:     # every earlier reply first: the handshake runs inside
                await run.flush()
                stream = run.stream = await tlshop.wrap(stream, hop, i,
                                                        spec.read_timeout, conn)
            step = Step(stream, hop, i, want_host, want_port, spec.read_timeout,
                        len(route), conn, early, auth)
            alone = not pipelined or early.stepwise(hop)
            for msg in step.messages(pipelined):
                run.add(msg)
                if alone or msg.barrier:
                    await run.flush()
        await run.flush()
    except BaseException:
        if stream is not first:
            stream.close()
        raise
    for hop in run.carried:
        early.mark_good(hop)
    return stream


class _Run:
    """Messages written and not yet answered; flush() sends them and checks each
    reply in order."""

    def __init__(self, stream: RawStream, early: EarlyData, pipelined: bool,
                 conn: str) -> None:
        self.stream = stream
        self.conn = conn
        self.early = early
        self.pipelined = pipelined
        self.pending: list[Message] = []
        self.carried: list[Proxy] = []     # hops that coped with bytes behind a request

    def add(self, msg: Message) -> None:
        self.stream.write(msg.data)
        self.pending.append(msg)

    async def flush(self) -> None:
        batch, self.pending = self.pending, []
        if not batch:
            return
        if len(batch) > 1 and log.isEnabledFor(logging.DEBUG):
            log.debug("[%s] %d messages at once, to hops %s", self.conn, len(batch),
                      ",".join(str(m.step.index + 1) for m in batch))
        n = 0
        stream = self.stream
        try:
            try:
                await stream.drain()
            except OSError as exc:
                raise batch[0].step.unsent(exc) from None
            for n, (msg, ahead) in enumerate(zip(batch, _ahead(batch))):
                stream.ahead = ahead
                await msg.check()
        except ChainError as exc:
            who = suspects(batch, n, self.early) if batch[n].step.broke else []
            if self.pipelined and who:
                raise EarlyDataSuspect(exc, who) from None
            raise
        finally:
            stream.ahead = 0
        self.carried += [m.step.hop for m in batch[:-1] if m.step.hop not in self.carried]


def _ahead(batch: list[Message]) -> list[int]:
    """Per message of a batch sent at once, the bytes at least that the replies right
    behind its own bring, when its reply and theirs may be waited for together
    (Message.least, Message.last): one wake-up for a pipelined chain's CONNECT
    replies, not one each, and a SOCKS5 CONNECT reply's with the next hop's greeting
    reply."""
    out, behind = [], 0
    for msg in reversed(batch):
        out.append(behind if msg.least and not msg.last else 0)
        if not msg.least:
            behind = 0
        elif msg.last:              # the run behind it may never come
            behind = msg.least
        else:
            behind += msg.least
    out.reverse()
    return out


async def associate(stream: RawStream, route: tuple[Proxy, ...], index: int, host: str,
                    port: int, spec: ChainSpec, conn: str = "-") -> socks5.Reply:
    """Ask route[index] (a SOCKS5 hop that `stream` reaches) for a UDP association
    whose datagrams come from host:port, step by step; its reply names the relay
    (BND)."""
    step = Step(stream, route[index], index, host, port, spec.read_timeout, len(route),
                conn, EARLY_DATA, command=socks5udp.CMD_UDP_ASSOCIATE)
    for msg in step.messages(pipelined=False):
        stream.write(msg.data)
        try:
            await stream.drain()
        except OSError as exc:
            raise step.unsent(exc) from None
        await msg.check()
    assert step.reply is not None
    return step.reply


def _known_address(asker: Proxy, hop: Proxy) -> str | None:
    """_hop_address without a wait, when nothing is to be resolved here (an address,
    or a name the asker carries); None otherwise."""
    if parse_address(hop.host) is not None:
        _check_carriable(asker, hop.host, lambda: f"hop {hop}")
        return hop.host
    return hop.host if asker.carries_names else None


async def _hop_address(asker: Proxy, hop: Proxy, index: int) -> str:
    """The address to ask `asker` for, to reach `hop` (route[index]): its name if the
    asker carries names, else its IPv4 address (resolved here: it is a proxy, not the
    target)."""
    if parse_address(hop.host) is not None:
        _check_carriable(asker, hop.host, lambda: f"hop {hop}")
        return hop.host
    if asker.carries_names:
        return hop.host
    found = str((await resolve(hop.host, hop.port, socket.AF_INET, index,
                               " here"))[0])
    log.info("hop %s: name %s resolved here for %s (which carries no names): %s",
             hop, hop.host, asker, found)
    return found

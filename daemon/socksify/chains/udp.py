"""UDP through a chain of SOCKS5 hops, hop by hop (RFC 1928 section 7).

Hop 1 is asked for a UDP association over a TCP control connection of its own; hop k
(k > 1) over a TCP tunnel built to it through hops 1..k-1, as a TCP connection would
be. Each datagram leaves this machine once, to hop 1's relay, wrapped in one SOCKS5
UDP header per remaining hop (socks5udp.wrap_layers): every hop unwraps one layer and
forwards to the next hop's relay, the last to the destination. Replies come back
wrapped likewise; each layer's source must be the relay we sent towards, else the
datagram is dropped (and counted), as is any with FRAG != 0.

The association lives as long as every control connection: the loss of one ends it
(`lost` is called with the reason). A chain with a hop that is not SOCKS5 (SOCKS4 and
4a have no UDP) or a hop that refuses UDP ASSOCIATE is refused: nothing is ever sent
around the chain.

The relay address (BND) a hop answers with is used as given, except when it is
0.0.0.0/:: (RFC 1928's "the address you reached the server on", which danted sends)
or, for hop 1, a loopback address while hop 1 is not on loopback (a server that
names its own internal address): then the hop's own address, with the port it gave.

For a datagram handoff (docs/wire.md, "Datagram handoff: WRAP"), open_association is
given the program socket's port: hop 1 is told the datagrams come from (the local
address of our control connection to hop 1, that port), and the daemon owns no UDP
socket: the program's socket sends to hop 1's relay itself."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Callable

from ..errors import HopUnreachable, Unsupported
from ..protocol import socks5, socks5udp
from ..proxies import Proxy
from ..sockstream import RawStream
from .connect import dial_hop, parse_address
from .hops import associate, build
from .spec import ChainSpec

log = logging.getLogger("socksify.udp")

Deliver = Callable[[str, int, bytes], None]     # source host, port, payload
_CACHED = 256          # headers made and sources read, kept per association
_IPV4_HEADER = 10      # RSV RSV FRAG ATYP, 4 address bytes, the port
Lost = Callable[[str], None]                    # why


@dataclass
class UdpCounters:
    sent: int = 0            # datagrams to the chain
    received: int = 0        # datagrams from it, delivered
    bytes_sent: int = 0      # payload bytes
    bytes_received: int = 0
    fragments: int = 0       # dropped: FRAG != 0
    bad: int = 0             # dropped: malformed, or a layer from an unexpected source
    errors: int = 0          # sends that failed (buffer full, ICMP errors)


def check_route(route: tuple[Proxy, ...]) -> None:
    """Unsupported unless every hop speaks SOCKS5 (the only one with UDP)."""
    for i, hop in enumerate(route):
        if hop.scheme != "socks5":
            raise Unsupported(f"hop {i + 1} {hop} speaks {hop.scheme}, "
                              "which has no UDP (every hop must be socks5://)",
                              errno.ENETUNREACH)


def relay_address(reply: socks5.Reply, hop: Proxy, index: int) -> tuple[str, int]:
    """Where hop `index`'s relay is reached (see the module's docstring)."""
    addr = parse_address(reply.host)
    if addr is None:
        return reply.host, reply.port
    if addr.is_unspecified:
        return hop.host, reply.port
    own = parse_address(hop.host)
    if index == 0 and addr.is_loopback and not (own is not None and own.is_loopback):
        return hop.host, reply.port
    return str(addr), reply.port


def _same(seen: tuple[str, int], relay: tuple[str, int]) -> bool:
    """Is a layer's source (as the previous hop saw it) the relay we sent to? Ports
    must match; addresses too when the relay is known by address."""
    if seen[1] != relay[1]:
        return False
    want, got = parse_address(relay[0]), parse_address(seen[0])
    if want is None or got is None:
        return True
    if want.version == 6 and want.ipv4_mapped is not None:
        want = want.ipv4_mapped
    if got.version == 6 and got.ipv4_mapped is not None:
        got = got.ipv4_mapped
    return want == got


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, assoc: UdpAssociation) -> None:
        self.assoc = assoc

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.assoc._received(data)

    def pause_writing(self) -> None:
        self.assoc.paused = True

    def resume_writing(self) -> None:
        self.assoc.paused = False

    def error_received(self, exc: Exception) -> None:
        self.assoc.counters.errors += 1
        log.debug("[%s] UDP error from hop 1's relay: %s", self.assoc.conn, exc)


@dataclass
class UdpAssociation:
    """A live association through `route`: `relays[k]` is hop k+1's relay as hop k
    (or this daemon, for hop 1) reaches it; `controls[k]` the TCP connection that
    holds hop k+1's association."""

    route: tuple[Proxy, ...]
    relays: list[tuple[str, int]]
    controls: list[RawStream]
    sock: socket.socket | None        # None: a datagram handoff, the program's socket
    conn: str = "-"
    setup_seconds: float = 0.0
    counters: UdpCounters = field(default_factory=UdpCounters)
    transport: asyncio.DatagramTransport | None = None
    _deliver: Deliver | None = None
    _lost: Lost | None = None
    _watchers: list[asyncio.Task[None]] = field(default_factory=list)
    closed: bool = False
    paused: bool = False           # the socket's send buffer is full
    # per datagram, no address is parsed or encoded in the usual case: the headers
    # before a payload to (host, port), made once; the relays' layers as a reply
    # brings them when every hop names the next relay as we do (None: never so);
    # and the last layer's bytes -> the source it names, for an IPv4 source
    _heads: dict[tuple[str, int], bytes] = field(default_factory=dict)
    _relay_layers: bytes | None = None
    _sources: dict[bytes, tuple[str, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            self._relay_layers = b"".join(socks5udp.wrap(h, p, b"")
                                          for h, p in self.relays[1:])
        except ValueError:
            self._relay_layers = None

    @property
    def describe(self) -> str:
        return " > ".join(str(h) for h in self.route)

    async def start(self, deliver: Deliver, lost: Lost) -> None:
        """Deliver each reply (its real source and payload); call `lost` once if a
        control connection ends."""
        self._deliver, self._lost = deliver, lost
        if self.sock is not None:
            loop = asyncio.get_running_loop()
            transport, _ = await loop.create_datagram_endpoint(lambda: _Receiver(self),
                                                               sock=self.sock)
            self.transport = transport
        for k, stream in enumerate(self.controls):
            self._watchers.append(asyncio.ensure_future(self._watch(k, stream)))

    def send(self, host: str, port: int, payload: bytes) -> bool:
        """One datagram to host:port through the chain (a name goes to the last hop,
        ATYP 3). False if it could not be sent (counted)."""
        if self.closed or self.transport is None:
            return False
        head = self._heads.get((host, port))
        if head is None:
            try:
                head = socks5udp.wrap_layers(self.relays[1:], host, port, b"")
            except ValueError:
                self.counters.bad += 1
                return False
            if len(self._heads) < _CACHED:
                self._heads[(host, port)] = head
        if self.paused:
            self.counters.errors += 1          # a datagram path drops, never queues
            return False
        self.transport.sendto(head + payload)
        self.counters.sent += 1
        self.counters.bytes_sent += len(payload)
        return True

    def _received(self, data: bytes) -> None:
        layers = self._relay_layers
        if layers is not None and data.startswith(layers):
            # every relay's layer is the one we expect: only the source's is read
            at = len(layers)
            source = self._sources.get(data[at:at + _IPV4_HEADER])
            if source is None:
                try:
                    head = socks5udp.read_header(data, at)
                except socks5udp.Fragmented:
                    self.counters.fragments += 1
                    return
                except socks5.ProtocolError:
                    self.counters.bad += 1
                    return
                source = (head.host, head.port)
                if head.size == _IPV4_HEADER and len(self._sources) < _CACHED:
                    self._sources[data[at:at + _IPV4_HEADER]] = source
                payload = data[at + head.size:]
            else:
                payload = data[at + _IPV4_HEADER:]
            self.counters.received += 1
            self.counters.bytes_received += len(payload)
            if self._deliver is not None:
                self._deliver(source[0], source[1], payload)
            return
        try:
            sources, payload = socks5udp.unwrap_layers(data, len(self.route))
        except socks5udp.Fragmented:
            self.counters.fragments += 1
            return
        except socks5.ProtocolError:
            self.counters.bad += 1
            return
        for seen, relay in zip(sources, self.relays[1:]):
            if not _same(seen, relay):
                self.counters.bad += 1
                log.debug("[%s] UDP layer from %s:%d, expected relay %s:%d: dropped",
                          self.conn, seen[0], seen[1], relay[0], relay[1])
                return
        self.counters.received += 1
        self.counters.bytes_received += len(payload)
        if self._deliver is not None:
            host, port = sources[-1]
            self._deliver(host, port, payload)

    async def _watch(self, k: int, stream: RawStream) -> None:
        """A control connection sends nothing after its reply: any byte, EOF or
        error means that hop's association is gone."""
        try:
            await stream.readexactly(1)
            why = "sent unexpected bytes on"
        except asyncio.IncompleteReadError:
            why = "closed"
        except OSError as exc:
            why = f"failed ({exc.strerror or exc}) on"
        hop = self.route[k]
        self._lose(f"hop {k + 1} {hop} {why} the control connection of its UDP "
                   "association")

    def _lose(self, why: str) -> None:
        if self.closed:
            return
        log.warning("[%s] UDP association through %s ended: %s", self.conn,
                    self.describe, why)
        lost = self._lost
        self.close()
        if lost is not None:
            lost(why)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        current = asyncio.current_task()
        for task in self._watchers:
            if task is not current:
                task.cancel()
        if self.transport is not None:
            self.transport.close()
        elif self.sock is not None:
            self.sock.close()
        for stream in self.controls:
            stream.close()


async def open_association(route: tuple[Proxy, ...], spec: ChainSpec,
                           conn: str = "-", client_port: int | None = None
                           ) -> UdpAssociation:
    """Associate with every hop of route, hop by hop. Raises Unsupported for a hop
    without UDP, a ChainError (HopRefused, ...) for one that refuses or fails.
    client_port: a datagram handoff's program socket port (no socket of our own)."""
    check_route(route)
    started = time.monotonic()
    controls: list[RawStream] = []
    relays: list[tuple[str, int]] = []
    sock: socket.socket | None = None
    try:
        for k, hop in enumerate(route):
            if k == 0:
                stream = RawStream(await dial_hop(hop.host, hop.port,
                                                  spec.connect_timeout, f"hop 1 {hop}",
                                                  conn), owned=True)
                controls.append(stream)
                src: tuple[str, int]
                if client_port is not None:
                    src = (stream.sock.getsockname()[0], client_port)
                else:
                    sock = socket.socket(stream.sock.family, socket.SOCK_DGRAM)
                    sock.setblocking(False)
                    sock.bind((stream.sock.getsockname()[0], 0))
                    src = sock.getsockname()[:2]
            else:
                # hop k's datagrams come from hop k-1's relay, whose address is its own
                controls.append(await build(route[:k], hop.host, hop.port, spec, conn))
                stream = controls[-1]
                src = ("0.0.0.0", 0)
            reply = await associate(stream, route, k, src[0], src[1], spec)
            relays.append(relay_address(reply, hop, k))
            log.debug("[%s] hop %d %s: UDP relay %s:%d", conn, k + 1, hop, *relays[-1])
        if sock is not None:
            await _connect(sock, relays[0])
    except BaseException:
        for stream in controls:
            stream.close()
        if sock is not None:
            sock.close()
        raise
    return UdpAssociation(route, relays, controls, sock, conn,
                          time.monotonic() - started)


async def _connect(sock: socket.socket, relay: tuple[str, int]) -> None:
    """Connect our UDP socket to hop 1's relay: the kernel then drops datagrams from
    anyone else."""
    host, port = relay
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, family=sock.family, type=socket.SOCK_DGRAM)
        sock.connect(infos[0][4])
    except OSError as exc:
        raise HopUnreachable(f"hop 1's UDP relay {host}:{port}: {exc}", hop=0,
                             err=errno.ENETUNREACH) from None


def handoff_prefixes(relays: list[tuple[str, int]], host: str, port: int
                     ) -> tuple[bytes, bytes, bytes] | None:
    """A datagram handoff's (send prefix, reply prefix, reply mask) for host:port
    through relays (docs/wire.md, "Datagram handoff: WRAP"): the layers for the relays
    after hop 1's and the destination's header before each datagram; replies carry the
    same layers, with each relay's address bytes masked out (a hop names the next
    relay as it sees it). None if a relay is known by name (its layer's length in a
    reply is not known) or host is not an address."""
    if parse_address(host) is None:
        return None
    prefix, mask = b"", b""
    for relay_host, relay_port in relays[1:]:
        if parse_address(relay_host) is None:
            return None
        layer = socks5udp.wrap(relay_host, relay_port, b"")
        keep = b"\xff" * 4 + bytes(len(layer) - 6) + b"\xff\xff"
        prefix += bytes(a & b for a, b in zip(layer, keep))
        mask += keep
    dest = socks5udp.wrap(host, port, b"")
    send = socks5udp.wrap_layers(relays[1:], host, port, b"")
    return send, prefix + dest, mask + b"\xff" * len(dest)

"""The UDP chain engine (chains/udp.py) against small scripted SOCKS5 hops on
loopback (no root, no lab): associations hop by hop, one header per remaining hop,
each reply layer's source checked, fragments counted, a lost control connection
reported. The lab tests (tests/integration/test_udp_chain.py) do the same through
real danted hops."""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

import pytest

from socksify.chains.spec import ChainSpec
from socksify.chains.udp import UdpAssociation, open_association
from socksify.errors import HopRefused
from socksify.protocol import socks5udp
from socksify.proxies import Proxy


class Hop:
    """A SOCKS5 server: CONNECT (a plain TCP relay) and UDP ASSOCIATE (a relay that
    answers BND 0.0.0.0, as danted does). `mangle` rewrites each reply it wraps."""

    def __init__(self, udp: bool = True, mangle: Any = None) -> None:
        self.udp, self.mangle = udp, mangle
        self.controls: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> Proxy:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        return Proxy("socks5", "127.0.0.1", self.server.sockets[0].getsockname()[1])

    async def serve(self, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        head = await reader.readexactly(2)
        await reader.readexactly(head[1])
        writer.write(b"\x05\x00")
        ver, cmd, _, atyp = await reader.readexactly(4)
        host = socket.inet_ntoa(await reader.readexactly(4))
        (port,) = struct.unpack("!H", await reader.readexactly(2))
        if cmd == 1:
            r2, w2 = await asyncio.open_connection(host, port)
            writer.write(b"\x05\x00\x00\x01" + bytes(4) + b"\0\0")
            await asyncio.gather(pipe(reader, w2), pipe(r2, writer))
            return
        if not self.udp:
            writer.write(b"\x05\x07\x00\x01" + bytes(6))
            writer.close()
            return
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Relay(self), local_addr=("127.0.0.1", 0))
        writer.write(b"\x05\x00\x00\x01" + bytes(4) + struct.pack(
            "!H", transport.get_extra_info("sockname")[1]))
        self.controls.append(writer)
        await reader.read()                  # the association lives with this
        transport.close()

    def close(self) -> None:
        for w in self.controls:
            w.close()
        if self.server is not None:
            self.server.close()


class _Relay(asyncio.DatagramProtocol):
    def __init__(self, hop: Hop) -> None:
        self.hop = hop
        self.client: tuple[str, int] | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.client is None or addr == self.client:
            self.client = addr
            host, port, payload = socks5udp.unwrap(data)
            self.transport.sendto(payload, (host, port))
            return
        reply = socks5udp.wrap(addr[0], addr[1], data)
        if self.hop.mangle is not None:
            reply = self.hop.mangle(reply)
        self.transport.sendto(reply, self.client)


async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    while data := await r.read(65536):
        w.write(data)
        await w.drain()
    w.close()


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)


async def scenario(hops: list[Hop], sends: int = 1) -> tuple[UdpAssociation,
                                                            list[Any], list[str]]:
    loop = asyncio.get_running_loop()
    echo, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    port = echo.get_extra_info("sockname")[1]
    route = tuple([await h.start() for h in hops])
    spec = ChainSpec("u", route, read_timeout=5.0)
    got: list[Any] = []
    lost: list[str] = []
    assoc = await open_association(route, spec, "t1")
    await assoc.start(lambda h, p, d: got.append((h, p, d)), lost.append)
    for i in range(sends):
        assoc.send("127.0.0.1", port, b"ping%d" % i)
    for _ in range(100):
        if len(got) >= sends:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    got[:] = [(h, p == port, d) for h, p, d in got]
    echo.close()
    return assoc, got, lost


@pytest.mark.parametrize("n", [1, 2, 3])
def test_hop_by_hop(n: int) -> None:
    async def main() -> None:
        hops = [Hop() for _ in range(n)]
        assoc, got, lost = await scenario(hops, sends=3)
        assert got == [("127.0.0.1", True, b"ping%d" % i) for i in range(3)]
        assert assoc.counters.sent == 3 and assoc.counters.received == 3
        assert all(r[0] == "127.0.0.1" for r in assoc.relays)   # 0.0.0.0 -> the hop
        assert len(assoc.controls) == n and not lost
        hops[-1].close()                 # the last hop drops its control connection
        for _ in range(100):
            if lost:
                break
            await asyncio.sleep(0.01)
        assert lost and f"hop {n} " in lost[0] and assoc.closed
        assert not assoc.send("127.0.0.1", 9, b"late")
        for h in hops:
            h.close()
    asyncio.run(main())


def _forge(reply: bytes) -> bytes:
    """Claim the reply came from another port than the next hop's relay."""
    head = socks5udp.read_header(reply)
    return socks5udp.wrap(head.host, head.port + 1, reply[head.size:])


def test_a_layer_from_another_source_is_dropped() -> None:
    async def main() -> None:
        hops = [Hop(mangle=_forge), Hop()]
        assoc, got, _ = await scenario(hops)
        assert got == [] and assoc.counters.bad == 1
        assoc.close()
        for h in hops:
            h.close()
    asyncio.run(main())


def test_fragments_are_dropped_and_counted() -> None:
    async def main() -> None:
        hops = [Hop(mangle=lambda r: r[:2] + b"\x01" + r[3:])]
        assoc, got, _ = await scenario(hops)
        assert got == [] and assoc.counters.fragments == 1
        assoc.close()
        hops[0].close()
    asyncio.run(main())


def test_a_fragment_after_known_replies_is_dropped() -> None:
    """The last hop marks every second reply a fragment: the replies before and after
    are delivered from their source (read once, then known), the fragments counted."""
    seen = [0]

    def every_second(reply: bytes) -> bytes:
        seen[0] += 1
        return reply[:2] + b"\x01" + reply[3:] if seen[0] % 2 == 0 else reply

    async def main() -> None:
        hops = [Hop(), Hop(), Hop(mangle=every_second)]
        assoc, got, _ = await scenario(hops, sends=4)
        assert got == [("127.0.0.1", True, b"ping0"), ("127.0.0.1", True, b"ping2")]
        assert assoc.counters.fragments == 2 and assoc.counters.received == 2
        assoc.close()
        for h in hops:
            h.close()
    asyncio.run(main())


def test_a_hop_refusing_udp_associate_refuses_the_chain() -> None:
    async def main() -> None:
        hops = [Hop(), Hop(udp=False)]
        with pytest.raises(HopRefused, match="hop 2 .*UDP ASSOCIATE.* refused"):
            await scenario(hops)
        for h in hops:
            h.close()
    asyncio.run(main())

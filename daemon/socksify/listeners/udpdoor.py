"""The front door's UDP ASSOCIATE (RFC 1928 section 7): a UDP port on loopback for
one client, its datagrams carried under the same policy as its TCP connections.

Each datagram is decided on its own destination: a chain rule with udp = "chain"
sends it through that chain's flow (core/udpflow.py: its UDP association, opened on
the first datagram that needs it and kept for the client's association); a rule that lets UDP
out directly (a direct rule, or udp = "direct") sends it from here; anything else is
dropped, logged once per rule and destination. Only datagrams from the TCP client's
address and the port it announced (if it announced 0: the port of its first datagram)
are taken; any other sender's are dropped (and counted). The association ends when the client closes its TCP connection, or with
an error (the TCP connection closed) when a chain it uses fails or refuses UDP:
nothing is then sent by any other way."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import time
from typing import Any

from ..chains import ChainSpec
from ..core.records import UdpFlow
from ..core.router import Router
from ..core.udpflow import ChainFlow
from ..errors import SocksifyError
from ..policy import Policy
from ..protocol import socks5, socks5udp

log = logging.getLogger("socksify.frontdoor")

QUEUE = 4096           # datagrams waiting for a chain's association to open
MAX_WARNED = 256       # refused destinations logged per association (then silence)


class UdpDoor:
    def __init__(self, router: Router, policy: Policy, flow: UdpFlow, client_ip: str,
                 client_port: int) -> None:
        self.router = router
        self.policy = policy
        self.flow = flow
        self.client_ip = ipaddress.ip_address(client_ip)
        self.client_port = client_port          # 0: any port of the client's address
        self.client_addr: tuple[str, int] | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.direct: asyncio.DatagramTransport | None = None
        self.chains: dict[str, ChainFlow] = {}
        self.queue: asyncio.Queue[tuple[str, int, bytes]] = asyncio.Queue(QUEUE)
        self.ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.warned: set[tuple[str, str]] = set()

    async def open(self, host: str) -> tuple[str, int]:
        """Bind the client's UDP port on the front door's loopback address."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Door(self), local_addr=(host, 0), family=family)
        self.transport = transport
        bound = transport.get_extra_info("sockname")
        return str(bound[0]), int(bound[1])

    def from_client(self, data: bytes, addr: tuple[str, int]) -> None:
        if ipaddress.ip_address(addr[0]) != self.client_ip or (
                self.client_port and addr[1] != self.client_port):
            self.flow.dropped += 1            # another sender: never ours to carry
            return
        self.client_addr = (addr[0], addr[1])
        self.client_port = addr[1]     # announced as 0: pinned to the first sender
        try:
            host, port, payload = socks5udp.unwrap(data)
        except socks5.ProtocolError:          # Fragmented too: no reassembly
            self.flow.dropped += 1
            return
        try:
            self.queue.put_nowait((host, port, payload))
        except asyncio.QueueFull:
            self.flow.dropped += 1

    def to_client(self, host: str, port: int, payload: bytes) -> None:
        if self.transport is None or self.client_addr is None:
            return
        self.transport.sendto(socks5udp.wrap(host, port, payload), self.client_addr)
        self.flow.came_down(len(payload))

    async def pump(self) -> None:
        while True:
            host, port, payload = await self.queue.get()
            if self.ended.done():
                return
            await self.forward(host, port, payload)

    async def forward(self, host: str, port: int, payload: bytes) -> None:
        try:
            addr: ipaddress.IPv4Address | ipaddress.IPv6Address | None = \
                ipaddress.ip_address(host)
            name = None
        except ValueError:
            addr, name = None, host.rstrip(".").lower()
        decision = self.policy.decide(self.flow.app, addr, port, name)
        if self.flow.host is None and self.flow.dst is None:   # shown in the table
            self.flow.dst, self.flow.port, self.flow.host = addr, port, name
            self.flow.rule = decision.rule
        action = decision.action
        if action.kind == "chain" and decision.udp == "chain":
            assert action.chain is not None
            chain = await self.chain(action.chain)
            if chain is not None:
                chain.send(host, port, payload)
            return
        if decision.udp_direct:
            await self.send_direct(host, port, payload)
            return
        self.flow.dropped += 1
        key = (decision.rule, f"{host}:{port}")
        if key not in self.warned and len(self.warned) < MAX_WARNED:
            self.warned.add(key)
            why = "a chain carries UDP only with udp = \"chain\" in its rule" \
                if action.kind == "chain" else "blocked"
            log.warning("[%s] UDP to %s:%d refused (%s [%s]): %s", self.flow.id, host,
                        port, action, decision.rule, why)

    async def chain(self, spec: ChainSpec) -> ChainFlow | None:
        """The flow through spec (its association opened now if this is its first
        datagram: core/udpflow.py); None once the door has ended (a failure to open
        ends it)."""
        chain = self.chains.get(spec.name)
        if chain is None:
            chain = ChainFlow(self.flow, spec, self.router.sessions.selector,
                              self.to_client, lambda err, why: self.end(why))
            self.chains[spec.name] = chain
        try:
            await chain.open()
        except SocksifyError as exc:
            self.end(f"UDP through chain {spec.name} refused: {exc}")
            return None
        return chain

    async def send_direct(self, host: str, port: int, payload: bytes) -> None:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            target = infos[0][4]
            if self.direct is None:
                self.direct, _ = await loop.create_datagram_endpoint(
                    lambda: _Direct(self), family=infos[0][0])
            self.direct.sendto(payload, target)
        except OSError as exc:
            self.flow.dropped += 1
            log.debug("[%s] UDP direct to %s:%d: %s", self.flow.id, host, port, exc)
            return
        self.flow.went_up(len(payload))

    def end(self, why: str) -> None:
        if not self.ended.done():
            self.ended.set_result(why)

    async def run(self, reader: asyncio.StreamReader) -> None:
        """Carry datagrams until the client's TCP connection ends or a chain fails."""
        pump = asyncio.ensure_future(self.pump())
        watch = asyncio.ensure_future(_until_eof(reader))
        try:
            waits: set[asyncio.Future[Any]] = {pump, watch, self.ended}
            await asyncio.wait(waits,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, watch):
                task.cancel()
            await asyncio.gather(pump, watch, return_exceptions=True)
            self.close()
        flow = self.flow
        took = time.monotonic() - flow.started
        if self.ended.done():
            why = self.ended.result()
            log.warning("[%s] %s UDP association ended with an error after %.1fs: %s",
                        flow.id, flow.app, took, why)
            raise SocksifyError(why, errno.ECONNRESET)
        log.info("[%s] %s UDP association closed after %.1fs: %d datagrams up "
                 "(%d bytes), %d down (%d bytes), %d dropped", flow.id, flow.app,
                 took, flow.datagrams_up, flow.counters.up, flow.datagrams_down,
                 flow.counters.down, flow.dropped)

    def close(self) -> None:
        for chain in self.chains.values():
            chain.close()
        self.chains.clear()
        for transport in (self.transport, self.direct):
            if transport is not None:
                transport.close()


class _Door(asyncio.DatagramProtocol):
    def __init__(self, door: UdpDoor) -> None:
        self.door = door

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.door.from_client(data, addr)


class _Direct(asyncio.DatagramProtocol):
    def __init__(self, door: UdpDoor) -> None:
        self.door = door

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.door.to_client(addr[0], addr[1], data)


async def _until_eof(reader: asyncio.StreamReader) -> None:
    """A UDP client's TCP connection carries nothing more: read (and drop) until it
    closes."""
    while await reader.read(4096):
        pass


async def hold(router: Router, flow: UdpFlow, door: UdpDoor,
               reader: asyncio.StreamReader) -> None:
    """Run the door as a live entry of the connection table (connections, status, the
    graceful stop)."""
    table = router.table
    task = asyncio.current_task()
    assert task is not None
    table.live[flow.id] = flow
    table.tasks.add(task)
    try:
        await door.run(reader)
    finally:
        table.live.pop(flow.id, None)
        table.tasks.discard(task)

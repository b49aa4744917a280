"""The carrier (listeners/carrier.py) without root or a shim: a Router with a Carrier
answers a datagram CONNECT under udp = "chain" with CARRY, and the carrier's loopback
port takes an enveloped datagram only with a known token, to the grant's destination,
from a socket of the grant's uid (the kernel's table is stubbed here: the real lookup
is tests/integration/test_udp_shim.py's). A SOCKS5 hop of a few lines with UDP
ASSOCIATE relays what it is given, so a taken datagram is seen to arrive."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import socket
import struct
from typing import Any

from socksify.core.router import Router
from socksify.generation import GenerationFile
from socksify.listeners.carrier import Carrier
from socksify.policy import Policy
from socksify.protocol import control as wire
from socksify.protocol.datagram import ENVELOPE_SIZE, Envelope, Kind

PID, UID = os.getpid(), os.getuid()
SESSION = bytes(wire.SESSION_SIZE)


class UdpHop:
    """SOCKS5 with UDP ASSOCIATE only: the relay sends each datagram's payload to its
    destination and wraps what comes back."""

    def __init__(self) -> None:
        self.port = 0
        self.relay: socket.socket | None = None

    async def handle(self, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(3)
        writer.write(b"\x05\x00")
        head = await reader.readexactly(4)
        await reader.readexactly(6 if head[3] == 1 else 18)
        assert head[1] == 3
        relay = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        relay.bind(("127.0.0.1", 0))
        relay.setblocking(False)
        self.relay = relay
        writer.write(b"\x05\x00\x00\x01" + socket.inet_aton("127.0.0.1")
                     + struct.pack("!H", relay.getsockname()[1]))
        loop = asyncio.get_running_loop()
        client: Any = None
        task = asyncio.ensure_future(reader.read(1))
        while not task.done():
            try:
                data, src = await asyncio.wait_for(loop.sock_recvfrom(relay, 65536), 0.2)
            except asyncio.TimeoutError:
                continue
            if src[0] == "127.0.0.1" and data[:3] == b"\0\0\0" and data[3] == 1:
                client = src
                dst = (socket.inet_ntoa(data[4:8]), struct.unpack("!H", data[8:10])[0])
                relay.sendto(data[10:], dst)
            elif client is not None:
                relay.sendto(b"\0\0\0\x01" + socket.inet_aton(src[0])
                             + struct.pack("!H", src[1]) + data, client)
        relay.close()
        writer.close()


def make(hop_port: int, scheme: str = "socks5") -> tuple[Router, Carrier, list[Any]]:
    gen = GenerationFile.__new__(GenerationFile)
    gen.value = 0x1234
    r = Router(gen)
    r.set_policy(Policy.parse(f'[chains.c]\nhops = ["{scheme}://127.0.0.1:{hop_port}"]\n'
                              '[[rules]]\naction = "chain:c"\nudp = "chain"\n', "p.toml"))
    owners: list[Any] = [UID]
    carrier = Carrier(r, lambda program, ours: owners[0])
    r.carry = carrier.grant
    return r, carrier, owners


async def ask(r: Router, addr: str, port: int) -> wire.Reply:
    req = wire.ConnectRequest(ipaddress.ip_address(addr), port, wire.SockType.DGRAM,
                              SESSION)
    reply, _ = await r.connect(req, PID, UID)
    return reply


def test_carry_answer_and_a_datagram_carried_and_answered() -> None:
    async def main() -> None:
        hop = UdpHop()
        server = await asyncio.start_server(hop.handle, "127.0.0.1", 0)
        echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        echo.bind(("127.0.0.1", 0))
        echo.setblocking(False)
        r, carrier, owners = make(server.sockets[0].getsockname()[1])
        port4, _ = await carrier.start()
        loop = asyncio.get_running_loop()
        prog = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        prog.bind(("127.0.0.1", 0))
        prog.setblocking(False)
        try:
            dest = echo.getsockname()
            reply = await ask(r, dest[0], dest[1])
            assert reply.verdict is wire.Verdict.CARRY
            assert reply.relay_port4 == port4 and reply.generation == 0x1234
            env = Envelope.data(ipaddress.ip_address(dest[0]), dest[1],
                                reply.carry_token)
            # wrong destination, unknown token, malformed, another uid: dropped
            wrong = Envelope.data(ipaddress.ip_address(dest[0]), dest[1] + 1,
                                  reply.carry_token)
            prog.sendto(wrong.wrap(b"x"), ("127.0.0.1", port4))
            prog.sendto(Envelope.data(env.addr, env.port, bytes(8)).wrap(b"x"),
                        ("127.0.0.1", port4))
            prog.sendto(b"SKDG junk", ("127.0.0.1", port4))
            owners[0] = UID + 1
            prog.sendto(env.wrap(b"not mine"), ("127.0.0.1", port4))
            await asyncio.sleep(0.3)
            assert dict(carrier.dropped) == {"another destination than the grant's": 1,
                                             "unknown token": 1, "malformed": 1,
                                             "a socket of another user": 1}
            assert not carrier.flows
            owners[0] = UID
            prog.sendto(env.wrap(b"hello"), ("127.0.0.1", port4))
            data, src = await asyncio.wait_for(loop.sock_recvfrom(echo, 100), 5)
            assert data == b"hello"
            echo.sendto(b"back", src)
            got, frm = await asyncio.wait_for(loop.sock_recvfrom(prog, 100), 5)
            assert frm == ("127.0.0.1", port4)
            back, payload = Envelope.loads(got)
            assert payload == b"back" and back.kind is Kind.DATA
            assert (str(back.addr), back.port) == dest
            assert back.token == reply.carry_token
            (flow,) = carrier.flows.values()
            assert flow.record.path == "carried" and flow.record.datagrams_up == 1
            assert flow.record.datagrams_down == 1
            assert r.table.live[flow.record.id] is flow.record
            assert len(got) == ENVELOPE_SIZE + 4
        finally:
            carrier.close()
            server.close()
            echo.close()
            prog.close()
    asyncio.run(asyncio.wait_for(main(), 20))


def test_a_chain_without_udp_is_refused_never_carried() -> None:
    async def main() -> None:
        r, carrier, _ = make(9, scheme="socks4")
        await carrier.start()
        try:
            reply = await ask(r, "203.0.113.9", 53)
            assert reply.verdict is wire.Verdict.FAIL
            assert reply.code is wire.Code.from_errno(errno.ENETUNREACH)
            assert len(carrier.grants) == 0
        finally:
            carrier.close()
    asyncio.run(asyncio.wait_for(main(), 20))


def test_an_association_that_fails_sends_one_error() -> None:
    async def main() -> None:
        with socket.socket() as s:        # a hop nobody listens on
            s.bind(("127.0.0.1", 0))
            dead = s.getsockname()[1]
        r, carrier, _ = make(dead)
        port4, _ = await carrier.start()
        loop = asyncio.get_running_loop()
        prog = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        prog.bind(("127.0.0.1", 0))
        prog.setblocking(False)
        try:
            reply = await ask(r, "203.0.113.9", 53)
            assert reply.verdict is wire.Verdict.CARRY
            env = Envelope.data(ipaddress.ip_address("203.0.113.9"), 53,
                                reply.carry_token)
            prog.sendto(env.wrap(b"q"), ("127.0.0.1", port4))
            got, _ = await asyncio.wait_for(loop.sock_recvfrom(prog, 100), 10)
            err, payload = Envelope.loads(got)
            assert err.kind is Kind.ERROR and payload == b""
            assert err.code is wire.Code.CONNREFUSED and err.token == reply.carry_token
            await asyncio.sleep(0.1)
            assert not carrier.flows and not r.table.live
        finally:
            carrier.close()
            prog.close()
    asyncio.run(asyncio.wait_for(main(), 20))


def test_grants_cap_generation_and_prune() -> None:
    from socksify.chains import ChainSpec
    from socksify.core.grants import Grants
    from socksify.procinfo import AppInfo

    chain = ChainSpec.__new__(ChainSpec)
    grants = Grants(max_per_uid=2)
    me = AppInfo(PID, "python", "", UID, "me", ())
    gone = AppInfo(2 ** 22 + 12345, "gone", "", UID + 1, "x", ())
    addr = ipaddress.ip_address("192.0.2.1")
    first, second, third = (grants.add(me, addr, p, None, "r", chain, None, 7)
                            for p in (1, 2, 3))
    assert grants.get(first.token, 7) is None          # the oldest of that uid went
    assert grants.get(third.token, 7) is third and grants.get(third.token, 8) is None
    dead = grants.add(gone, addr, 4, None, "r", chain, None, 7)
    used = grants.add(gone, addr, 5, None, "r", chain, None, 7)
    assert grants.prune(7, in_use={used.token}) == 1   # the dead process's unused one
    assert grants.get(dead.token, 7) is None and grants.get(used.token, 7) is used
    assert grants.prune(8, in_use=set()) == 3          # a new generation: all void
    assert len(grants) == 0 and second.port == 2

"""The isolated program's name server (isolation/nameserver.py) on loopback, asked by
dnspython's own client over UDP and TCP, with a fake Answerer that records what it
was asked: A/AAAA, other types, case, EDNS, truncation, TCP framing and pipelining,
malformed input, the limits in flight."""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
import struct
from typing import Any, Awaitable, Callable

import dns.asyncquery
import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest

from socksify.isolation import nameserver
from socksify.isolation.nameserver import Answer, Peer, Question

V4 = ipaddress.IPv4Address("240.0.0.7")
V6 = ipaddress.IPv6Address("fd53:4b46:5900::7")


class Fake:
    """Answers every name with V4 and V6 (forty.test and many.test with 40 and 200
    IPv4 addresses); "blocked.test" with NXDOMAIN; "boom.test" raises. Records each
    question and peer."""

    def __init__(self) -> None:
        self.asked: list[tuple[Question, Peer]] = []
        self.gate: asyncio.Event | None = None
        self.running = 0
        self.most = 0

    async def answer(self, question: Question, peer: Peer) -> Answer:
        self.asked.append((question, peer))
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            if self.gate is not None:
                await self.gate.wait()
        finally:
            self.running -= 1
        if question.name == "blocked.test":
            return Answer(dns.rcode.NXDOMAIN)
        if question.name == "boom.test":
            raise RuntimeError("the answerer broke")
        many = {"forty.test": 40, "many.test": 200}.get(question.name, 0)
        if many:
            return Answer(addresses=tuple(ipaddress.IPv4Address(f"10.0.{i // 250}."
                                                                f"{i % 250 + 1}")
                                          for i in range(many)))
        return Answer(addresses=(V4, V6), ttl=42)


Body = Callable[[int, int, Fake], Awaitable[None]]


def serve(body: Body, fake: Fake | None = None) -> Fake:
    """Run body(udp_port, tcp_port, fake) against both servers on 127.0.0.1 port 0;
    afterwards both are cancelled and must have closed their sockets."""
    fake = fake or Fake()

    async def main() -> None:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.bind(("127.0.0.1", 0))
        ports = udp.getsockname()[1], tcp.getsockname()[1]
        tasks = [asyncio.ensure_future(nameserver.serve_udp(udp, fake)),
                 asyncio.ensure_future(nameserver.serve_tcp(tcp, fake))]
        await asyncio.sleep(0.05)
        try:
            await asyncio.wait_for(body(*ports, fake), 20)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        assert udp.fileno() == -1 and tcp.fileno() == -1

    asyncio.run(main())
    return fake


def query(name: str, qtype: str = "A", **kw: Any) -> dns.message.Message:
    return dns.message.make_query(name, qtype, **kw)


async def udp_raw(port: int, data: bytes, timeout: float = 0.5) -> bytes | None:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        await loop.sock_connect(s, ("127.0.0.1", port))
        await loop.sock_sendall(s, data)
        try:
            return await asyncio.wait_for(loop.sock_recv(s, 65535), timeout)
        except asyncio.TimeoutError:
            return None


def addresses(reply: dns.message.Message) -> list[str]:
    return [rd.to_text() for rrset in reply.answer for rd in rrset]


def test_a_over_udp_and_aaaa_over_tcp_with_the_case_echoed() -> None:
    async def body(udp: int, tcp: int, fake: Fake) -> None:
        a = await dns.asyncquery.udp(query("Far.ExAmple.TEST"), "127.0.0.1", 2,
                                     port=udp)
        assert a.rcode() == dns.rcode.NOERROR and addresses(a) == [str(V4)]
        assert a.flags & dns.flags.RA   # else Go takes an empty answer as a lame referral
        assert a.answer[0].name.to_text() == "Far.ExAmple.TEST."   # 0x20 case kept
        assert a.answer[0].ttl == 42
        aaaa = await dns.asyncquery.tcp(query("far.example.test", "AAAA"), "127.0.0.1",
                                        2, port=tcp)
        assert aaaa.rcode() == dns.rcode.NOERROR and addresses(aaaa) == [str(V6)]

    fake = serve(body)
    assert [(q.name, q.qtype) for q, _ in fake.asked] == [
        ("far.example.test", dns.rdatatype.A), ("far.example.test", dns.rdatatype.AAAA)]
    assert [p.transport for _, p in fake.asked] == ["udp", "tcp"]
    assert all(p.host == "127.0.0.1" for _, p in fake.asked)


def test_other_types_errors_and_names_that_are_no_host_names() -> None:
    async def body(udp: int, tcp: int, fake: Fake) -> None:
        async def ask(q: dns.message.Message) -> dns.message.Message:
            return await dns.asyncquery.udp(q, "127.0.0.1", 2, port=udp)

        mx = await ask(query("far.test", "MX"))
        assert mx.rcode() == dns.rcode.NOERROR and not mx.answer   # no data
        assert (await ask(query("blocked.test"))).rcode() == dns.rcode.NXDOMAIN
        assert (await ask(query("boom.test"))).rcode() == dns.rcode.SERVFAIL
        assert (await ask(query("far.test", "ANY"))).rcode() == dns.rcode.NOTIMP
        chaos = dns.message.make_query("version.bind", "TXT", "CH")
        assert (await ask(chaos)).rcode() == dns.rcode.NOTIMP
        status = query("far.test")
        status.set_opcode(dns.opcode.STATUS)
        assert (await ask(status)).rcode() == dns.rcode.NOTIMP
        for odd in (dns.name.from_text(r"a\032b.test"), dns.name.from_text(r"a\.b.test"),
                    dns.name.from_text(r"\200.test"), dns.name.root,
                    dns.name.from_text("*.test"), dns.name.from_text("a*b.test")):
            q = dns.message.make_query(odd, "A")
            assert (await ask(q)).rcode() == dns.rcode.NXDOMAIN, odd

    fake = serve(body)
    # the odd names and the refused kinds were never handed to the answerer
    assert [q.name for q, _ in fake.asked] == ["far.test", "blocked.test", "boom.test"]


def test_several_questions_are_formerr() -> None:
    async def body(udp: int, tcp: int, fake: Fake) -> None:
        q = query("one.test")
        q.question.append(query("two.test").question[0])
        reply = await dns.asyncquery.udp(q, "127.0.0.1", 2, port=udp)
        assert reply.rcode() == dns.rcode.FORMERR   # RFC 9619

    assert not serve(body).asked


def test_edns_payload_truncation_and_tcp_carrying_the_whole() -> None:
    """40 addresses (about 680 bytes) fit the EDNS payload but not plain DNS's 512: TC
    without EDNS, the whole with it; 200 fit neither: TC (dnspython drops the whole
    RRset, as RFC 2181 9 asks), and TCP carries them all."""
    async def body(udp: int, tcp: int, fake: Fake) -> None:
        plain = await udp_raw(udp, query("forty.test").to_wire())
        assert plain is not None and len(plain) <= 512
        small = dns.message.from_wire(plain)
        assert small.flags & dns.flags.TC and small.id == struct.unpack("!H", plain[:2])[0]

        q = query("forty.test", use_edns=0, payload=4096)
        reply = await dns.asyncquery.udp(q, "127.0.0.1", 2, port=udp)
        assert not reply.flags & dns.flags.TC and len(addresses(reply)) == 40
        assert reply.edns == 0 and reply.payload == nameserver.MAX_UDP_REPLY

        q = query("many.test", use_edns=0, payload=4096)
        big = await udp_raw(udp, q.to_wire())
        assert big is not None and len(big) <= nameserver.MAX_UDP_REPLY
        reply = dns.message.from_wire(big)
        assert reply.flags & dns.flags.TC and reply.edns == 0
        whole = await dns.asyncquery.tcp(q, "127.0.0.1", 2, port=tcp)
        assert not whole.flags & dns.flags.TC and len(addresses(whole)) == 200

        newer = query("many.test", use_edns=1)
        reply = await dns.asyncquery.udp(newer, "127.0.0.1", 2, port=udp)
        assert reply.rcode() == dns.rcode.BADVERS

    serve(body)


def test_tcp_pipelined_queries_on_one_connection() -> None:
    async def body(udp: int, tcp: int, fake: Fake) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", tcp)
        queries = [query(f"n{i}.test") for i in range(5)]
        writer.write(b"".join(struct.pack("!H", len(w)) + w
                              for w in (q.to_wire() for q in queries)))
        ids = set()
        for _ in queries:
            size = struct.unpack("!H", await reader.readexactly(2))[0]
            reply = dns.message.from_wire(await reader.readexactly(size))
            assert addresses(reply) == [str(V4)]
            ids.add(reply.id)
        assert ids == {q.id for q in queries}
        writer.close()

    serve(body)


def test_malformed_input_is_dropped_or_formerr_and_the_server_goes_on() -> None:
    async def body(udp: int, tcp: int, fake: Fake) -> None:
        assert await udp_raw(udp, b"\x01\x02\x03") is None          # no header
        response = dns.message.make_response(query("x.test")).to_wire()
        assert await udp_raw(udp, response) is None                  # never answer one
        bad = struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0) + b"\x3fshort"
        reply = await udp_raw(udp, bad)
        assert reply is not None
        assert struct.unpack("!HH", reply[:4]) == (0x4242, 0x8100 | dns.rcode.FORMERR)
        huge = await udp_raw(udp, b"\0" * 9000)       # read up to MAX_QUERY + 1 bytes
        assert huge is not None and huge[3] & 0xF == dns.rcode.FORMERR
        # TCP: a zero length, a too large one, a half message: closed, nothing else
        for data in (b"\0\0", b"\xff\xff" + b"x" * 100, b"\0\x40" + b"\0" * 10):
            reader, writer = await asyncio.open_connection("127.0.0.1", tcp)
            writer.write(data)
            if data.startswith(b"\0\x40"):
                writer.write_eof()
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
        ok = await dns.asyncquery.udp(query("still.test"), "127.0.0.1", 2, port=udp)
        assert addresses(ok) == [str(V4)]
        ok = await dns.asyncquery.tcp(query("still.test"), "127.0.0.1", 2, port=tcp)
        assert addresses(ok) == [str(V4)]

    serve(body)


def test_random_and_mutated_messages_never_raise() -> None:
    rng = random.Random(15)
    seed = query("fuzz.example.test", "AAAA", use_edns=0).to_wire()
    peer = Peer("127.0.0.1", 1, "udp")

    async def main() -> None:
        fake = Fake()
        for i in range(3000):
            if i % 2:
                data = bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
            else:
                mutated = bytearray(seed)
                for _ in range(rng.randrange(1, 6)):
                    mutated[rng.randrange(len(mutated))] = rng.randrange(256)
                data = bytes(mutated[:rng.randrange(len(mutated) + 1)])
            out = await nameserver.reply(data, peer, fake, nameserver.MAX_UDP_REPLY)
            if out is not None:
                assert len(out) <= nameserver.MAX_UDP_REPLY
                assert out[:2] == data[:2]

    asyncio.run(main())


def test_queries_in_flight_per_peer_are_bounded() -> None:
    fake = Fake()

    async def body(udp: int, tcp: int, fake: Fake) -> None:
        fake.gate = asyncio.Event()
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            s.connect(("127.0.0.1", udp))
            for i in range(3 * nameserver.PER_PEER):
                s.send(query(f"q{i}.test").to_wire())
            await asyncio.sleep(0.5)
            assert fake.running == nameserver.PER_PEER   # the rest were dropped
            fake.gate.set()
            got = 0
            while True:
                try:
                    await asyncio.wait_for(loop.sock_recv(s, 65535), 1)
                except asyncio.TimeoutError:
                    break
                got += 1
            assert got == nameserver.PER_PEER
        fake.gate = None
        again = await dns.asyncquery.udp(query("after.test"), "127.0.0.1", 2, port=udp)
        assert addresses(again) == [str(V4)]

    serve(body, fake)
    assert fake.most == nameserver.PER_PEER


@pytest.mark.parametrize("family", [socket.AF_INET6])
def test_ipv6_udp_socket_on_the_wildcard_replies_from_the_asked_address(
        family: int) -> None:
    """A socket bound to [::] (dual stack) answers a query sent to ::1 and one sent to
    127.0.0.1 (v4-mapped), each from the address it was sent to: a redirected query's
    reply must come from where the query went, or conntrack cannot undo the redirect."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")

    async def main() -> None:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        try:
            sock.bind(("::", 0))
        except OSError as exc:
            pytest.skip(f"cannot bind [::]: {exc}")
        port = sock.getsockname()[1]
        task = asyncio.ensure_future(nameserver.serve_udp(sock, Fake()))
        try:
            for where in ("::1", "127.0.0.1"):
                reply = await dns.asyncquery.udp(query("far.test"), where, 2, port=port)
                assert addresses(reply) == [str(V4)]   # dnspython checks the source
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())


def test_a_socket_closed_under_the_server_does_not_break_the_next_one() -> None:
    """The daemon closes a namespace's sockets when its launcher ends, before the
    serving tasks have run their cancellation; the next namespace's sockets often get
    the same descriptor numbers, and must be served (an event loop registration left
    behind for the old number once broke every second isolated program's DNS)."""
    async def main() -> None:
        for round in range(3):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind(("127.0.0.1", 0))
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.bind(("127.0.0.1", 0))
            udp_port, tcp_port = udp.getsockname()[1], tcp.getsockname()[1]
            # served on descriptors of the server's own: what the caller holds is
            # closed (again, below) without harm
            tasks = [asyncio.ensure_future(nameserver.serve_udp(udp, Fake())),
                     asyncio.ensure_future(nameserver.serve_tcp(tcp, Fake()))]
            await asyncio.sleep(0.05)
            q = query(f"round{round}.test")
            reply = await dns.asyncquery.udp(q, "127.0.0.1", 2, port=udp_port)
            assert addresses(reply) == [str(V4)], round
            reply = await dns.asyncquery.tcp(q, "127.0.0.1", 2, port=tcp_port)
            assert addresses(reply) == [str(V4)], round
            udp.close()      # as Served.close(): the sockets first, then the tasks
            tcp.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())

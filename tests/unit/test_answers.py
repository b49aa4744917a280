"""The daemon's answers to an isolated program's DNS questions (isolation/answers.py)
with a real Router and policy, asked over the real name server by dnspython's client:
a proxied name gets a stand-in the router maps back to the name, a direct one real
addresses from the daemon's resolver, a blocked one NXDOMAIN; per-app rules apply."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
from typing import Awaitable, Callable

import dns.asyncquery
import dns.message
import dns.rcode
import pytest

from socksify.core.router import Router
from socksify.isolation import answers, nameserver
from socksify.isolation.answers import PolicyAnswerer
from socksify.isolation.nameserver import IPAddress, Peer
from socksify.policy import Policy
from socksify.procinfo import AppInfo
from socksify.protocol import control as wire

UID = os.getuid()
SESSION = bytes(wire.SESSION_SIZE)
REAL = [ipaddress.ip_address("192.0.2.10"), ipaddress.ip_address("2001:db8::10")]


def router() -> Router:
    r = Router()
    r.set_policy(Policy.parse("""\
[chains.c]
hops = ["socks5://127.0.0.1:9"]

[[rules]]
app = ["wget"]
dest = ["*.wget-blocked.example"]
action = "block"

[[rules]]
dest = ["*.blocked.example"]
action = "block"

[[rules]]
dest = ["*.local.example"]
action = "direct"

[default]
action = "chain:c"
""", "answers-test.toml"))
    r.hosts_names = frozenset({"in-hosts-file.example"})
    return r


def app(name: str = "busybox") -> AppInfo:
    return AppInfo(4242, name, f"/usr/bin/{name}", UID, "tester", ())


class Resolver:
    def __init__(self) -> None:
        self.asked: list[str] = []

    async def __call__(self, name: str) -> list[IPAddress]:
        self.asked.append(name)
        if name.startswith("missing."):
            raise answers.NameNotFound(name)
        return list(REAL)


Ask = Callable[[str, str], Awaitable[dns.message.Message]]


def served(r: Router, body: Callable[[Ask], Awaitable[None]], who: str = "busybox",
           session: bytes = SESSION, resolver: Resolver | None = None) -> None:
    async def identify(peer: Peer) -> AppInfo:
        assert peer.transport == "udp" and peer.host == "127.0.0.1"
        return app(who)

    answerer = PolicyAnswerer(r, session, UID, identify, resolver or Resolver())

    async def main() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        task = asyncio.ensure_future(nameserver.serve_udp(sock, answerer))

        async def ask(name: str, qtype: str = "A") -> dns.message.Message:
            return await dns.asyncquery.udp(dns.message.make_query(name, qtype),
                                            "127.0.0.1", 3, port=port)
        try:
            await asyncio.wait_for(body(ask), 20)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())


def addrs(reply: dns.message.Message) -> list[IPAddress]:
    return [ipaddress.ip_address(rd.to_text()) for rrset in reply.answer for rd in rrset]


def test_a_proxied_name_gets_stand_ins_the_router_maps_back() -> None:
    r = router()
    resolver = Resolver()

    async def body(ask: Ask) -> None:
        a = await ask("Far.Example", "A")
        aaaa = await ask("far.example", "AAAA")
        assert a.rcode() == dns.rcode.NOERROR and aaaa.rcode() == dns.rcode.NOERROR
        [v4], [v6] = addrs(a), addrs(aaaa)
        assert r.fake.is_fake(v4) and v4.version == 4
        assert r.fake.is_fake(v6) and v6.version == 6
        assert r.fake.name_for(v4, UID) == r.fake.name_for(v6, UID) == "far.example"
        assert r.fake.name_for(v4, UID + 1) is None      # the user's own table only
        assert addrs(await ask("FAR.example", "A")) == [v4]   # the same stand-in
        assert 0 < a.answer[0].ttl <= answers.STANDIN_TTL
        # the same decision as the shim's RESOLVE: same name, same address
        shim = r.resolve(wire.ResolveRequest("far.example", 4, SESSION), os.getpid(),
                         UID)
        assert wire.PeerReply.loads(shim).addr == v4

    served(r, body, resolver=resolver)
    assert resolver.asked == []   # a proxied name is never resolved here


def test_a_direct_name_gets_real_addresses_from_the_daemon() -> None:
    r = router()
    resolver = Resolver()

    async def body(ask: Ask) -> None:
        a = await ask("www.local.example", "A")
        assert addrs(a) == [REAL[0]] and a.answer[0].ttl == answers.DIRECT_TTL
        assert addrs(await ask("www.local.example", "AAAA")) == [REAL[1]]
        assert addrs(await ask("in-hosts-file.example", "A")) == [REAL[0]]
        gone = await ask("missing.local.example", "A")
        assert gone.rcode() == dns.rcode.NXDOMAIN
        local = await ask("localhost", "AAAA")
        assert addrs(local) == [ipaddress.ip_address("::1")]

    served(r, body, resolver=resolver)
    assert resolver.asked == ["www.local.example", "www.local.example",
                              "in-hosts-file.example", "missing.local.example"]
    assert len(r.fake) == 0


def test_a_blocked_name_is_nxdomain_and_per_app_rules_apply() -> None:
    r = router()

    async def as_wget(ask: Ask) -> None:
        assert (await ask("x.blocked.example", "A")).rcode() == dns.rcode.NXDOMAIN
        assert (await ask("x.blocked.example", "MX")).rcode() == dns.rcode.NXDOMAIN
        assert (await ask("x.wget-blocked.example", "A")).rcode() == dns.rcode.NXDOMAIN

    async def as_curl(ask: Ask) -> None:
        got = addrs(await ask("x.wget-blocked.example", "A"))
        assert len(got) == 1 and r.fake.is_fake(got[0])

    served(r, as_wget, who="wget")
    assert len(r.fake) == 0
    served(r, as_curl, who="curl")


def test_other_types_reserve_nothing_and_an_ended_session_is_refused() -> None:
    r = router()

    async def body(ask: Ask) -> None:
        mx = await ask("far.example", "MX")
        assert mx.rcode() == dns.rcode.NOERROR and not mx.answer
        https = await ask("www.local.example", "HTTPS")
        assert https.rcode() == dns.rcode.NOERROR and not https.answer

    resolver = Resolver()
    served(r, body, resolver=resolver)
    assert len(r.fake) == 0 and resolver.asked == []

    async def ended(ask: Ask) -> None:
        assert (await ask("far.example", "A")).rcode() == dns.rcode.REFUSED

    served(r, ended, session=b"\x01" * wire.SESSION_SIZE)


def test_no_stand_in_free_is_servfail() -> None:
    r = router()
    r.fake.configure(capacity=1, min_age=3600)

    async def body(ask: Ask) -> None:
        assert len(addrs(await ask("one.example", "A"))) == 1
        assert (await ask("two.example", "A")).rcode() == dns.rcode.SERVFAIL

    served(r, body)


def test_one_log_line_per_query(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "socksify.daemon")

    async def body(ask: Ask) -> None:
        await ask("far.example", "A")
        await ask("x.blocked.example", "AAAA")

    served(router(), body)
    lines = [rec.getMessage() for rec in caplog.records if " DNS " in rec.getMessage()]
    assert len(lines) == 2
    assert lines[0].startswith("[d") and "busybox[4242] DNS A far.example: stand-in " \
        "[default] -> NOERROR 240." in lines[0]
    assert "DNS AAAA x.blocked.example: blocked" in lines[1] and "NXDOMAIN" in lines[1]


def test_resolve_here_uses_the_daemons_resolver() -> None:
    got = asyncio.run(answers.resolve_here("localhost"))
    assert ipaddress.ip_address("127.0.0.1") in got   # /etc/hosts: no query sent

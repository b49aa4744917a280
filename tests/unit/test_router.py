"""The router's decisions (core/router.py), without root, namespaces or a shim: a
shim's CONNECT, RESOLVE and datagram requests are handed to a Router as the control
listener would, and its replies read as the shim would. The one hop is a SOCKS5
server of a few lines on loopback that records what it was asked for."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import socket
from typing import Any, Awaitable, Callable

import pytest

from socksify.core.router import Router
from socksify.policy import Policy
from socksify.protocol import control as wire

PID, UID = os.getpid(), os.getuid()
SESSION = bytes(wire.SESSION_SIZE)


def policy(hop_port: int = 9) -> Policy:
    return Policy.parse(f"""\
[chains.c]
hops = ["socks5://127.0.0.1:{hop_port}"]

[[rules]]
dest = ["192.0.2.0/24"]
action = "direct"
udp = "direct"

[[rules]]
dest = ["198.51.100.0/24", "*.blocked.example"]
action = "block"

[[rules]]
dest = ["*.local.example"]
action = "direct"

[default]
action = "chain:c"
""", "router-test.toml")


def router(hop_port: int = 9) -> Router:
    r = Router()
    r.set_policy(policy(hop_port))
    r.hosts_names = frozenset({"in-hosts-file.example"})
    return r


def connect_request(addr: str, port: int = 80, dgram: bool = False,
                    session: bytes = SESSION) -> wire.ConnectRequest:
    return wire.ConnectRequest(ipaddress.ip_address(addr), port,
                               wire.SockType.DGRAM if dgram else wire.SockType.STREAM,
                               session)


def resolve(r: Router, name: str, family: int = 4, uid: int = UID) -> bytes:
    request = wire.ResolveRequest(name, family, SESSION)
    return r.resolve(request, PID, uid)


async def connect(r: Router, addr: str, port: int = 80, dgram: bool = False,
                  uid: int = UID, session: bytes = SESSION) -> wire.Reply:
    reply, swap = await r.connect(connect_request(addr, port, dgram, session), PID, uid)
    assert swap is None
    return reply


def failed_with(reply: wire.Reply, err: int) -> bool:
    return reply.verdict is wire.Verdict.FAIL and reply.code is wire.Code.from_errno(err)


class Hop:
    """A SOCKS5 hop that grants every CONNECT and records the targets."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, int]] = []
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        try:
            ver, n = await reader.readexactly(2)
            await reader.readexactly(n)
            writer.write(b"\x05\x00")
            _, _, _, atyp = await reader.readexactly(4)
            if atyp == 3:
                host = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
            else:
                raw = await reader.readexactly(4 if atyp == 1 else 16)
                host = str(ipaddress.ip_address(raw))
            port = int.from_bytes(await reader.readexactly(2), "big")
            self.asked.append((host, port))
            writer.write(b"\x05\x00\x00\x01" + bytes(6))
            await writer.drain()
            await reader.read()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 20))


def with_hop(test: Callable[[Hop], Awaitable[None]]) -> None:
    """Run test(hop) in an event loop with the hop listening."""
    async def main() -> None:
        h = Hop()
        server = await asyncio.start_server(h.handle, "127.0.0.1", 0)
        h.port = server.sockets[0].getsockname()[1]
        try:
            await test(h)
        finally:
            server.close()
    run(main())


# ----- RESOLVE -------------------------------------------------------------------

def test_a_proxied_name_gets_a_stand_in_address_which_names_it_back() -> None:
    r = router()
    addr = wire.PeerReply.loads(resolve(r, "far.example")).addr
    assert r.fake.is_fake(addr)
    assert r.fake.name_for(addr, UID) == "far.example"
    six = wire.PeerReply.loads(resolve(r, "far.example", family=6)).addr
    assert six.version == 6 and r.fake.is_fake(six)
    # the same name, another user: another table, not this user's address
    assert r.fake.name_for(addr, UID + 1) is None


@pytest.mark.parametrize("name", ["in-hosts-file.example", "a.local.example"])
def test_names_that_need_no_chain_resolve_locally(name: str) -> None:
    assert wire.Reply.loads(resolve(router(), name)).verdict is wire.Verdict.DIRECT


def test_a_blocked_name_is_refused() -> None:
    assert failed_with(wire.Reply.loads(resolve(router(), "x.blocked.example")),
                       errno.EACCES)


def test_no_policy_refuses_every_lookup() -> None:
    r = Router()
    assert failed_with(wire.Reply.loads(resolve(r, "far.example")), errno.EACCES)


# ----- CONNECT -------------------------------------------------------------------

def test_a_direct_address_is_left_to_the_program() -> None:
    assert run(connect(router(), "192.0.2.7")).verdict is wire.Verdict.DIRECT


def test_a_blocked_address_fails_with_eacces() -> None:
    assert failed_with(run(connect(router(), "198.51.100.7")), errno.EACCES)


def test_an_unknown_session_is_refused() -> None:
    reply = run(connect(router(), "192.0.2.7", session=b"\x01" * wire.SESSION_SIZE))
    assert failed_with(reply, errno.EACCES)


def test_no_policy_refuses_every_connection() -> None:
    assert failed_with(run(connect(Router(), "192.0.2.7")), errno.EACCES)


def test_a_stand_in_of_another_user_or_never_handed_out_is_unreachable() -> None:
    r = router()
    addr = str(wire.PeerReply.loads(resolve(r, "far.example", uid=UID + 1)).addr)
    assert failed_with(run(connect(r, addr)), errno.EHOSTUNREACH)
    assert failed_with(run(connect(r, "240.0.0.200")), errno.EHOSTUNREACH)


def test_a_chained_connection_is_built_and_waits_for_the_relay() -> None:
    with_hop(_chained)


async def _chained(hop: Hop) -> None:
    r = router(hop.port)
    r.relay_ports = (40001, 40002)
    reply = await connect(r, "203.0.113.9", 443)
    assert reply.verdict is wire.Verdict.RELAY
    assert (reply.relay_port4, reply.relay_port6) == (40001, 40002)
    assert hop.asked == [("203.0.113.9", 443)]
    claimed = r.table.claim(reply.token)
    assert claimed is not None and claimed[0].route == f"socks5://127.0.0.1:{hop.port}"
    claimed[1].close()
    assert r.table.claim(reply.token) is None     # a token is good once


def test_a_stand_in_address_reaches_the_hop_as_its_name() -> None:
    """The promise of remote DNS: the program connects to the stand-in address and
    the last hop is asked for the name, never the address."""
    with_hop(_by_name)


async def _by_name(hop: Hop) -> None:
    r = router(hop.port)
    addr = str(wire.PeerReply.loads(resolve(r, "far.example")).addr)
    reply = await connect(r, addr, 8080)
    assert reply.verdict is wire.Verdict.RELAY
    assert hop.asked == [("far.example", 8080)]
    claimed = r.table.claim(reply.token)
    assert claimed is not None
    claimed[1].close()


def test_a_dead_hop_fails_the_connection_with_the_kernels_errno() -> None:
    with socket.socket() as s:        # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = router(port)
    assert failed_with(run(connect(r, "203.0.113.9")), errno.ECONNREFUSED)
    assert r.policy is not None and r.health.is_down(r.policy.chains["c"].hops[0])


# ----- datagrams -----------------------------------------------------------------

def test_udp_chain_without_a_carrier_is_refused(caplog: pytest.LogCaptureFixture
                                                ) -> None:
    """udp = "chain" is carried through the daemon's carrier (tests/unit/
    test_carrier.py); a router without one (no carrier port could be bound) answers
    EACCES, never DIRECT."""
    r = Router()
    r.set_policy(Policy.parse('[chains.c]\nhops = ["socks5://127.0.0.1:9"]\n'
                              '[[rules]]\naction = "chain:c"\nudp = "chain"\n', "p.toml"))
    with caplog.at_level(logging.WARNING):
        assert failed_with(run(connect(r, "203.0.113.9", 53, dgram=True)), errno.EACCES)
    assert 'UDP refused' in caplog.text


def test_udp_goes_direct_only_where_a_rule_says_so() -> None:
    r = router()
    assert run(connect(r, "192.0.2.7", 53, dgram=True)).verdict is wire.Verdict.DIRECT
    # a chain carries TCP only: refused, never sent around it
    assert failed_with(run(connect(r, "203.0.113.9", 53, dgram=True)), errno.EACCES)
    assert failed_with(run(connect(r, "198.51.100.7", 53, dgram=True)), errno.EACCES)

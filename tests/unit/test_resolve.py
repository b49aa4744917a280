"""chains: a name is resolved here in one way (connect.resolve), for hop 1, for a hop
that a SOCKS4 hop before it must be given as IPv4, and for the target on a last hop
that carries no names (dns = "local"): the family asked for, the order kept, and a
failure as HopUnreachable naming the hop (or the target: len(route)) it stops at.
The resolver is a stand-in on the event loop, which records what it was asked."""

from __future__ import annotations

import asyncio
import socket
from typing import Any, Coroutine, TypeVar

import pytest

from socksify.chains import connect, hops
from socksify.errors import HopUnreachable
from socksify.proxies import Proxy

T = TypeVar("T")
ANSWERS = {"two.test": ["192.0.2.7", "2001:db8::7"], "proxy.test": ["192.0.2.9"]}


class Resolver(asyncio.SelectorEventLoop):
    asked: list[tuple[str, int]] = []

    async def getaddrinfo(self, host: Any, port: Any, *, family: int = 0, type: int = 0,
                          proto: int = 0, flags: int = 0) -> list[Any]:
        Resolver.asked.append((host, family))
        found = [a for a in ANSWERS.get(host, [])
                 if family in (0, socket.AF_INET6 if ":" in a else socket.AF_INET)]
        if not found:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, type, 6, "",
                 (a, port)) for a in found]


def run(coro: Coroutine[Any, Any, T]) -> T:
    Resolver.asked = []
    with asyncio.Runner(loop_factory=Resolver) as runner:
        return runner.run(coro)


def test_resolve_asks_for_the_family_and_keeps_the_order() -> None:
    addrs = run(connect.resolve("two.test", 1080))
    assert [str(a) for a in addrs] == ["192.0.2.7", "2001:db8::7"]
    assert Resolver.asked == [("two.test", socket.AF_UNSPEC)]
    addrs = run(connect.resolve("two.test", 1080, socket.AF_INET))
    assert [str(a) for a in addrs] == ["192.0.2.7"]
    # an address is itself, unasked
    assert [str(a) for a in run(connect.resolve("::1", 1))] == ["::1"]
    assert Resolver.asked == []


def test_a_failure_names_the_hop() -> None:
    with pytest.raises(HopUnreachable) as exc:
        run(connect.resolve("gone.test", 1080, hop=2, where=" here"))
    assert exc.value.hop == 2 and "gone.test: cannot resolve here" in str(exc.value)


def test_socks4_asker_gets_an_ipv4_address_of_the_next_hop() -> None:
    s4 = Proxy.parse("socks4://10.0.0.1:1080")
    nxt = Proxy.parse("socks5://proxy.test:1080")
    assert run(hops._hop_address(s4, nxt, 1)) == "192.0.2.9"
    assert Resolver.asked == [("proxy.test", socket.AF_INET)]
    s5 = Proxy.parse("socks5://10.0.0.1:1080")
    assert run(hops._hop_address(s5, nxt, 1)) == "proxy.test"     # carried, not here
    gone = Proxy.parse("socks5://gone.test:1080")
    with pytest.raises(HopUnreachable) as exc:
        run(hops._hop_address(s4, gone, 1))
    assert exc.value.hop == 1


def test_dns_local_target_on_a_socks4_last_hop() -> None:
    route = (Proxy.parse("socks5://10.0.0.1:1080"), Proxy.parse("socks4://10.0.0.2:1080"))
    assert run(hops.final_target(route, "two.test", 80, "local")) == "192.0.2.7"
    assert Resolver.asked == [("two.test", socket.AF_INET)]
    with pytest.raises(HopUnreachable) as exc:
        run(hops.final_target(route, "gone.test", 80, "local"))
    assert exc.value.hop == len(route)          # the target, not a hop, failed

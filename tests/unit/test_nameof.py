"""NAMEOF (docs/wire.md) in the daemon's router: a stand-in address is named, a loopback or
direct address may be reverse-resolved locally, anything else is refused."""

from __future__ import annotations

import ipaddress
import os
import pytest

from socksify.core.router import Router
from socksify.policy import Policy
from socksify.protocol import control as wire

POLICY = """\
[chains.c]
hops = ["socks5://10.0.0.1:1080"]

[[rules]]
dest = ["192.0.2.0/24"]
action = "direct"

[[rules]]
dest = ["203.0.113.0/24"]
action = "block"

[default]
action = "chain:c"
"""


@pytest.fixture
def daemon() -> Router:
    d = Router()
    d.policy = Policy.parse(POLICY, "p.toml")
    return d


def ask(d: Router, addr: str, session: bytes = bytes(8)) -> bytes:
    req = wire.ConnectRequest.loads(wire.ConnectRequest(
        ipaddress.ip_address(addr), 0, session=session, op=wire.Op.NAMEOF).dumps())
    return d.name_of(req, os.getpid(), os.getuid())


def verdict(raw: bytes) -> wire.Verdict:
    return wire.Reply.loads(raw).verdict


def test_stand_in_addresses_are_named(daemon: Router) -> None:
    a4 = daemon.fake.address_for("far.example", 4, os.getuid())
    a6 = daemon.fake.address_for("far6.example", 6, os.getuid())
    assert wire.NameReply.loads(ask(daemon, str(a4))) == wire.NameReply("far.example")
    assert wire.NameReply.loads(ask(daemon, str(a6))).name == "far6.example"
    # in the range but never handed out: refused, never a local query
    assert verdict(ask(daemon, "240.0.0.200")) is wire.Verdict.FAIL


@pytest.mark.parametrize("addr,want", [
    ("127.0.0.1", wire.Verdict.DIRECT), ("::1", wire.Verdict.DIRECT),
    ("192.0.2.7", wire.Verdict.DIRECT),       # direct by policy
    ("198.51.100.7", wire.Verdict.FAIL),      # proxied: a PTR query would leak it
    ("203.0.113.7", wire.Verdict.FAIL),       # blocked
    ("2001:db8::7", wire.Verdict.FAIL),
])
def test_policy_decides_real_addresses(daemon: Router, addr: str,
                                       want: wire.Verdict) -> None:
    assert verdict(ask(daemon, addr)) is want


def test_no_policy_or_unknown_session_refuses(daemon: Router) -> None:
    assert verdict(ask(daemon, "192.0.2.7", session=b"\x01" * 8)) is wire.Verdict.FAIL
    daemon.policy = None
    assert verdict(ask(daemon, "192.0.2.7")) is wire.Verdict.FAIL
    assert verdict(ask(daemon, "127.0.0.1")) is wire.Verdict.DIRECT

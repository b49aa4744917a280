"""The SOCKS5 UDP header (protocol/socks5udp.py) against the shared vectors
(tests/vectors/socks5udp.txt), and the chain engine's pure parts: which relay address
is used, and which layer sources are accepted (chains/udp.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from socksify.chains.udp import _same, check_route, relay_address
from socksify.errors import Unsupported
from socksify.protocol import socks5, socks5udp
from socksify.proxies import Proxy

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "socks5udp.txt"


def vectors(kind: str) -> list[dict[str, str]]:
    out = []
    for line in VECTORS.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        k, name, *fields = line.split()
        if k == kind:
            out.append({"name": name, **dict(f.split("=", 1) for f in fields)})
    return out


def payload(v: dict[str, str]) -> bytes:
    return b"" if v["payload"] == "-" else bytes.fromhex(v["payload"])


def test_vectors_present() -> None:
    assert len(vectors("header")) >= 4 and len(vectors("layers")) >= 2
    assert len(vectors("bad")) >= 5


@pytest.mark.parametrize("v", vectors("header"), ids=lambda v: v["name"])
def test_header(v: dict[str, str]) -> None:
    data = bytes.fromhex(v["hex"])
    assert socks5udp.wrap(v["host"], int(v["port"]), payload(v)) == data
    assert socks5udp.unwrap(data) == (v["host"], int(v["port"]), payload(v))


@pytest.mark.parametrize("v", vectors("layers"), ids=lambda v: v["name"])
def test_layers(v: dict[str, str]) -> None:
    relays = [(h, int(p)) for h, p in (r.rsplit(":", 1) for r in v["relays"].split(","))]
    data = bytes.fromhex(v["hex"])
    assert socks5udp.wrap_layers(relays, v["host"], int(v["port"]), payload(v)) == data
    sources, body = socks5udp.unwrap_layers(data, len(relays) + 1)
    assert sources == [*relays, (v["host"], int(v["port"]))] and body == payload(v)


@pytest.mark.parametrize("v", vectors("bad"), ids=lambda v: v["name"])
def test_bad(v: dict[str, str]) -> None:
    expected = socks5udp.Fragmented if v["name"] == "fragment" else socks5.ProtocolError
    with pytest.raises(expected):
        socks5udp.unwrap(bytes.fromhex(v["hex"]))


def test_fewer_layers_than_asked_is_malformed() -> None:
    one = socks5udp.wrap("192.0.2.1", 53, b"")
    with pytest.raises(socks5.ProtocolError):
        socks5udp.unwrap_layers(one, 2)


def test_associate_request() -> None:
    """The request the chain engine sends (chains/hops.py associate: a SOCKS5 request
    with command 3)."""
    request = socks5.ConnectRequest("0.0.0.0", 0, socks5udp.CMD_UDP_ASSOCIATE)
    assert request.dumps() == bytes.fromhex("05030001000000000000")


HOP = Proxy.parse("socks5://198.51.100.4:1080")


@pytest.mark.parametrize("bnd,index,relay", [
    ("0.0.0.0", 0, "198.51.100.4"),        # "the address you reached me on"
    ("::", 1, "198.51.100.4"),
    ("127.0.0.1", 0, "198.51.100.4"),      # its own loopback: unreachable from us
    ("127.0.0.1", 1, "127.0.0.1"),         # for the hop before it, maybe not
    ("203.0.113.9", 0, "203.0.113.9"),     # another address: as given
])
def test_relay_address(bnd: str, index: int, relay: str) -> None:
    assert relay_address(socks5.Reply(0, bnd, 40000), HOP, index) == (relay, 40000)


def test_layer_source_check() -> None:
    assert _same(("10.0.0.2", 40000), ("10.0.0.2", 40000))
    assert _same(("::ffff:10.0.0.2", 40000), ("10.0.0.2", 40000))
    assert not _same(("10.0.0.2", 40001), ("10.0.0.2", 40000))
    assert not _same(("10.0.0.9", 40000), ("10.0.0.2", 40000))
    assert _same(("10.0.0.9", 40000), ("relay.example", 40000))   # a name: port only


@pytest.mark.parametrize("url", ["socks4://10.0.0.1:1080", "socks4a://10.0.0.1:1080"])
def test_a_hop_without_udp_refuses_the_chain(url: str) -> None:
    with pytest.raises(Unsupported, match="hop 2 .* no UDP"):
        check_route((HOP, Proxy.parse(url)))
    check_route((HOP, HOP))

"""Mixed hop protocols through real danted hops (it speaks SOCKS4 and SOCKS5 on one
port), and destinations a chain cannot carry."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

import lab as lablib

pytestmark = pytest.mark.lab


def test_socks4_then_socks5_hops(lab: lablib.Lab, sk, tmp_path: Path) -> None:
    """hop1 asked in SOCKS4 for hop2, hop2 and hop3 in SOCKS5: the file arrives intact
    and every hop logged its tunnel (danted logs the protocol of each request)."""
    m = f"s5-{os.urandom(4).hex()}"
    out = tmp_path / "big.bin"
    via = [lab.hops[0].url] + [f"socks5://{h.host}:{h.port}" for h in lab.hops[1:]]
    before = lab.hop_connects()
    res = sk.run(["curl", "-q", "-sS", "--max-time", "60", "-o", str(out),
                  lab.url("big.bin", m)], via=via, opts=["-v"])
    assert res.returncode == 0, sk.describe(res)
    assert lablib.sha256_file(out) == lab.big_sha256
    targets = lab.hop_targets_since(before)
    assert lab.hop_addr(2) in targets[0] and lab.hop_addr(3) in targets[1], targets
    assert lab.far_http_addr in targets[2], targets
    assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]
    assert "socks5://" in res.stderr, res.stderr  # -v names each hop with its protocol


def test_socks5_refusal_maps_to_errno(lab: lablib.Lab, sk) -> None:
    """A SOCKS5 last hop asked for a port where nothing listens answers 'connection
    refused' (or a general failure): the app sees ECONNREFUSED, not a hang."""
    c = sk.client("connect", lab.far_ip, "9", via=[f"socks5://{lab.hops[0].host}:"
                                                    f"{lab.hops[0].port}"])
    assert not c.ok and c["errno"] == errno.ECONNREFUSED, c.describe()


def test_ipv6_destination_on_socks4_chain_is_unreachable(lab: lablib.Lab, sk) -> None:
    """SOCKS4 cannot carry an IPv6 address: ENETUNREACH, and nothing goes direct."""
    before = lab.hop_connects()
    c = sk.client("connect", "2001:db8::77", "80", via=sk.hops(2))
    assert not c.ok and c["errno"] == errno.ENETUNREACH, c.describe()
    assert "carries only IPv4" in sk.daemon_log(), sk.daemon_log()
    assert lab.hop_connects() == before

"""HTTP CONNECT hops through a real proxy (Debian's tinyproxy, started here in the
proxy zone with its own config): first, middle and last in a chain, mixed with the
lab's danted SOCKS hops, with and without Basic auth; a refused password is EACCES
with the 407 in the daemon log; host names travel in CONNECT, never through DNS."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Iterator

import pytest

import lab as lablib
from conftest import assert_errno, need
from httpproxy import TINYPROXY, TinyProxy

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def tiny(lab: lablib.Lab) -> Iterator[TinyProxy]:
    need(TINYPROXY)
    proxy = TinyProxy.start(lab)
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture(scope="module")
def tiny_auth(lab: lablib.Lab) -> Iterator[TinyProxy]:
    need(TINYPROXY)
    proxy = TinyProxy.start(lab, "alice", "s3cret-" + os.urandom(3).hex())
    try:
        yield proxy
    finally:
        proxy.close()


def marker(name: str) -> str:
    return f"{name}-{os.urandom(4).hex()}"


def curl(out: Path, url: str) -> list[str]:
    return ["curl", "-q", "-sS", "--connect-timeout", "20", "--max-time", "60", "-o",
            str(out), url]


def socks5(hop: lablib.Hop) -> str:
    return f"socks5://{hop.host}:{hop.port}"


def test_http_hop_alone(lab: lablib.Lab, sk, tiny: TinyProxy, tmp_path: Path) -> None:
    """One HTTP hop (first and last): the download is intact, tinyproxy opened the
    tunnel to the far server, which saw the proxy zone's address."""
    m = marker("http1")
    out = tmp_path / "big.bin"
    before = len(tiny.connects())
    res = sk.run(curl(out, lab.url("big.bin", m)), via=[tiny.url()])
    assert res.returncode == 0, sk.describe(res)
    assert lablib.sha256_file(out) == lab.big_sha256
    assert tiny.connects()[before:] == [f"{lab.far_ip}:{lab.http_port}"], tiny.read_log()
    assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]


def test_http_first_with_auth_then_socks(lab: lablib.Lab, sk, tiny_auth: TinyProxy,
                                         tmp_path: Path) -> None:
    """http (Basic auth) first, then a danted SOCKS5 hop that reaches the target."""
    m = marker("httpfirst")
    out = tmp_path / "small.bin"
    before, hop_before = len(tiny_auth.connects()), lab.hop_connects()
    res = sk.run(curl(out, lab.url("small.bin", m)),
                 via=[tiny_auth.url(), socks5(lab.hops[2])])
    assert res.returncode == 0, sk.describe(res)
    assert lablib.sha256_file(out) == lab.small_sha256
    hop3 = lab.hops[2]
    assert tiny_auth.connects()[before:] == [f"{hop3.host}:{hop3.port}"]
    lab.wait_hop_connects(hop_before, [0, 0, 1])
    assert lab.hop_targets_since(hop_before)[2] == [lab.far_http_addr]


def test_socks4_http_socks5_by_name_without_dns(lab: lablib.Lab, sk,
                                                 tiny_auth: TinyProxy,
                                                 tmp_path: Path) -> None:
    """curl by host name through socks4 -> http (auth, middle) -> socks5: the name is
    resolved by the last hop in the proxy zone; the client zone's resolver sees no
    query at all."""
    m = marker("mixed")
    out = tmp_path / "small.bin"
    queries, before = len(lab.dns.seen()), len(tiny_auth.connects())
    hop_before = lab.hop_connects()
    via = [lab.hops[0].url, tiny_auth.url(), socks5(lab.hops[2])]
    res = sk.run(curl(out, lab.far_url("small.bin", m)), via=via, opts=["-v"])
    assert res.returncode == 0, sk.describe(res)
    assert lablib.sha256_file(out) == lab.small_sha256
    hop3 = lab.hops[2]
    assert tiny_auth.connects()[before:] == [f"{hop3.host}:{hop3.port}"]
    lab.wait_hop_connects(hop_before, [1, 0, 1])
    targets = lab.hop_targets_since(hop_before)
    assert targets[0] == [f"{lablib.PROXY_NEAR_IP}.{tiny_auth.port}"]
    assert targets[2] == [lab.far_http_addr]
    assert lab.dns.seen()[queries:] == []


def test_http_last_carries_the_name(lab: lablib.Lab, sk, tiny_auth: TinyProxy,
                                    tmp_path: Path) -> None:
    """socks4 -> http (last): the target's name goes in CONNECT host:port (tinyproxy
    resolves it in the proxy zone); no DNS query in the client zone."""
    m = marker("httplast")
    out = tmp_path / "small.bin"
    queries, before = len(lab.dns.seen()), len(tiny_auth.connects())
    res = sk.run(curl(out, lab.far_url("small.bin", m)),
                 via=[lab.hops[0].url, tiny_auth.url()])
    assert res.returncode == 0, sk.describe(res)
    assert lablib.sha256_file(out) == lab.small_sha256
    assert tiny_auth.connects()[before:] == [f"{lablib.FAR_NAME}:{lab.http_port}"]
    assert lab.dns.seen()[queries:] == []


@pytest.mark.parametrize("how", ["wrong", "none"])
def test_refused_credentials_are_eacces_with_the_status_logged(
        lab: lablib.Lab, sk, tiny_auth: TinyProxy, how: str) -> None:
    """A wrong password (tinyproxy answers 401) or none at all (407): EACCES, and the
    daemon log says why with the status line."""
    m = marker("badpw")
    before = len(tiny_auth.connects())
    url = tiny_auth.url(password="wrong") if how == "wrong" \
        else f"http://{lablib.PROXY_NEAR_IP}:{tiny_auth.port}"
    c = sk.client("rawfetch", lab.far_ip, str(lab.http_port), f"/small.bin?m={m}",
                  via=[lab.hops[0].url, url])
    assert_errno(c, errno.EACCES)
    log = sk.daemon_log()
    status = "HTTP 401" if how == "wrong" else "HTTP 407 Proxy Authentication Required"
    assert "proxy authentication required" in log and status in log, log
    assert tiny_auth.connects()[before:] == []
    assert lab.http.requests_for(m) == []


def test_http_refusal_of_the_target_is_econnrefused(lab: lablib.Lab, sk,
                                                    tiny: TinyProxy) -> None:
    """tinyproxy answers 500 when it cannot reach the target: ECONNREFUSED, with the
    status line in the log."""
    c = sk.client("connect", lab.far_ip, "9", via=[tiny.url()])
    assert_errno(c, errno.ECONNREFUSED)
    assert "HTTP 500" in sk.daemon_log(), sk.daemon_log()


def test_ipv6_target_through_http_is_asked_not_refused(lab: lablib.Lab, sk,
                                                       tiny: TinyProxy) -> None:
    """An HTTP hop carries IPv6 literals (CONNECT [addr]:port): the proxy zone has no
    IPv6 route, so the proxy refuses -- the request reached it (its log names it)."""
    c = sk.client("connect", "2001:db8::7", "80", via=[tiny.url()])
    assert not c.ok and c["errno"] != errno.ENETUNREACH, c.describe()
    assert any("2001:db8::7" in t for t in tiny.connects()), tiny.read_log()



@pytest.mark.parametrize("data_path", ["handoff", "relay"])
def test_hop1_name_tries_each_address(lab: lablib.Lab, sk, tiny: TinyProxy,
                                      data_path: str) -> None:
    """Hop 1 given by a name with two addresses, the first dead (127.0.0.1, where
    nothing listens in the client zone; glibc sorts it first): the daemon resolves
    the name itself (no DNS query: the client zone's hosts file), logs it, tries the
    next address, and the connection goes through."""
    name = f"hop1-{os.urandom(3).hex()}.socksify.test"
    hosts = Path("/etc/netns") / lab.client_ns / "hosts"
    saved = hosts.read_text()
    hosts.write_text(saved + f"127.0.0.1 {name}\n{lablib.PROXY_NEAR_IP} {name}\n")
    try:
        queries, before = len(lab.dns.seen()), len(tiny.connects())
        c = sk.client("connect", lab.far_ip, str(lab.http_port),
                      via=[f"http://{name}:{tiny.port}"],
                      opts=["-v", "--data-path", data_path])
        assert c.ok, c.describe()
    finally:
        hosts.write_text(saved)
    log = sk.daemon_log()
    assert f"name {name} resolved here: 127.0.0.1, {lablib.PROXY_NEAR_IP}" in log, log
    assert "address 127.0.0.1 failed" in log, log
    assert tiny.connects()[before:] == [f"{lab.far_ip}:{lab.http_port}"]
    assert name not in lab.dns.seen()[queries:]

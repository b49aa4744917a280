"""TLS hops: Debian's tinyproxy behind stunnel4 (TLS) in the proxy zone, with a test
CA made here. Verified with ca_file; refused (EACCES, the reason in the log) when the
certificate is not trusted; tls_verify = false only when a policy says so; TLS to a
middle hop inside the tunnel; proxies named by host name, hop 1's resolved by the
daemon, hop 2's carried by hop 1 (the client zone's resolver sees no query)."""

from __future__ import annotations

import errno
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

import lab as lablib
from conftest import assert_errno, need
from httpproxy import (STUNNEL, TINYPROXY, Stunnel, TinyProxy, add_host, make_ca,
                       remove_host)

pytestmark = pytest.mark.lab


@dataclass
class TlsProxy:
    tiny: TinyProxy
    tunnel: Stunnel
    socks_tunnel: Stunnel     # TLS in front of the lab's danted hop 3 (SOCKS5)
    ca: Path
    near_name: str      # in the client zone's hosts file: hop 1 is resolved there
    far_name: str       # only in the proxy zone's: a hop before must carry it

    def url(self, name: str) -> str:
        return f"https://{name}:{self.tunnel.port}"


@pytest.fixture(scope="module")
def tlsproxy(lab: lablib.Lab) -> Iterator[TlsProxy]:
    need(TINYPROXY)
    need(STUNNEL)
    tag = os.urandom(3).hex()
    near, far = f"tlsnear-{tag}.socksify.test", f"tlsfar-{tag}.socksify.test"
    certdir = Path(tempfile.mkdtemp(prefix="skca-"))
    certdir.chmod(0o755)
    ca, cert, key = make_ca(certdir, near, far)
    tiny = TinyProxy.start(lab)
    tunnel = socks_tunnel = None
    try:
        tunnel = Stunnel.start(lab, tiny.port, cert, key)
        socks_tunnel = Stunnel.start(lab, lab.hops[2].port, cert, key)
        add_host(lab.client_ns, near, lablib.PROXY_NEAR_IP)
        add_host(lab.proxy_ns, near, lablib.PROXY_NEAR_IP)
        add_host(lab.proxy_ns, far, lablib.PROXY_NEAR_IP)
        yield TlsProxy(tiny, tunnel, socks_tunnel, ca, near, far)
    finally:
        for ns, name in ((lab.client_ns, near), (lab.proxy_ns, near), (lab.proxy_ns, far)):
            remove_host(ns, name)
        for t in (tunnel, socks_tunnel):
            if t is not None:
                t.close()
        tiny.close()
        for f in certdir.iterdir():
            f.unlink()
        certdir.rmdir()


def curl(out: Path, url: str) -> list[str]:
    return ["curl", "-q", "-sS", "--connect-timeout", "20", "--max-time", "60", "-o",
            str(out), url]


def policy(path: Path, proxy: str, hops: str) -> Path:
    path.write_text(f"[proxies]\ntp = {proxy}\n\n[chains.tls]\nhops = {hops}\n\n"
                    "[default]\naction = \"chain:tls\"\n")
    return path


def test_https_hop_by_name_verified_with_ca_file(lab: lablib.Lab, sk, tlsproxy: TlsProxy,
                                                 tmp_path: Path) -> None:
    """hop 1 = https://NAME (resolved by the daemon), the certificate checked against
    the test CA: the download is intact, the daemon relays (and says why), and the
    log says the daemon resolved hop 1's name."""
    m = f"tls-{os.urandom(4).hex()}"
    out = tmp_path / "big.bin"
    pol = policy(tmp_path / "p.toml", f'{{ url = "{tlsproxy.url(tlsproxy.near_name)}", '
                 f'ca_file = "{tlsproxy.ca}" }}', '["tp"]')
    before = len(tlsproxy.tiny.connects())
    res = sk.run(curl(out, lab.url("big.bin", m)), opts=["-c", str(pol)])
    assert res.returncode == 0, sk.describe(res)
    assert lablib.sha256_file(out) == lab.big_sha256
    assert tlsproxy.tiny.connects()[before:] == [f"{lab.far_ip}:{lab.http_port}"]
    assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]
    log = sk.daemon_log(20000)
    assert f"name {tlsproxy.near_name} resolved here" in log, log
    assert "relayed, not handed off: hop 1" in log, log


def test_untrusted_certificate_is_refused(lab: lablib.Lab, sk, tlsproxy: TlsProxy) -> None:
    """--via https://NAME: the test CA is not in the system store: EACCES, the reason
    in the log, and nothing reached the proxy behind the TLS terminator."""
    before = len(tlsproxy.tiny.connects())
    c = sk.client("connect", lab.far_ip, str(lab.http_port),
                  via=[tlsproxy.url(tlsproxy.near_name)])
    assert_errno(c, errno.EACCES)
    log = sk.daemon_log()
    assert "TLS certificate refused" in log and "local issuer" in log, log
    assert tlsproxy.tiny.connects()[before:] == []


def test_name_mismatch_is_refused(lab: lablib.Lab, sk, tlsproxy: TlsProxy,
                                  tmp_path: Path) -> None:
    """The right CA, but the hop named by an address the certificate does not hold."""
    pol = policy(tmp_path / "p.toml", f'{{ url = "{tlsproxy.url(lablib.PROXY_NEAR_IP)}", '
                 f'ca_file = "{tlsproxy.ca}" }}', '["tp"]')
    c = sk.client("connect", lab.far_ip, str(lab.http_port), opts=["-c", str(pol)])
    assert_errno(c, errno.EACCES)
    assert "mismatch" in sk.daemon_log(), sk.daemon_log()


def test_tls_verify_false_only_when_written(lab: lablib.Lab, sk, tlsproxy: TlsProxy,
                                            tmp_path: Path) -> None:
    url = tlsproxy.url(lablib.PROXY_NEAR_IP)
    pol = policy(tmp_path / "p.toml", f'{{ url = "{url}", tls_verify = false }}', '["tp"]')
    c = sk.client("connect", lab.far_ip, str(lab.http_port), opts=["-c", str(pol)])
    assert c.ok, c.describe()
    # a hop URL cannot say it (no query), a non-boolean is an error with file:line
    bad = policy(tmp_path / "bad.toml", f'{{ url = "{url}", tls_verify = "no" }}',
                 '["tp"]')
    res = sk.socksifyd("check-config", "-c", str(bad))
    assert res.returncode != 0 and f"{bad}:2" in res.stderr + res.stdout, res.describe()
    c = sk.client("connect", lab.far_ip, str(lab.http_port),
                  via=[url + "/?tls_verify=false"])
    assert not c.ok and "no path or query" in c.res.stderr, c.describe()


def test_tls_middle_hop_named_and_carried(lab: lablib.Lab, sk, tlsproxy: TlsProxy,
                                          tmp_path: Path) -> None:
    """socks5 -> https://FARNAME (TLS inside the tunnel through hop 1; FARNAME known
    only in the proxy zone, so hop 1 must resolve it) -> target by name, CONNECTed
    by the HTTP hop: the client zone's resolver sees no query at all."""
    m = f"tlsmid-{os.urandom(4).hex()}"
    out = tmp_path / "small.bin"
    hop1 = lab.hops[0]
    pol = policy(tmp_path / "p.toml", f'{{ url = "{tlsproxy.url(tlsproxy.far_name)}", '
                 f'ca_file = "{tlsproxy.ca}" }}',
                 f'["socks5://{hop1.host}:{hop1.port}", "tp"]')
    queries, before = len(lab.dns.seen()), len(tlsproxy.tiny.connects())
    hop_before = lab.hop_connects()
    res = sk.run(curl(out, lab.far_url("small.bin", m)), opts=["-c", str(pol)])
    assert res.returncode == 0, sk.describe(res)
    assert lablib.sha256_file(out) == lab.small_sha256
    assert tlsproxy.tiny.connects()[before:] == [f"{lablib.FAR_NAME}:{lab.http_port}"]
    lab.wait_hop_connects(hop_before, [1, 0, 0])
    assert lab.hop_targets_since(hop_before)[0] == \
        [f"{lablib.PROXY_NEAR_IP}.{tlsproxy.tunnel.port}"]
    assert lab.dns.seen()[queries:] == []
    log = sk.daemon_log(20000)
    assert f"name {tlsproxy.far_name} carried by hop 1" in log, log


def test_socks5_over_tls(lab: lablib.Lab, sk, tlsproxy: TlsProxy, tmp_path: Path) -> None:
    """socks5+tls://NAME: SOCKS5 inside TLS (stunnel4 in front of danted), the
    target's name carried by the SOCKS5 request."""
    m = f"s5tls-{os.urandom(4).hex()}"
    out = tmp_path / "small.bin"
    url = f"socks5+tls://{tlsproxy.near_name}:{tlsproxy.socks_tunnel.port}"
    pol = policy(tmp_path / "p.toml", f'{{ url = "{url}", ca_file = "{tlsproxy.ca}" }}',
                 '["tp"]')
    queries, hop_before = len(lab.dns.seen()), lab.hop_connects()
    res = sk.run(curl(out, lab.far_url("small.bin", m)), opts=["-c", str(pol)])
    assert res.returncode == 0, sk.describe(res)
    assert lablib.sha256_file(out) == lab.small_sha256
    lab.wait_hop_connects(hop_before, [0, 0, 1])
    assert lab.hop_targets_since(hop_before)[2] == [lab.far_http_addr]
    assert lab.dns.seen()[queries:] == []

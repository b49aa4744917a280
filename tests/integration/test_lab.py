"""The lab itself, checked without socksify: real clients (curl, a hand-rolled SOCKS4
chaining client) against the real danted hops and the far-zone servers. If these fail,
the socksify tests prove nothing."""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import struct
import tempfile
import time
from pathlib import Path

import pytest

import lab as lablib

pytestmark = pytest.mark.lab


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def socks4_connect(s: socket.socket, host: str, port: int) -> int:
    """One SOCKS4 CONNECT on s; return the reply code (90 = granted)."""
    s.sendall(struct.pack("!BBH4s", 4, 1, port, socket.inet_aton(host)) + b"lab\0")
    vn, cd, _, _ = struct.unpack("!BBH4s", recv_exact(s, 8))
    return cd


def curl_via(the_lab: lablib.Lab, hop: lablib.Hop, url: str, out: Path,
             timeout: float = 60) -> lablib.Result:
    return the_lab.client_run(["curl", "-q", "-sS", "--connect-timeout", "5", "--max-time",
                               "50", "--socks4", f"{hop.host}:{hop.port}", "-o", str(out),
                               url], timeout=timeout)


@pytest.fixture
def outdir() -> Path:
    with tempfile.TemporaryDirectory(prefix="sklabout-") as d:
        yield Path(d)


@pytest.mark.parametrize("index", [1, 2, 3])
def test_curl_through_each_hop_alone(lab: lablib.Lab, outdir: Path, index: int) -> None:
    hop = lab.hops[index - 1]
    marker = f"labhop{index}-{os.urandom(4).hex()}"
    before = lab.hop_connects()
    out = outdir / "big.bin"
    res = curl_via(lab, hop, lab.url("big.bin", marker), out)
    assert res.returncode == 0, res.describe()
    assert sha256_file(out) == lab.big_sha256
    expected = [1 if i == index else 0 for i in (1, 2, 3)]
    deltas = lab.wait_hop_connects(before, expected)
    assert deltas == expected, f"hop connect lines {deltas}, expected {expected}:\n" \
        + hop.read_log()[-2000:]
    assert f"{lab.far_ip}.{lab.http_port}" in hop.connect_lines()[-1]
    reqs = lab.http.requests_for(marker)
    assert [r.client for r in reqs] == [lab.proxy_far_ip]


def test_direct_client_to_far_fails_quickly(lab: lablib.Lab) -> None:
    marker = f"direct-{os.urandom(4).hex()}"
    start = time.monotonic()
    res = lab.client_run(["curl", "-q", "-sS", "--connect-timeout", "2", "--max-time", "4",
                          "-o", "/dev/null", lab.url("small.bin", marker)], timeout=30)
    assert res.returncode in (7, 28), res.describe()   # couldn't connect / timed out
    assert time.monotonic() - start < 25
    assert lab.http.requests_for(marker) == []
    # and with a plain socket: no TCP connection at all, to any far-zone server
    assert lablib.try_connect(lab.client_ns, lab.far_ip, lab.http_port, 1.5) != 0
    assert lablib.try_connect(lab.client_ns, lab.far_ip, lab.echo.port, 1.5) != 0


def test_far_zone_cannot_reach_client_zone(lab: lablib.Lab) -> None:
    assert lablib.try_connect(lab.far_ns, lab.client_ip, 22, 1.5) not in (0, errno.ECONNREFUSED)


def test_three_hop_chain_by_hand(lab: lablib.Lab) -> None:
    """hop1 -> hop2 -> hop3 -> far with a hand-written SOCKS4 client: the danted configs
    let each hop reach the next on the proxy zone's own address."""
    marker = f"chain3-{os.urandom(4).hex()}"
    before = lab.hop_connects()
    s = lablib.socket_in(lab.client_ns)
    s.settimeout(30)
    try:
        s.connect((lab.hops[0].host, lab.hops[0].port))
        for nxt in lab.hops[1:]:
            assert socks4_connect(s, nxt.host, nxt.port) == 90
        assert socks4_connect(s, lab.far_ip, lab.http_port) == 90
        s.sendall(f"GET /big.bin?m={marker} HTTP/1.0\r\n\r\n".encode())
        data = bytearray()
        while True:
            chunk = s.recv(1 << 18)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200"), head[:200]
    assert hashlib.sha256(body).hexdigest() == lab.big_sha256
    assert lab.wait_hop_connects(before, [1, 1, 1]) == [1, 1, 1]
    assert f"{lab.proxy_near_ip}.{lab.hops[1].port}" in lab.hops[0].connect_lines()[-1]
    assert [r.client for r in lab.http.requests_for(marker)] == [lab.proxy_far_ip]


def test_hop_refuses_unreachable_target(lab: lablib.Lab) -> None:
    """danted maps a failed target connect to SOCKS4 reply 91 (no tunnel, no connect line)."""
    before = lab.hop_connects()
    s = lablib.socket_in(lab.client_ns)
    s.settimeout(30)
    try:
        s.connect((lab.hops[0].host, lab.hops[0].port))
        assert socks4_connect(s, lab.proxy_near_ip, lablib.DEAD_HOP_PORT) == 91
    finally:
        s.close()
    lablib.wait_until(lambda: any(f"{lab.proxy_near_ip}.{lablib.DEAD_HOP_PORT}" in ln
                                  for ln in lab.hops[0].failed_lines()), 5,
                      "hop 1 to log the refused connect")
    assert lab.hop_connects() == before, lab.hops[0].read_log()[-1500:]


def test_near_witness_counts_direct_connections(lab: lablib.Lab) -> None:
    before = lab.witness.count()
    assert lablib.try_connect(lab.client_ns, lab.proxy_near_ip, lab.witness.port, 5) == 0
    lablib.wait_until(lambda: lab.witness.count() == before + 1, 5, "the witness to count")


def test_dead_hop_port_refuses(lab: lablib.Lab) -> None:
    assert lablib.try_connect(lab.client_ns, lab.proxy_near_ip, lablib.DEAD_HOP_PORT, 5) \
        == errno.ECONNREFUSED


def test_silent_hop_accepts_and_never_answers(lab: lablib.Lab) -> None:
    s = lablib.socket_in(lab.client_ns)
    s.settimeout(5)
    try:
        s.connect((lab.proxy_near_ip, lab.silent.port))
        s.sendall(struct.pack("!BBH4s", 4, 1, lab.http_port, socket.inet_aton(lab.far_ip))
                  + b"\0")
        s.settimeout(1.0)
        with pytest.raises(socket.timeout):
            s.recv(8)
    finally:
        s.close()


def test_far_echo_server_hashes_until_eof(lab: lablib.Lab) -> None:
    data = os.urandom(300_000)
    s = lablib.socket_in(lab.proxy_ns)   # the proxy zone reaches the far zone directly
    s.settimeout(10)
    try:
        s.connect((lab.far_ip, lab.echo.port))
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
    finally:
        s.close()
    assert reply.decode().split() == [hashlib.sha256(data).hexdigest(), str(len(data))]


def test_stop_and_restart_hop(lab: lablib.Lab, outdir: Path) -> None:
    hop = lab.hops[2]
    lab.stop_hop(3)
    try:
        res = curl_via(lab, hop, lab.url("small.bin"), outdir / "x")
        assert res.returncode != 0, res.describe()
    finally:
        lab.start_hop(3)
    res = curl_via(lab, hop, lab.url("small.bin"), outdir / "y")
    assert res.returncode == 0, res.describe()
    assert sha256_file(outdir / "y") == lab.small_sha256


def test_ns_run_reports_status_output_and_timeout(lab: lablib.Lab) -> None:
    res = lab.client_run(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=10)
    assert (res.returncode, res.stdout, res.stderr) == (3, "out\n", "err\n")
    res = lab.client_run(["ip", "-4", "-o", "addr", "show"], timeout=10)
    assert lab.client_ip in res.stdout and lab.far_ip not in res.stdout
    start = time.monotonic()
    with pytest.raises(lablib.CommandTimeout):
        lab.client_run(["sleep", "30"], timeout=1)
    assert time.monotonic() - start < 20

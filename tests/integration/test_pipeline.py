"""Pipelined chain negotiation (issue 16): every hop's request sent at once, the
replies checked in order. Watched on the wire by scripted hops (what reached a hop
before it replied), against danted, tiny-proxy and a daemon's own front door; failures
reported at the same hop with the same errno as step by step; a hop that only works
step by step is retried once, remembered, and asked step by step from then on."""

from __future__ import annotations

import errno
import os
import re
import select
import socket
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import lab as lablib
from conftest import assert_errno
from lab import recv_exact, recv_socks5_request

pytestmark = pytest.mark.lab

GRANT4 = bytes([0, 90, 0, 0, 0, 0, 0, 0])
FAST = {"NETCLIENT_TIMEOUT": "15"}
DEBUG = {"SOCKSIFY_LOG_LEVEL": "DEBUG"}      # the daemon logs each batch sent at once


def marker(name: str) -> str:
    return f"{name}-{os.urandom(4).hex()}"


def socks4_request(host: str, port: int) -> bytes:
    return struct.pack("!BBH", 4, 1, port) + socket.inet_aton(host) + b"\0"


def waiting(conn: socket.socket, seconds: float) -> bool:
    """Bytes are in conn's receive queue (or arrive within `seconds`)."""
    return bool(select.select([conn], [], [], seconds)[0])


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def relay(lab: lablib.Lab, conn: socket.socket, host: str, port: int, reply: bytes,
          early: bytes = b"") -> None:
    """Act as a hop that was asked for host:port: connect there from the proxy zone,
    send `reply`, pass on the bytes that came in before it (`early`), then carry
    both ways until both sides are done."""
    up = lablib.socket_in(lab.proxy_ns)
    up.settimeout(30)
    try:
        up.connect((host, port))
        up.settimeout(None)
        conn.settimeout(None)
        conn.sendall(reply)
        if early:
            up.sendall(early)
        t = threading.Thread(target=_pump, args=(up, conn), daemon=True)
        t.start()
        _pump(conn, up)
        t.join(30)
    finally:
        up.close()


def socks4_target(request: bytes) -> tuple[str, int]:
    return socket.inet_ntoa(request[4:8]), struct.unpack("!H", request[2:4])[0]


@pytest.fixture
def scripted(lab: lablib.Lab) -> Iterator[Callable[..., lablib.HostileSocksServer]]:
    servers: list[lablib.HostileSocksServer] = []

    def make(script: Callable[[lablib.HostileSocksServer, socket.socket], None],
             socks5: bool = False) -> lablib.HostileSocksServer:
        box: list[lablib.HostileSocksServer] = []
        srv = lab.hostile_hop(lambda conn: script(box[0], conn), socks5)
        box.append(srv)
        servers.append(srv)
        return srv
    yield make
    for srv in servers:
        srv.close()


def attempts(srv: lablib.HostileSocksServer) -> int:
    """Negotiations the scripted hop saw: connections that sent it a request. (The
    daemon's hop-health probe may connect to hop 1 without a byte, once a handed-off
    connection through it is gone: that is no attempt.)"""
    return len(srv.requests)


def fetch(lab: lablib.Lab, sk, via: list[str], *opts: str, env: dict[str, str] | None = None):
    m = marker("pipe")
    c = sk.client("rawfetch", lab.far_ip, str(lab.http_port), f"/small.bin?m={m}",
                  via=via, env={**FAST, **(env or {})}, opts=("-v", *opts), timeout=60)
    assert c.ok and c["sha256"] == lab.small_sha256, c.describe()
    return c


def test_danted_chain_gets_every_request_at_once(lab: lablib.Lab, sk, scripted) -> None:
    """Hop 1 (scripted, in front of two danted hops) holds its reply and looks at
    what came in behind its own request: exactly the requests for danted hop 2 and
    hop 3, in order; then the chain works and each danted hop connected where asked.
    Step by step (--no-pipeline) nothing comes in behind the request."""
    h2, h3 = lab.hops[1], lab.hops[2]
    ahead = socks4_request(h3.host, h3.port) + socks4_request(lab.far_ip, lab.http_port)
    seen: list[bytes] = []

    def witness(srv: lablib.HostileSocksServer, conn: socket.socket) -> None:
        early = b""
        while len(early) < len(ahead) and waiting(conn, 1.0):
            chunk = conn.recv(len(ahead) - len(early))
            if not chunk:
                break
            early += chunk
        seen.append(early)
        relay(lab, conn, *socks4_target(srv.requests[-1]), GRANT4, early)
    srv = scripted(witness)
    via = [srv.url, h2.url, h3.url]
    before = lab.hop_connects()
    fetch(lab, sk, via)
    assert seen == [ahead], seen
    assert srv.requests[0] == socks4_request(h2.host, h2.port)
    after = lab.hop_connects()
    assert after[1] - before[1] == 1 and after[2] - before[2] == 1, (before, after)
    fetch(lab, sk, via, "--no-pipeline")
    assert seen[1] == b"", seen
    assert "step by step" not in sk.daemon_log(20000)


def test_danted_only_chain(lab: lablib.Lab, sk) -> None:
    """Three danted hops, pipelined: the data arrives, no fallback was needed."""
    fetch(lab, sk, [h.url for h in lab.hops], env=DEBUG)
    log = sk.daemon_log(20000)
    assert "3 messages at once, to hops 1,2,3" in log and "step by step" not in log, log


def test_tiny_proxy_hop(lab: lablib.Lab, sk) -> None:
    """tiny-proxy (PyPI) as hop 1 with danted behind it: it gets danted's request
    behind its own, and copes."""
    if lab.socks4a_url is None:
        pytest.skip("tiny-proxy is not installed (the test extra)")
    fetch(lab, sk, [lab.socks4a_url, lab.hops[1].url], env=DEBUG)
    log = sk.daemon_log(20000)
    assert "2 messages at once, to hops 1,2" in log and "step by step" not in log, log


def _failure_line(c, hop_text: str) -> str:
    """The -v line about the failure, without its connection id."""
    lines = [ln for ln in c.res.stderr.splitlines() if hop_text in ln]
    assert lines, c.describe()
    return re.sub(r"\[[^\]]*\]", "[]", lines[-1])


@pytest.mark.parametrize("where", ["hop 2 to a dead hop 3", "hop 3 to a closed port"])
def test_failure_reported_at_the_hop_that_failed(lab: lablib.Lab, sk, where: str) -> None:
    """Pipelined or not: the same errno and the same line, naming the same hop."""
    h = lab.hops
    if where.startswith("hop 2"):
        via = [h[0].url, h[1].url, f"socks4://{lablib.PROXY_NEAR_IP}:{lablib.DEAD_HOP_PORT}"]
        port, text = lab.http_port, "hop 2 "
    else:
        via, port, text = [x.url for x in h], 9, "hop 3 "
    out = {}
    for mode in ("--pipeline", "--no-pipeline"):
        c = sk.client("connect", lab.far_ip, str(port), via=via, env=FAST,
                      opts=("-v", "--timeout", "5", mode), timeout=30)
        assert_errno(c, errno.ECONNREFUSED)
        out[mode] = _failure_line(c, text)
    assert out["--pipeline"] == out["--no-pipeline"], out
    assert "refused" in out["--pipeline"], out


def test_garbage_from_a_middle_hop(lab: lablib.Lab, sk, scripted) -> None:
    """Hop 2 answers garbage: pipelined, tried once more step by step, then the same
    error as step by step (protocol error at hop 2: ECONNREFUSED)."""
    def garbage(srv: lablib.HostileSocksServer, conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.0 400 Bad\r\n\r\n")
        lablib.linger_until_eof(conn)
    srv = scripted(garbage)
    for mode, tries in (("--pipeline", 2), ("--no-pipeline", 1)):
        before = attempts(srv)
        c = sk.client("connect", lab.far_ip, str(lab.http_port),
                      via=[lab.hops[0].url, srv.url], env=FAST,
                      opts=("-v", "--timeout", "5", mode), timeout=30)
        assert_errno(c, errno.ECONNREFUSED)
        assert attempts(srv) - before == tries, (mode, attempts(srv), before)
        assert "hop 2" in c.res.stderr, c.describe()


@pytest.mark.parametrize("fault", ["closes", "swallows"])
def test_hop_that_only_works_step_by_step_is_remembered(lab: lablib.Lab, sk, scripted,
                                                        fault: str) -> None:
    """A hop that closes when bytes come in behind its request (or grants and throws
    them away, so hop 2 never hears its request: a timeout): the first connection
    fails pipelined, is retried step by step and works; the hop is remembered, so the
    next connection of the same daemon is asked step by step at once (one attempt)."""
    early_seen: list[bool] = []

    def strict(srv: lablib.HostileSocksServer, conn: socket.socket) -> None:
        if waiting(conn, 0.5):
            early_seen.append(True)
            if fault == "closes":
                return                              # closes: a FIN, no reply
            conn.recv(65536)                        # swallowed
        else:
            early_seen.append(False)
        relay(lab, conn, *socks4_target(srv.requests[-1]), GRANT4)
    srv = scripted(strict)
    via = [srv.url, lab.hops[1].url]
    pid = None
    for n, (tries, early) in enumerate(((2, [True, False]), (1, [False]))):
        before = attempts(srv)
        del early_seen[:]
        fetch(lab, sk, via, "--timeout", "2")
        assert attempts(srv) - before == tries, (n, attempts(srv), before)
        assert early_seen == early, (n, early_seen)
        if pid is None:
            pid = sk.daemon_pid()
            assert "mishandles early data" in sk.daemon_log(20000), sk.daemon_log()
            stepwise = f"{lablib.PROXY_NEAR_IP}:{srv.port}"   # status names it
            assert stepwise in sk.control({"op": "status"})["hops_stepwise"]
            shown = sk.socksifyd("status").stdout
            assert "step by step" in shown and stepwise in shown, shown
    assert sk.daemon_pid() == pid


def test_socks5_userpass_pipelined_once_known(lab: lablib.Lab, sk, scripted) -> None:
    """A SOCKS5 hop with a user name: the first time, "no auth" and username/password
    are offered and the hop's choice is awaited; once it is known to choose
    username/password, that alone is offered and the credentials and the request
    come in behind the greeting."""
    log: list[tuple[bytes, bool]] = []

    def userpass(srv: lablib.HostileSocksServer, conn: socket.socket) -> None:
        log.append((srv.requests[-1], waiting(conn, 0.5)))
        conn.sendall(b"\x05\x02")
        head = recv_exact(conn, 2)
        user = recv_exact(conn, head[1])
        plen = recv_exact(conn, 1)
        password = recv_exact(conn, plen[0])
        if (head[0], user, password) != (1, b"alice", b"s3cret"):
            conn.sendall(b"\x01\x01")
            return
        conn.sendall(b"\x01\x00")
        req = recv_socks5_request(conn)
        host, port = socket.inet_ntoa(req[4:8]), struct.unpack("!H", req[8:10])[0]
        relay(lab, conn, host, port, b"\x05\x00\x00\x01" + bytes(6))
    srv = scripted(userpass, socks5=True)
    url = srv.url.replace("socks5://", "socks5://alice:s3cret@")
    fetch(lab, sk, [url])
    fetch(lab, sk, [url])
    assert log == [(b"\x05\x02\x00\x02", False), (b"\x05\x01\x02", True)], log


def test_front_door_as_a_hop(lab: lablib.Lab, sk, tmp_path: Path) -> None:
    """A daemon's own front door (SOCKS5) as hop 1 of another daemon's chain, danted
    behind it: greeting, request and danted's request arrive together, and the front
    door carries the early bytes on in order."""
    pol = tmp_path / "door.toml"
    pol.write_text('[default]\naction = "direct"\n[frontdoor]\nlisten = "127.0.0.1:0"\n')
    res = sk.socksifyd("start", "-c", str(pol))
    assert res.returncode == 0, sk.describe(res)
    code = ("from socksify import client; from socksify.paths import Paths;"
            "print(client.request(Paths.from_env(), {'op': 'status'})['frontdoor'])")
    door = lab.client_run([sys.executable, "-c", code], env=sk.env, timeout=30)
    port = int(door.stdout.strip().rsplit(":", 1)[1])
    other = tmp_path / "rt2"
    other.mkdir(mode=0o700)
    env = {"SOCKSIFY_RUNTIME_DIR": str(other), **DEBUG}
    before = lab.hop_connects()
    try:
        fetch(lab, sk, [f"socks5://127.0.0.1:{port}", lab.hops[1].url], env=env)
        log = (other / "socksifyd.log").read_text(errors="replace")
        assert "3 messages at once, to hops 1,1,2" in log and "step by step" not in log, log
    finally:
        lab.client_run([sk.install.socksifyd, "stop"], env={**sk.env, **env}, timeout=30)
    assert lab.hop_connects()[1] - before[1] == 1

"""Fault injection: hops that break the SOCKS protocol, local clients that abuse the
control socket, a hop that dies mid-transfer. Each time the program must see the errno
of docs/data-path.md (or its data, intact), promptly, and the daemon must go on serving:
the next connection through a real danted hop works, from the same daemon."""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import lab as lablib
from conftest import assert_errno
from lab import echo_hash, linger_until_eof, recv_socks5_request, reset

pytestmark = pytest.mark.lab

GRANT4 = bytes([0, 90, 0, 0, 0, 0, 0, 0])
JUNK = bytes(range(32, 127)) * (1024 * 1024 // 95 + 1)
JUNK = JUNK[:1024 * 1024]                      # 1 MiB, printable, in a known order
FAST = {"NETCLIENT_TIMEOUT": "15"}            # the app's own socket timeout: a hang
                                              # shows as a failure, not as a stall


def marker(name: str) -> str:
    return f"{name}-{os.urandom(4).hex()}"


@pytest.fixture
def hostile(lab: lablib.Lab) -> Iterator[Callable[..., lablib.HostileSocksServer]]:
    """hostile(script, socks5=False): a misbehaving hop for this test, closed after."""
    servers: list[lablib.HostileSocksServer] = []

    def make(script: lablib.Script, socks5: bool = False) -> lablib.HostileSocksServer:
        srv = lab.hostile_hop(script, socks5)
        servers.append(srv)
        return srv
    yield make
    for srv in servers:
        srv.close()


def still_serves(lab: lablib.Lab, sk, pid: int | None) -> None:
    """The same daemon (same pid) still builds a chain through a real danted hop."""
    m = marker("after")
    c = sk.client("rawfetch", lab.far_ip, str(lab.http_port), f"/small.bin?m={m}",
                  via=[lab.hops[0].url], env=FAST, timeout=30)
    assert c.ok and c["sha256"] == lab.small_sha256, c.describe()
    assert sk.daemon_pid() == pid and pid is not None, \
        f"the daemon changed: {pid} -> {sk.daemon_pid()}\n{c.describe()}"


def assert_log_names(sk, srv: lablib.HostileSocksServer) -> None:
    addr = srv.url.split("//", 1)[1]
    lablib.wait_until(lambda: addr in sk.daemon_log(20000), 5,
                      f"the daemon log to name the hop {srv.url}")


# --- SOCKS4 hops ------------------------------------------------------------------------

def _send_then_eof(data: bytes) -> lablib.Script:
    def script(conn: socket.socket) -> None:
        conn.sendall(data)
        linger_until_eof(conn)
    return script


def _close(conn: socket.socket) -> None:
    pass                                       # the server closes it: a FIN, no reply


def _reset(conn: socket.socket) -> None:
    reset(conn)                                # the close that follows is a RST


def _short_then_close(conn: socket.socket) -> None:
    conn.sendall(GRANT4[:3])


REFUSED4 = {
    "garbage": _send_then_eof(b"HTTP/1.0 400 Bad\r\n\r\n"),
    "short-then-close": _short_then_close,
    "close-at-once": _close,
    "reset-at-once": _reset,
    "code-91": _send_then_eof(bytes([0, 91, 0, 0, 0, 0, 0, 0])),
    "code-92": _send_then_eof(bytes([0, 92, 0, 0, 0, 0, 0, 0])),
    "code-93": _send_then_eof(bytes([0, 93, 0, 0, 0, 0, 0, 0])),
    "code-94": _send_then_eof(bytes([0, 94, 0, 0, 0, 0, 0, 0])),   # not 90..93
    "vn-5": _send_then_eof(bytes([5, 90, 0, 0, 0, 0, 0, 0])),
    # bytes before the reply: the first 8 bytes are not a reply
    "data-before-reply": _send_then_eof(b"hello" + GRANT4),
}


@pytest.mark.parametrize("behaviour", sorted(REFUSED4))
def test_socks4_broken_reply_is_refused(lab: lablib.Lab, sk, hostile,
                                        behaviour: str) -> None:
    """A hop whose answer is not a grant: ECONNREFUSED, at once; one request only
    (strict); the log names the hop; the daemon goes on serving."""
    srv = hostile(REFUSED4[behaviour])
    c = sk.client("connect", lab.far_ip, str(lab.http_port), via=[srv.url], env=FAST,
                  opts=("-v", "--timeout", "5"), timeout=30)
    assert_errno(c, errno.ECONNREFUSED)
    assert c.res.elapsed < 4, c.describe()      # not a timeout in disguise
    assert srv.count() == 1 and len(srv.requests) == 1, (srv.accepted, srv.requests)
    port = lab.http_port
    assert srv.requests[0][:8] == bytes([4, 1, port >> 8, port & 0xFF]) + \
        socket.inet_aton(lab.far_ip)
    assert_log_names(sk, srv)
    still_serves(lab, sk, sk.daemon_pid())


def test_socks4_reply_never_comes(lab: lablib.Lab, sk, hostile) -> None:
    """The hop reads the request and then says nothing: ETIMEDOUT after --timeout 1."""
    def silent(conn: socket.socket) -> None:
        while conn.recv(65536):
            pass
    srv = hostile(silent)
    started = time.monotonic()
    c = sk.client("connect", lab.far_ip, str(lab.http_port), via=[srv.url], env=FAST,
                  opts=("-v", "--timeout", "1"), timeout=30)
    took = time.monotonic() - started
    assert_errno(c, errno.ETIMEDOUT)
    assert took < 5, f"took {took:.1f}s for a 1 s timeout\n{c.describe()}"
    assert len(srv.requests) == 1
    assert_log_names(sk, srv)
    still_serves(lab, sk, sk.daemon_pid())


def _granted_then_echo(reply: bytes, delay: float = 0.0) -> lablib.Script:
    def script(conn: socket.socket) -> None:
        for i in range(len(reply)) if delay else ():
            conn.sendall(reply[i:i + 1])
            time.sleep(delay)
        if not delay:
            conn.sendall(reply)
        echo_hash(conn)
    return script


@pytest.mark.parametrize("behaviour,script", [
    ("split-byte-by-byte", _granted_then_echo(GRANT4, 0.05)),
    ("vn-4", _granted_then_echo(bytes([4, 90, 0x1F, 0x90, 10, 0, 0, 1]))),
])
def test_socks4_grant_then_data_flows(lab: lablib.Lab, sk, hostile, behaviour: str,
                                      script: lablib.Script) -> None:
    """A valid grant (sent a byte at a time, or with VN 4): success, and the bytes
    after it flow both ways (the hop then plays an echo-and-hash target)."""
    srv = hostile(script)
    c = sk.client("halfclose", lab.far_ip, str(lab.http_port), "100000", via=[srv.url],
                  env=FAST, timeout=30)
    assert c.ok, c.describe()
    assert c["reply"].split() == [c["sent_sha256"], "100000"], c.describe()
    assert_log_names(sk, srv)
    still_serves(lab, sk, sk.daemon_pid())


def test_socks4_reply_followed_by_a_flood(lab: lablib.Lab, sk, hostile) -> None:
    """8 valid reply bytes, then 1 MiB at once: the reply is 8 bytes, so the rest is
    the target's data, and the program receives all of it, in order, first."""
    def flood(conn: socket.socket) -> None:
        conn.sendall(GRANT4 + JUNK)
        linger_until_eof(conn)
    srv = hostile(flood)
    c = sk.client("halfclose", lab.far_ip, str(lab.http_port), "0", via=[srv.url],
                  env=FAST, timeout=30)
    assert c.ok, c.describe()
    assert len(c["reply"]) == len(JUNK) and c["reply"].encode() == JUNK, \
        (len(c["reply"]), c["reply"][:100])
    still_serves(lab, sk, sk.daemon_pid())


@pytest.mark.parametrize("data_path", ["relay", "handoff"])
def test_socks4_reset_mid_stream(lab: lablib.Lab, sk, hostile, data_path: str) -> None:
    """The hop grants, sends 1000 bytes, then resets the connection: the program sees
    ECONNRESET (docs/data-path.md: a dying hop resets the program's connection, so a
    truncated transfer is not taken for a complete one), promptly. Relayed, the daemon
    passes the reset on; handed off, the program's own socket receives it."""
    def grant_then_reset(conn: socket.socket) -> None:
        conn.sendall(GRANT4 + b"x" * 1000)
        time.sleep(0.2)
        reset(conn)
    srv = hostile(grant_then_reset)
    c = sk.client("halfclose", lab.far_ip, str(lab.http_port), "0", via=[srv.url],
                  env=FAST, timeout=30, opts=("-v", "--data-path", data_path))
    assert_errno(c, errno.ECONNRESET)
    assert c.res.elapsed < 6, c.describe()
    if data_path == "relay":
        lablib.wait_until(lambda: "relay ended" in sk.daemon_log(20000), 5,
                          "the daemon to log the end of the relay")
    assert_log_names(sk, srv)
    still_serves(lab, sk, sk.daemon_pid())


# --- SOCKS5 hops ------------------------------------------------------------------------

def _s5_reply(code: int, tail: bytes = b"\x01\x0a\x00\x00\x01\x1f\x90") -> bytes:
    return bytes([5, code, 0]) + tail


def _s5(choice: bytes, reply: bytes | None = None) -> lablib.Script:
    def script(conn: socket.socket) -> None:
        conn.sendall(choice)
        if reply is not None:
            recv_socks5_request(conn)
            conn.sendall(reply)
        linger_until_eof(conn)
    return script


S5_FAILURES = {
    "method-ff": (_s5(b"\x05\xff"), errno.ECONNREFUSED),
    "method-bad-version": (_s5(b"\x04\x00"), errno.ECONNREFUSED),
    "method-not-offered": (_s5(b"\x05\x02"), errno.ECONNREFUSED),  # user/pass, unasked
    "reply-bad-version": (_s5(b"\x05\x00", b"\x04" + _s5_reply(0)[1:]),
                          errno.ECONNREFUSED),
    "reply-bad-atyp": (_s5(b"\x05\x00", _s5_reply(0, b"\x09\x00\x00\x00\x00\x00\x00")),
                       errno.ECONNREFUSED),
    "reply-truncated-name": (_s5(b"\x05\x00", _s5_reply(0, b"\x03\xffabc")),
                             errno.ECONNREFUSED),
    "reply-host-unreachable": (_s5(b"\x05\x00", _s5_reply(4)), errno.EHOSTUNREACH),
    "reply-unknown-code": (_s5(b"\x05\x00", _s5_reply(0x42)), errno.ECONNREFUSED),
}


# answers that are not replies at all: pipelined, the hop may have choked on the
# request behind its greeting, so the connection is tried once more step by step
S5_NOT_REPLIES = {"method-bad-version", "reply-bad-version", "reply-bad-atyp",
                  "reply-truncated-name"}


@pytest.mark.parametrize("pipeline", ["--pipeline", "--no-pipeline"])
@pytest.mark.parametrize("behaviour", sorted(S5_FAILURES))
def test_socks5_broken_hop(lab: lablib.Lab, sk, hostile, behaviour: str,
                           pipeline: str) -> None:
    """The same errno pipelined or not; a refusal is never asked twice, a reply that
    is not one is tried once more step by step when pipelined."""
    script, expected = S5_FAILURES[behaviour]
    srv = hostile(script, socks5=True)
    c = sk.client("connect", lab.far_ip, str(lab.http_port), via=[srv.url], env=FAST,
                  opts=("-v", "--timeout", "5", pipeline), timeout=30)
    assert_errno(c, expected)
    assert c.res.elapsed < 4, c.describe()
    tries = 2 if pipeline == "--pipeline" and behaviour in S5_NOT_REPLIES else 1
    assert srv.requests == [b"\x05\x01\x00"] * tries, srv.requests   # no auth offered
    assert_log_names(sk, srv)
    still_serves(lab, sk, sk.daemon_pid())


def test_socks5_grant_split_then_data_flows(lab: lablib.Lab, sk, hostile) -> None:
    """A SOCKS5 hop answering one byte at a time, with a host-name bound address:
    success, and the data flows."""
    def script(conn: socket.socket) -> None:
        for piece in (b"\x05", b"\x00"):
            conn.sendall(piece)
            time.sleep(0.05)
        request = recv_socks5_request(conn)
        assert request[:4] == b"\x05\x01\x00\x01", request
        for b in _s5_reply(0, b"\x03\x04bnd!\x1f\x90"):
            conn.sendall(bytes([b]))
            time.sleep(0.02)
        echo_hash(conn)
    srv = hostile(script, socks5=True)
    c = sk.client("halfclose", lab.far_ip, str(lab.http_port), "5000", via=[srv.url],
                  env=FAST, timeout=30)
    assert c.ok, c.describe()
    assert c["reply"].split() == [c["sent_sha256"], "5000"], c.describe()
    assert srv.errors == []


# --- hostile local clients on the control socket ------------------------------------

def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _control(sk) -> socket.socket:
    """A connection to the control socket. Its listen backlog is short (asyncio's 100):
    with a timeout set, a Unix connect() finding it full fails with EAGAIN at once
    instead of waiting, so retry (bounded)."""
    deadline = time.monotonic() + 5
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        try:
            s.connect(str(sk.runtime_dir / "control.sock"))
            return s
        except BlockingIOError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _closed_by_daemon(s: socket.socket, within: float) -> bytes:
    """Read until the daemon closes (bounded): what it said before closing."""
    s.settimeout(within)
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def _status_quickly(sk, within: float = 3.0) -> None:
    started = time.monotonic()
    reply = sk.control({"op": "status"}, timeout=within)
    assert reply.get("ok"), reply
    assert time.monotonic() - started < within


BAD_JSON = [
    b'{"op": 5}\n',
    b'{"op": "nope"}\n',
    b'{"no-op": 1}\n',
    b'{"op": "session", "via": 5}\n',
    b'{"op": "session", "via": ["socks4://10.77.1.2:10801"], "timeout": [1]}\n',
    b'{"op": "session", "via": ["socks4://10.77.1.2:10801"], "strategy": 7}\n',
    b'{"op": "session", "via": ["nonsense"]}\n',
    b'{"op": "session", "config": "/nonexistent/x.toml"}\n',
    b'{"op": "session", "via": {"socks4://10.77.1.2:10801": 1}, "timeout": -1}\n',
    b'{"op": "session", "via": ["socks4://10.77.1.2:10801"], "timeout": NaN}\n',
    b'{not json at all\n',
    b'{"op": "status"' + b' ' * 100 + b'\n',      # truncated object
]


def test_control_socket_survives_hostile_clients(lab: lablib.Lab, sk,
                                                 tmp_path: Path) -> None:
    """Truncated and malformed shim requests, random bytes, an oversized JSON line,
    broken JSON requests, a slow writer and 200 idle connections at once: status
    answers quickly throughout, a socksified curl through hop 1 works afterwards, the
    daemon is the same process, and its fd count returns to where it started."""
    res = sk.run(["true"], via=sk.hops(1))
    assert res.returncode == 0, sk.describe(res)
    pid = sk.daemon_pid()
    assert pid is not None
    _status_quickly(sk)
    base = _fds(pid)

    # a shim request cut short, then one with a bad version and an unknown op
    s = _control(sk)
    s.sendall(b"SKFY" + bytes(6))
    s.close()
    for bad in (b"SKFY" + bytes([9]) + bytes(43), b"SKFY\x01\x63" + bytes(42)):
        s = _control(sk)
        s.sendall(bad)
        reply = _closed_by_daemon(s, 5)
        s.close()
        # a FAIL (verdict 2) reply, code PROTO (7)
        assert len(reply) == 32 and reply[:4] == b"SKFY" and reply[5:7] == b"\x02\x07", reply
    # random bytes (not starting like either protocol)
    s = _control(sk)
    s.sendall(b"\xff" + os.urandom(4095))
    assert _closed_by_daemon(s, 5) == b""
    s.close()
    # 1 MiB of JSON without a newline: the daemon stops reading and closes
    s = _control(sk)
    started = time.monotonic()
    try:
        s.sendall(b'{"op": "' + b"a" * (1 << 20))
    except OSError:
        pass                                  # the daemon closed while we were sending
    _closed_by_daemon(s, 5)
    s.close()
    assert time.monotonic() - started < 5
    # broken JSON requests each get an error reply (and never a dead connection)
    # a policy file that is a FIFO: reading it would block the daemon's event loop
    fifo = tmp_path / "policy.fifo"
    os.mkfifo(fifo)
    unanswered = []
    for line in [*BAD_JSON, json.dumps({"op": "session", "config": str(fifo)}).encode()
                 + b"\n"]:
        s = _control(sk)
        s.sendall(line)
        s.shutdown(socket.SHUT_WR)
        reply = _closed_by_daemon(s, 5)
        s.close()
        try:
            doc = json.loads(reply)
            assert reply.endswith(b"\n") and doc["ok"] is False and doc["error"]
        except (ValueError, AssertionError, KeyError, TypeError):
            unanswered.append((line, reply))
    assert unanswered == [], f"{unanswered}\n{sk.daemon_log()}"
    _status_quickly(sk)

    # a slow writer and 200 silent connections, all at once
    idle = [_control(sk) for _ in range(200)]
    slow_done = threading.Event()

    def slow() -> None:
        with _control(sk) as w:
            for b in b'{"op"':
                w.sendall(bytes([b]))
                time.sleep(0.5)
        slow_done.set()
    t = threading.Thread(target=slow, daemon=True)
    t.start()
    try:
        lablib.wait_until(lambda: _fds(pid) >= base + 200, 5,
                          "the daemon to accept the 200 idle connections")
        _status_quickly(sk)
        res = sk.socksifyd("status", timeout=10)
        assert res.returncode == 0, sk.describe(res)
        out = tmp_path / "small.bin"
        res = sk.run(["curl", "-q", "-sS", "--max-time", "20", "-o", str(out),
                      lab.url("small.bin", marker("hostilectl"))], via=sk.hops(1),
                     timeout=30)
        assert res.returncode == 0, sk.describe(res)
        assert lablib.sha256_file(out) == lab.small_sha256
        t.join(10)
        assert slow_done.is_set()
    finally:
        for s in idle:
            s.close()
    assert sk.daemon_pid() == pid and Path(f"/proc/{pid}").exists()
    try:
        lablib.wait_until(lambda: _fds(pid) <= base + 2, 15,
                          "the daemon's fds to return to their count before")
    except TimeoutError:
        raise AssertionError(f"fds: {base} before, {_fds(pid)} now: "
                             f"{sorted(os.listdir(f'/proc/{pid}/fd'))}\n"
                             f"{sk.daemon_log()}") from None
    _status_quickly(sk)
    log = sk.daemon_log(200000)
    assert "Traceback" not in log and "never retrieved" not in log, log[-6000:]


# --- a hop dying mid-transfer -----------------------------------------------------------

@pytest.mark.parametrize("data_path", ["relay", "handoff"])
def test_hop_dies_mid_transfer(lab: lablib.Lab, sk, tmp_path: Path,
                               data_path: str) -> None:
    """A 16 MiB download at 2 MiB/s through hop 1; hop 1 is killed once data flows.
    curl ends with an error promptly (it does not hang, nor report success: 18, partial
    file, or 56, receive error); relayed, the daemon logs the connection's end; after
    the hop is back, the daemon serves again."""
    out = tmp_path / "big.bin"
    argv = sk.argv(["curl", "-q", "-sS", "--max-time", "60", "--limit-rate", "2M",
                    "-o", str(out), lab.url("big.bin", marker("dies"))],
                   via=[lab.hops[0].url], opts=["-v", "--data-path", data_path])
    try:
        with lab.small_client_buffers():
            bg = sk.spawn(argv)

            def flowing() -> bool:
                if not bg.running():
                    raise AssertionError("the transfer ended early\n"
                                         f"{bg.result().describe()}\n{sk.daemon_log()}")
                if data_path == "handoff":     # curl's own socket: watch its file
                    return out.exists() and out.stat().st_size > 0
                try:
                    conns = sk.control({"op": "connections"})["connections"]
                except (OSError, ValueError, RuntimeError):   # DaemonUnavailable
                    return False                # the daemon is still starting
                return any(c["down"] > 0 for c in conns)
            lablib.wait_until(flowing, 15, "the transfer to carry data")
            lab.stop_hop(1)
            killed = time.monotonic()
            res = bg.wait(20)                   # raises if curl hangs
            took = time.monotonic() - killed
    finally:
        lab.start_hop(1)
    # danted exits by closing its sockets: the daemon sees a clean FIN from hop 1, not
    # a reset, and passes the EOF on; curl knows the body is short (Content-Length)
    assert res.returncode in (18, 56), f"{res.describe()}\n{sk.daemon_log()}"
    assert took < 10, f"curl took {took:.1f}s to notice\n{res.describe()}"
    assert not out.exists() or out.stat().st_size < lablib.BIG_SIZE
    if data_path == "relay":
        lablib.wait_until(lambda: " closed after " in sk.daemon_log(20000), 5,
                          "the daemon to log the connection's end")
    still_serves(lab, sk, sk.daemon_pid())

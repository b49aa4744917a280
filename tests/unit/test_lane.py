"""The lane (lane/lane.c, through socksify.lanelib): the daemon's cached HANDOFF requests
answered in C. The test plays the shim on one end of a socketpair (the lane watches the
other) and fake hops are threads on 127.0.0.1 that read the requests exactly and answer
as scripted. No root; every wait is bounded by WAIT."""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import select
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterator, Sequence, TypeVar, Union, cast

import pytest

from conftest import skip_or_fail
from socksify import lanelib
from socksify.lanelib import Done, Given, LaneLib, Route
from socksify.protocol import control as wire

ROOT = Path(__file__).resolve().parents[2]
WAIT = 5.0                       # the longest any one wait may take
DEST = "203.0.113.5"             # the destination the program connects to
DEST_PORT = 443
PROC = 7
ROUTE_ID = 11
POOL = 3

T = TypeVar("T")
Step = Union[bytes, float, str]  # bytes: send; float: sleep; "close": close


def build(out: Path) -> None:
    cc = shutil.which("cc")
    if cc is None:
        skip_or_fail("no C compiler (cc) to build lane/lane.c")
    cmd = [cc, "-std=gnu11", "-O2", "-fPIC", "-shared", "-fvisibility=hidden", "-Wall",
           "-Wextra", "-Werror", "-D_GNU_SOURCE", "-Ishim/common", "-Ilane", "lane/lane.c",
           "-o", str(out), "-lpthread"]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and not run.stderr, run.stderr


@pytest.fixture(scope="session")
def lib(tmp_path_factory: pytest.TempPathFactory) -> LaneLib:
    out = tmp_path_factory.mktemp("lane") / "libsocksifylane.so"
    build(out)
    return LaneLib(out)


# --- fake hops -----------------------------------------------------------------------

def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


class FakeHop:
    """A listener standing for a whole chain: accepts one connection, reads `expect`
    bytes exactly (every hop's request), then plays `script`; then holds the connection
    open until closed."""

    def __init__(self, expect: int, script: Sequence[Step], host: str = "127.0.0.1"
                 ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.bind((host, 0))
        self.listener.listen(8)
        self.listener.settimeout(WAIT)
        self.host = host
        self.port: int = self.listener.getsockname()[1]
        self.expect = expect
        self.script = script
        self.got = b""
        self.requests_in = threading.Event()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._conn: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            conn, _ = self.listener.accept()
            self._conn = conn
            conn.settimeout(WAIT)
            self.got = recv_exactly(conn, self.expect)
            self.requests_in.set()
            for step in self.script:
                if isinstance(step, bytes):
                    conn.sendall(step)
                elif isinstance(step, float):
                    time.sleep(step)
                elif step == "close":
                    conn.close()
                    return
            self._stop.wait(WAIT)
        except OSError as exc:
            if not self._stop.is_set():
                self.error = exc

    def close(self) -> None:
        self._stop.set()
        self._thread.join(WAIT)
        if self._conn is not None:
            self._conn.close()
        self.listener.close()


# --- the shim's side -----------------------------------------------------------------

def socks4_request(host: str, port: int) -> bytes:
    return b"\x04\x01" + port.to_bytes(2, "big") + socket.inet_aton(host) + b"\x00"


SOCKS4_GRANTED = b"\x00\x5a" + bytes(6)
SOCKS5_GREETING = b"\x05\x01\x00"
SOCKS5_NO_AUTH = b"\x05\x00"


def socks5_request(host: str, port: int) -> bytes:
    return b"\x05\x01\x00\x01" + socket.inet_aton(host) + port.to_bytes(2, "big")


def socks5_reply(rep: int = 0, atyp: int = 1) -> bytes:
    if atyp == 1:
        addr = bytes([10, 0, 0, 1])
    elif atyp == 3:
        addr = bytes([11]) + b"example.net"
    else:
        addr = bytes(15) + b"\x01"
    return bytes([5, rep, 0, atyp]) + addr + (4321).to_bytes(2, "big")


SOCKS5_REQUESTS = SOCKS5_GREETING + socks5_request(DEST, DEST_PORT)
SOCKS5_KINDS = (lanelib.REPLY_SOCKS5_METHOD, lanelib.REPLY_SOCKS5)


def handoff_header(dest: str = DEST, port: int = DEST_PORT,
                   op: wire.Op = wire.Op.HANDOFF) -> bytes:
    return wire.ConnectRequest(ipaddress.ip_address(dest), port, op=op).dumps()


class Lane:
    """The lane for one test, and everything the test opened (closed at its end)."""

    def __init__(self, lib: LaneLib, notify: int) -> None:
        self.lib = lib
        self.notify = notify
        self.sockets: list[socket.socket] = []
        self.hops: list[FakeHop] = []
        self.given_fds: list[int] = []

    def hop(self, expect: int, script: Sequence[Step], host: str = "127.0.0.1"
            ) -> FakeHop:
        h = FakeHop(expect, script, host)
        self.hops.append(h)
        return h

    def control(self, proc: int = PROC, watch: bool = True
                ) -> tuple[socket.socket, socket.socket]:
        """(the shim's end, the lane's end), the lane's watched for proc."""
        shim, mine = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sockets += [shim, mine]
        shim.settimeout(WAIT)
        if watch:
            self.lib.watch(mine.fileno(), proc)
        return shim, mine

    def program(self, family: int = socket.AF_INET,
                kind: int = socket.SOCK_STREAM) -> socket.socket:
        sock = socket.socket(family, kind)
        self.sockets.append(sock)
        return sock

    def add(self, hop: FakeHop | None, requests: bytes, replies: Sequence[int],
            proc: int = PROC, dest: str = DEST, port: int = DEST_PORT,
            timeout_ms: int = 3000, hop1: bytes | None = None,
            session: bytes = bytes(8), pool: int = 0) -> Route:
        family, raw = wire.pack_addr(ipaddress.ip_address(dest))
        if hop1 is None and pool:
            hop1 = b""
        if hop1 is None:
            assert hop is not None
            hop1 = lanelib.sockaddr_of(hop.host, hop.port)
        route = Route(proc=proc, family=family, addr=raw, port=port, hop1=hop1,
                      timeout_ms=timeout_ms, requests=requests, replies=tuple(replies),
                      route=ROUTE_ID, session=session, pool=pool)
        self.lib.add(route)
        return route

    def ask(self, shim: socket.socket, header: bytes,
            sockets: Sequence[socket.socket] = ()) -> None:
        socket.send_fds(shim, [header], [s.fileno() for s in sockets])

    def answer(self, shim: socket.socket) -> wire.Reply:
        data = recv_exactly(shim, wire.REPLY_SIZE)
        assert len(data) == wire.REPLY_SIZE, f"the lane's answer: {data!r}"
        return wire.Reply.loads(data)

    def handoff(self, shim: socket.socket, sock: socket.socket, dest: str = DEST,
                port: int = DEST_PORT) -> wire.Reply:
        self.ask(shim, handoff_header(dest, port), [sock])
        return self.answer(shim)

    def _gather(self, fetch: Callable[[], list[T]], n: int) -> list[T]:
        got: list[T] = []
        deadline = time.monotonic() + WAIT
        while True:
            got += fetch()
            if len(got) >= n:
                return got
            left = deadline - time.monotonic()
            assert left > 0, f"waited {WAIT} s for {n} records, got {got}"
            select.select([self.notify], [], [], min(left, 0.05))
            self.drain_notify()

    def drain_notify(self) -> None:
        try:
            os.read(self.notify, 8)
        except BlockingIOError:
            pass

    def take(self) -> list[Given]:
        given = self.lib.take()
        for g in given:
            self.given_fds += g.fds
        return given

    def given(self, n: int = 1) -> list[Given]:
        return self._gather(self.take, n)

    def done(self, n: int = 1) -> list[Done]:
        return self._gather(self.lib.done, n)

    def tunnel(self, hop: FakeHop, pool: int = POOL, expires_in: float = WAIT,
               low: int = 0) -> None:
        """A pre-built tunnel into pool: a socket connected to hop, the lane's."""
        sock = socket.create_connection((hop.host, hop.port), timeout=WAIT)
        expires = time.monotonic_ns() + int(expires_in * 1e9)
        self.lib.pool_put(pool, sock.detach(), expires, low)

    def close(self) -> None:
        self.lib.stop()
        self.lib.pool_close(0)
        self.take()
        self.lib.done(1024)
        for fd in self.given_fds:
            os.close(fd)
        for h in self.hops:
            h.close()
        for s in self.sockets:
            s.close()
        for h in self.hops:
            assert h.error is None, f"fake hop on port {h.port}: {h.error!r}"


@pytest.fixture
def lane(lib: LaneLib) -> Iterator[Lane]:
    h = Lane(lib, lib.start())
    try:
        yield h
    finally:
        h.close()


def assert_refused_then_reusable(lane: Lane, sock: socket.socket) -> None:
    """After a FAIL the program's socket is not connected, and connects again."""
    with pytest.raises(OSError) as info:
        sock.getpeername()
    assert info.value.errno == errno.ENOTCONN
    other = socket.socket()
    lane.sockets.append(other)
    other.bind(("127.0.0.1", 0))
    other.listen(1)
    sock.settimeout(WAIT)
    sock.connect(other.getsockname())
    assert sock.getpeername() == other.getsockname()


# --- the header and the ABI ----------------------------------------------------------

def _normalized(text: str) -> str:
    return " ".join(re.sub(r"/\*.*?\*/", " ", text, flags=re.S).split())


def test_lanelib_cdef_is_the_header_block() -> None:
    header = (ROOT / "lane" / "lane.h").read_text()
    start = header.index("struct lane_route {")
    end = header.index("/* end of the cffi block */")
    assert _normalized(header[start:end]) == _normalized(lanelib.CDEF)


def test_struct_layout_matches_the_compiler(tmp_path: Path, lib: LaneLib) -> None:
    import cffi  # type: ignore[import-untyped,unused-ignore]

    ffi = cffi.FFI()
    ffi.cdef(lanelib.CDEF)
    fields = {"lane_route": ["requests", "n_replies", "route", "pool"],
              "lane_pool_state": ["low", "oldest_expires_ns", "discarded", "family",
                                  "target"],
              "lane_given": ["len", "data"],
              "lane_done": ["err", "started_ns", "local", "peer_len", "bytes_received"]}
    src = tmp_path / "layout.c"
    lines = ['#include <stdio.h>', '#include <stddef.h>', '#include "lane.h"',
             "int main(void) {"]
    for struct, names in fields.items():
        lines.append(f'printf("%zu\\n", sizeof(struct {struct}));')
        lines += [f'printf("%zu\\n", offsetof(struct {struct}, {n}));' for n in names]
    src.write_text("\n".join(lines + ["return 0; }"]))
    exe = tmp_path / "layout"
    subprocess.run(["cc", "-Ilane", "-Ishim/common", str(src), "-o", str(exe)], cwd=ROOT,
                   check=True, timeout=60)
    printed = subprocess.run([str(exe)], capture_output=True, text=True, check=True,
                             timeout=10).stdout.split()
    expected = []
    for struct, names in fields.items():
        expected.append(ffi.sizeof(f"struct {struct}"))
        expected += [ffi.offsetof(f"struct {struct}", n) for n in names]
    assert [int(x) for x in printed] == expected


def test_start_twice_gives_the_same_fd_and_restarts(lane: Lane) -> None:
    assert lane.lib.start() == lane.notify
    lane.lib.stop()
    assert lane.lib.start() == lane.notify
    with pytest.raises(OSError) as info:
        lane.lib.watch(-1, PROC)
    assert info.value.errno == errno.EBADF


def test_a_bad_route_is_refused(lane: Lane) -> None:
    hop1 = lanelib.sockaddr_of("127.0.0.1", 1080)
    good = Route(PROC, 4, bytes(16), 80, hop1, 1000, b"x", (1,), 1)
    lane.lib.add(good)
    for bad in (Route(PROC, 5, bytes(16), 80, hop1, 1000, b"x", (1,), 1),
                Route(PROC, 4, bytes(16), 80, hop1[:8], 1000, b"x", (1,), 1),
                Route(PROC, 4, bytes(16), 80, hop1, 0, b"x", (1,), 1),
                Route(PROC, 4, bytes(16), 80, hop1, 1000, b"x", (4,), 1)):
        with pytest.raises(OSError) as info:
            lane.lib.add(bad)
        assert info.value.errno == errno.EINVAL


# --- READY ---------------------------------------------------------------------------

def test_socks4_one_hop_ready(lane: Lane) -> None:
    req = socks4_request(DEST, DEST_PORT)
    hop = lane.hop(len(req), [SOCKS4_GRANTED + b"!"])
    lane.add(hop, req, [lanelib.REPLY_SOCKS4])
    shim, mine = lane.control()
    sock = lane.program()
    reply = lane.handoff(shim, sock)
    assert reply.verdict is wire.Verdict.READY and reply.code is wire.Code.NONE
    assert hop.got == req
    sock.settimeout(WAIT)
    assert sock.getpeername() == ("127.0.0.1", hop.port)
    assert sock.recv(16) == b"!"          # nothing past the reply was consumed
    [d] = lane.done()
    assert (d.code, d.route, d.proc, d.fd, d.failed, d.err) == \
        (0, ROUTE_ID, PROC, mine.fileno(), 1, 0)
    assert (d.family, d.addr[:4], d.port) == (4, socket.inet_aton(DEST), DEST_PORT)
    assert d.cookie != 0
    assert lanelib.address_of(d.local) == sock.getsockname()
    assert lanelib.address_of(d.peer) == ("127.0.0.1", hop.port)
    # the kernel's counts: what it acked (its SYN included) and received (the "!" too)
    assert d.bytes_acked >= len(req) and d.bytes_received >= len(SOCKS4_GRANTED)
    assert 0 < d.started_ns <= d.answered_ns


def test_a_route_serves_its_own_session_only(lane: Lane) -> None:
    """A request whose session field is not the route's goes to the daemon, which
    decides under that session's policy; the route's own session is served."""
    req = socks4_request(DEST, DEST_PORT)
    hop = lane.hop(len(req), [SOCKS4_GRANTED + b"!"])
    lane.add(hop, req, [lanelib.REPLY_SOCKS4], session=b"sessionA")
    shim, mine = lane.control()
    other = wire.ConnectRequest(ipaddress.ip_address(DEST), DEST_PORT,
                                session=b"sessionB", op=wire.Op.HANDOFF).dumps()
    lane.ask(shim, other, [lane.program()])
    [g] = lane.given()
    assert g.data == other and hop.got == b""
    lane.lib.watch(mine.fileno(), PROC)
    sock = lane.program()
    own = wire.ConnectRequest(ipaddress.ip_address(DEST), DEST_PORT,
                              session=b"sessionA", op=wire.Op.HANDOFF).dumps()
    lane.ask(shim, own, [sock])
    assert lane.answer(shim).verdict is wire.Verdict.READY
    assert hop.got == req


@pytest.mark.parametrize("together", [True, False], ids=["together", "apart"])
def test_pipelined_socks4(lane: Lane, together: bool) -> None:
    reqs = socks4_request("127.0.0.2", 1080) + socks4_request("127.0.0.3", 1080) + \
        socks4_request(DEST, DEST_PORT)
    script: list[Step] = [SOCKS4_GRANTED * 3 + b"!"] if together else \
        [SOCKS4_GRANTED, 0.05, SOCKS4_GRANTED[:3], 0.05, SOCKS4_GRANTED[3:]
         + SOCKS4_GRANTED, 0.05, b"!"]
    hop = lane.hop(len(reqs), script)
    lane.add(hop, reqs, [lanelib.REPLY_SOCKS4] * 3)
    shim, _ = lane.control()
    sock = lane.program()
    assert lane.handoff(shim, sock).verdict is wire.Verdict.READY
    assert hop.got == reqs
    sock.settimeout(WAIT)
    assert sock.recv(16) == b"!"
    [d] = lane.done()
    assert (d.code, d.failed) == (0, 3)


@pytest.mark.parametrize("atyp", [1, 3, 4])
@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
def test_socks5_ready(lane: Lane, atyp: int, bytewise: bool) -> None:
    answer = SOCKS5_NO_AUTH + socks5_reply(0, atyp) + b"!"
    script: list[Step] = [answer]
    if bytewise:
        script = []
        for i in range(len(answer)):
            script += [answer[i:i + 1], 0.005]
    hop = lane.hop(len(SOCKS5_REQUESTS), script)
    lane.add(hop, SOCKS5_REQUESTS, SOCKS5_KINDS)
    shim, _ = lane.control()
    sock = lane.program()
    assert lane.handoff(shim, sock).verdict is wire.Verdict.READY
    assert hop.got == SOCKS5_REQUESTS
    sock.settimeout(WAIT)
    assert sock.recv(16) == b"!"
    [d] = lane.done()
    assert (d.code, d.failed) == (0, 2)


def test_ipv6_destination_through_an_ipv4_hop(lane: Lane) -> None:
    dest = "2001:db8::7"
    req = b"\x05\x01\x00\x04" + socket.inet_pton(socket.AF_INET6, dest) + b"\x00\x50"
    hop = lane.hop(len(SOCKS5_GREETING + req), [SOCKS5_NO_AUTH + socks5_reply(0, 4)])
    lane.add(hop, SOCKS5_GREETING + req, SOCKS5_KINDS, dest=dest, port=80)
    shim, _ = lane.control()
    sock = lane.program()
    assert lane.handoff(shim, sock, dest, 80).verdict is wire.Verdict.READY
    [d] = lane.done()
    assert (d.code, d.family, d.addr, d.port) == \
        (0, 6, socket.inet_pton(socket.AF_INET6, dest), 80)


def test_ipv6_hop(lane: Lane) -> None:
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        skip_or_fail("no IPv6 loopback here")
    req = socks4_request(DEST, DEST_PORT)
    hop = lane.hop(len(req), [SOCKS4_GRANTED], host="::1")
    lane.add(hop, req, [lanelib.REPLY_SOCKS4])
    shim, _ = lane.control()
    sock = lane.program(socket.AF_INET6)
    assert lane.handoff(shim, sock).verdict is wire.Verdict.READY
    assert sock.getpeername()[:2] == ("::1", hop.port)


def test_program_rcvlowat_is_kept(lane: Lane) -> None:
    req = socks4_request(DEST, DEST_PORT)
    hop = lane.hop(len(req), [SOCKS4_GRANTED])
    lane.add(hop, req, [lanelib.REPLY_SOCKS4])
    shim, _ = lane.control()
    sock = lane.program()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 64)
    assert lane.handoff(shim, sock).verdict is wire.Verdict.READY
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 64


def test_a_socks4_reply_with_version_4_is_a_grant_as_for_the_engine(lane: Lane) -> None:
    """Some SOCKS4 servers answer with VN 4, not 0; protocol/socks4.py takes both."""
    req = socks4_request(DEST, DEST_PORT)
    hop = lane.hop(len(req), [b"\x04\x5a" + bytes(6) + b"!"])
    lane.add(hop, req, [lanelib.REPLY_SOCKS4])
    shim, _ = lane.control()
    sock = lane.program()
    assert lane.handoff(shim, sock).verdict is wire.Verdict.READY
    sock.settimeout(WAIT)
    assert sock.recv(16) == b"!"


# --- FAIL ----------------------------------------------------------------------------

@pytest.mark.parametrize("requests, kinds, answer, code, err, failed, got", [
    (socks4_request(DEST, DEST_PORT), (lanelib.REPLY_SOCKS4,),
     b"\x00\x5b" + bytes(6), wire.Code.CONNREFUSED, errno.ECONNREFUSED, 0, 8),
    (SOCKS5_REQUESTS, SOCKS5_KINDS, SOCKS5_NO_AUTH + socks5_reply(5),
     wire.Code.CONNREFUSED, errno.ECONNREFUSED, 1, 5),
    (SOCKS5_REQUESTS, SOCKS5_KINDS, SOCKS5_NO_AUTH + socks5_reply(4),
     wire.Code.HOSTUNREACH, errno.EHOSTUNREACH, 1, 5),
    (SOCKS5_REQUESTS, SOCKS5_KINDS, SOCKS5_NO_AUTH + socks5_reply(3),
     wire.Code.NETUNREACH, errno.ENETUNREACH, 1, 5),
    (SOCKS5_REQUESTS, SOCKS5_KINDS, b"\x05\xff", wire.Code.CONNREFUSED,
     errno.ECONNREFUSED, 0, 2),
    (SOCKS5_REQUESTS, SOCKS5_KINDS, SOCKS5_NO_AUTH + b"\x04" + socks5_reply()[1:],
     wire.Code.CONNREFUSED, errno.EPROTO, 1, 5),                    # VER 4
    (SOCKS5_REQUESTS, SOCKS5_KINDS, SOCKS5_NO_AUTH + b"\x05\x00\x00\x02\x00",
     wire.Code.CONNREFUSED, errno.EPROTO, 1, 5),                    # ATYP 2
    (socks4_request(DEST, DEST_PORT), (lanelib.REPLY_SOCKS4,),
     b"\x05\x5a" + bytes(6), wire.Code.CONNREFUSED, errno.EPROTO, 0, 8),
    (SOCKS5_REQUESTS, SOCKS5_KINDS, SOCKS5_NO_AUTH + b"\x05\x00\x01\x01\x00",
     wire.Code.CONNREFUSED, errno.EPROTO, 1, 5),                    # RSV 1
], ids=["socks4-cd91", "socks5-rep5", "socks5-rep4", "socks5-rep3", "method-ff",
        "socks5-ver4", "socks5-atyp2", "socks4-vn5", "socks5-rsv1"])
def test_refusals(lane: Lane, requests: bytes, kinds: tuple[int, ...], answer: bytes,
                  code: wire.Code, err: int, failed: int, got: int) -> None:
    hop = lane.hop(len(requests), [answer])
    lane.add(hop, requests, kinds)
    shim, _ = lane.control()
    sock = lane.program()
    reply = lane.handoff(shim, sock)
    assert (reply.verdict, reply.code) == (wire.Verdict.FAIL, code)
    [d] = lane.done()
    assert (d.code, d.err, d.failed, d.got) == (code, err, failed, got)
    assert d.reply == answer[len(SOCKS5_NO_AUTH) if failed else 0:][:2]
    assert d.local == b"" and d.peer == b""
    assert_refused_then_reusable(lane, sock)
    # the process's routes went with the refusal: its next connect is the daemon's
    again = lane.program()
    lane.ask(shim, handoff_header(), [again])
    [g] = lane.given()
    assert g.data == handoff_header() and len(g.fds) == 1


def test_hop_refuses_the_tcp_connect(lane: Lane) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    lane.add(None, socks4_request(DEST, DEST_PORT), [lanelib.REPLY_SOCKS4],
             hop1=lanelib.sockaddr_of("127.0.0.1", port))
    shim, _ = lane.control()
    sock = lane.program()
    reply = lane.handoff(shim, sock)
    assert (reply.verdict, reply.code) == (wire.Verdict.FAIL, wire.Code.CONNREFUSED)
    [d] = lane.done()
    assert (d.failed, d.err) == (lanelib.FAILED_CONNECT, errno.ECONNREFUSED)
    assert_refused_then_reusable(lane, sock)


def test_silent_hop_times_out(lane: Lane) -> None:
    req = socks4_request(DEST, DEST_PORT)
    hop = lane.hop(len(req), [])
    lane.add(hop, req, [lanelib.REPLY_SOCKS4], timeout_ms=200)
    shim, _ = lane.control()
    sock = lane.program()
    began = time.monotonic()
    reply = lane.handoff(shim, sock)
    took = time.monotonic() - began
    assert (reply.verdict, reply.code) == (wire.Verdict.FAIL, wire.Code.TIMEDOUT)
    assert 0.19 <= took < 2.0
    [d] = lane.done()
    assert (d.err, d.failed, d.got) == (errno.ETIMEDOUT, 0, 0)
    assert 190e6 <= d.answered_ns - d.started_ns < 2e9
    assert_refused_then_reusable(lane, sock)


@pytest.mark.parametrize("answer, failed, got", [
    (SOCKS4_GRANTED[:3], 0, 3), (b"", 0, 0), (SOCKS4_GRANTED + SOCKS4_GRANTED[:7], 1, 7),
])
def test_eof_in_a_reply(lane: Lane, answer: bytes, failed: int, got: int) -> None:
    reqs = socks4_request("127.0.0.2", 1080) + socks4_request(DEST, DEST_PORT)
    hop = lane.hop(len(reqs), [answer, "close"])
    lane.add(hop, reqs, [lanelib.REPLY_SOCKS4] * 2)
    shim, _ = lane.control()
    sock = lane.program()
    reply = lane.handoff(shim, sock)
    assert (reply.verdict, reply.code) == (wire.Verdict.FAIL, wire.Code.CONNREFUSED)
    [d] = lane.done()
    assert (d.failed, d.got) == (failed, got)
    assert d.err in (0, errno.ECONNRESET)


# --- what is not the lane's ----------------------------------------------------------

def _not_the_lanes(lane: Lane, case: str) -> tuple[bytes, list[socket.socket]]:
    if case == "miss":
        return handoff_header(DEST, DEST_PORT + 1), [lane.program()]
    if case == "other-proc":
        return handoff_header(), [lane.program()]
    if case == "resolve":
        return wire.ResolveRequest("example.org").dumps(), []
    if case == "connect":
        return handoff_header(op=wire.Op.CONNECT), []
    if case == "two-fds":
        return handoff_header(), [lane.program(), lane.program()]
    if case == "no-fd":
        return handoff_header(), []
    if case == "ipv6-socket":        # hop 1 is IPv4: this socket cannot reach it
        return handoff_header(), [lane.program(socket.AF_INET6)]
    assert case == "udp-socket"
    return handoff_header(), [lane.program(kind=socket.SOCK_DGRAM)]


@pytest.mark.parametrize("case", ["miss", "other-proc", "resolve", "connect", "two-fds",
                                  "no-fd", "ipv6-socket", "udp-socket"])
def test_given_back_exactly(lane: Lane, case: str) -> None:
    lane.add(None, socks4_request(DEST, DEST_PORT), [lanelib.REPLY_SOCKS4],
             hop1=lanelib.sockaddr_of("127.0.0.1", 9))
    shim, mine = lane.control(proc=8 if case == "other-proc" else PROC)
    data, sent = _not_the_lanes(lane, case)
    lane.ask(shim, data, sent)
    [g] = lane.given()
    # the header only: a body (RESOLVE's name) stays in the socket for the daemon
    assert (g.fd, g.err, g.data) == (mine.fileno(), 0, data[:48])
    if len(data) > 48:       # RESOLVE: its name stays in the socket for the daemon
        assert mine.recv(1024, socket.MSG_DONTWAIT) == data[48:]
    assert len(g.fds) == len(sent)
    for fd, sock in zip(g.fds, sent):
        assert os.fstat(fd).st_ino == os.fstat(sock.fileno()).st_ino
    # no longer read by the lane: the next request stays in the socket ...
    nxt = handoff_header(DEST, 1)
    shim.sendall(nxt)
    time.sleep(0.2)
    assert lane.take() == []
    assert mine.recv(1024, socket.MSG_PEEK | socket.MSG_DONTWAIT) == nxt
    with pytest.raises(FileNotFoundError):
        lane.lib.release(mine.fileno(), 0)
    # ... until watched again
    lane.lib.watch(mine.fileno(), PROC)
    [g] = lane.given()
    assert (g.fd, g.data, g.fds) == (mine.fileno(), nxt, ())
    with pytest.raises(BlockingIOError):
        mine.recv(1024, socket.MSG_DONTWAIT)


def test_eof_on_the_control_connection(lane: Lane) -> None:
    shim, mine = lane.control()
    shim.close()
    [g] = lane.given()
    assert (g.fd, g.err, g.data, g.fds) == (mine.fileno(), 0, b"", ())


def test_notify_fd_becomes_readable(lane: Lane) -> None:
    lane.drain_notify()
    assert select.select([lane.notify], [], [], 0)[0] == []
    shim, _ = lane.control()
    lane.ask(shim, handoff_header(DEST, 1))
    assert select.select([lane.notify], [], [], WAIT)[0] == [lane.notify]
    assert len(lane.take()) == 1


def test_forget(lane: Lane) -> None:
    req = socks4_request(DEST, DEST_PORT)
    hop = lane.hop(len(req), [SOCKS4_GRANTED])
    lane.add(hop, req, [lanelib.REPLY_SOCKS4])
    shim, mine = lane.control()
    lane.lib.forget(PROC + 1)           # another process's: this one's route stays
    assert lane.handoff(shim, lane.program()).verdict is wire.Verdict.READY
    for proc in (PROC, 0):
        lane.lib.forget(proc)
        sock = lane.program()
        lane.ask(shim, handoff_header(), [sock])
        [g] = lane.given()
        assert g.data == handoff_header() and len(g.fds) == 1
        lane.add(hop, req, [lanelib.REPLY_SOCKS4])
        lane.lib.watch(mine.fileno(), PROC)


def test_release(lane: Lane) -> None:
    never, _ = lane.control(watch=False)
    with pytest.raises(FileNotFoundError):
        lane.lib.release(never.fileno(), 0)
    req = socks4_request(DEST, DEST_PORT)
    hop = lane.hop(len(req), [0.3, SOCKS4_GRANTED])
    lane.add(hop, req, [lanelib.REPLY_SOCKS4])
    shim, mine = lane.control()
    sock = lane.program()
    lane.ask(shim, handoff_header(), [sock])
    assert hop.requests_in.wait(WAIT)
    assert lane.lib.release(mine.fileno(), 0) is False      # in flight
    assert lane.answer(shim).verdict is wire.Verdict.READY
    time.sleep(0.1)
    assert lane.lib.release(mine.fileno(), 5000) is False   # not idle that long
    assert lane.lib.release(mine.fileno(), 50) is True
    with pytest.raises(FileNotFoundError):
        lane.lib.release(mine.fileno(), 0)
    lane.ask(shim, handoff_header(DEST, 1))               # nobody reads it now
    time.sleep(0.1)
    assert lane.take() == []
    assert len(mine.recv(1024, socket.MSG_DONTWAIT)) == wire.REQUEST_SIZE


def test_release_leaves_an_unread_request(lane: Lane) -> None:
    shim, mine = lane.control()
    lane.ask(shim, handoff_header(DEST, 1))
    # whichever comes first, the request is never lost: release refuses while it
    # waits or is read, or the lane has given it back already; never "idle"
    try:
        assert lane.lib.release(mine.fileno(), 0) is False
    except FileNotFoundError:
        pass
    [g] = lane.given()
    assert g.data == handoff_header(DEST, 1)


def test_one_connection_many_requests_leaks_nothing(lane: Lane) -> None:
    req = socks4_request(DEST, DEST_PORT)
    shim, mine = lane.control()
    fds_before = len(os.listdir("/proc/self/fd"))
    for i in range(20):
        hop = lane.hop(len(req), [SOCKS4_GRANTED] if i % 2 else [b"\x00\x5b" + bytes(6)])
        lane.add(hop, req, [lanelib.REPLY_SOCKS4])
        sock = socket.socket()
        reply = lane.handoff(shim, sock)
        assert reply.verdict is (wire.Verdict.READY if i % 2 else wire.Verdict.FAIL)
        sock.close()
        hop.close()
        lane.hops.remove(hop)
    assert [d.code for d in lane.done(20)] == [0 if i % 2 else 1 for i in range(20)]
    assert len(os.listdir("/proc/self/fd")) == fds_before   # the lane's copies closed


def test_many_in_flight(lane: Lane) -> None:
    n, delay = 4, 0.4
    req = socks4_request(DEST, DEST_PORT)
    pairs = []
    for i in range(n):
        hop = lane.hop(len(req), [delay, SOCKS4_GRANTED + bytes([i])])
        lane.add(hop, req, [lanelib.REPLY_SOCKS4], proc=100 + i)
        shim, _ = lane.control(proc=100 + i)
        pairs.append((shim, lane.program()))
    began = time.monotonic()
    for shim, sock in pairs:
        lane.ask(shim, handoff_header(), [sock])
    for i, (shim, sock) in enumerate(pairs):
        assert lane.answer(shim).verdict is wire.Verdict.READY
        sock.settimeout(WAIT)
        assert sock.recv(1) == bytes([i])
    assert time.monotonic() - began < delay * n * 0.75      # not one after the other
    assert sorted(d.proc for d in lane.done(n)) == [100 + i for i in range(n)]


def test_stop_answers_a_connect_in_flight(lane: Lane) -> None:
    req = socks4_request(DEST, DEST_PORT)
    hop = lane.hop(len(req), [])
    lane.add(hop, req, [lanelib.REPLY_SOCKS4])
    shim, mine = lane.control()
    idle_shim, idle = lane.control()
    sock = lane.program()
    lane.ask(shim, handoff_header(), [sock])
    assert hop.requests_in.wait(WAIT)
    lane.lib.stop()
    reply = lane.answer(shim)
    assert (reply.verdict, reply.code) == (wire.Verdict.FAIL, wire.Code.TIMEDOUT)
    [d] = lane.lib.done()              # the record says why: the lane stopped
    assert (d.code, d.err) == (wire.Code.TIMEDOUT, errno.ECANCELED)
    given = lane.take()
    assert sorted((g.fd, g.err, g.data) for g in given) == sorted(
        (fd, lanelib.GIVEN_STOPPED, b"") for fd in (mine.fileno(), idle.fileno()))
    with pytest.raises(OSError) as info:
        lane.lib.watch(mine.fileno(), PROC)
    assert info.value.errno == errno.ESRCH


# --- pre-built tunnels (pool routes: SWAP) --------------------------------------------

def test_a_pool_keeps_hands_out_and_closes_tunnels(lane: Lane) -> None:
    assert lane.lib.pool_state(POOL) is None and lane.lib.pool_take(POOL) is None
    hops = [lane.hop(0, []) for _ in range(2)]
    for h in hops:
        lane.tunnel(h, low=1)
    state = lane.lib.pool_state(POOL)
    assert state is not None
    assert (state.ready, state.low, state.taken, state.discarded, state.family) == \
        (2, 1, 0, 0, socket.AF_INET)
    fd = lane.lib.pool_take(POOL)
    assert fd is not None
    with socket.socket(fileno=fd) as first:       # the oldest first
        assert first.getpeername() == ("127.0.0.1", hops[0].port)
    state = lane.lib.pool_state(POOL)
    assert state is not None and (state.ready, state.taken) == (1, 1)
    lane.lib.pool_close(POOL)
    assert lane.lib.pool_state(POOL) is None and lane.lib.pool_take(POOL) is None
    udp = lane.program(kind=socket.SOCK_DGRAM)
    for pool, fd in ((POOL, udp.fileno()), (0, udp.fileno()), (POOL, -1)):
        with pytest.raises(OSError) as info:
            lane.lib.pool_put(pool, fd, time.monotonic_ns(), 0)
        assert info.value.errno == errno.EINVAL


def test_a_pool_throws_away_expired_and_readable_tunnels(lane: Lane) -> None:
    """A tunnel past its expiry, or readable (here: its hop closed it), is closed and
    counted discarded; a good one stays."""
    lane.tunnel(lane.hop(0, []), expires_in=-1.0)
    closing = lane.hop(0, ["close"])
    lane.tunnel(closing)
    good = lane.hop(0, [])
    lane.tunnel(good)
    closing.requests_in.wait(WAIT)
    deadline = time.monotonic() + WAIT
    while (state := lane.lib.pool_state(POOL)) is not None and state.ready > 1:
        assert time.monotonic() < deadline, state
        time.sleep(0.01)
    assert state is not None and (state.ready, state.discarded) == (1, 2), state
    fd = lane.lib.pool_take(POOL)
    assert fd is not None
    with socket.socket(fileno=fd) as sock:
        assert sock.getpeername() == ("127.0.0.1", good.port)


@pytest.mark.parametrize("socks", [4, 5])
def test_a_pool_route_finishes_a_tunnel_and_swaps_it_in(lane: Lane, socks: int) -> None:
    """The last hop's request on the oldest tunnel, its reply read exactly, and SWAP
    with the tunnel attached; the program's socket is not touched."""
    if socks == 4:
        req, kinds, grant = (socks4_request(DEST, DEST_PORT), [lanelib.REPLY_SOCKS4],
                             SOCKS4_GRANTED)
    else:
        req, kinds, grant = SOCKS5_REQUESTS, list(SOCKS5_KINDS), \
            SOCKS5_NO_AUTH + socks5_reply()
    hop = lane.hop(len(req), [grant + b"!"])
    lane.tunnel(hop)
    lane.add(None, req, kinds, pool=POOL)
    shim, mine = lane.control()
    sock = lane.program()
    socket.send_fds(shim, [handoff_header()], [sock.fileno()])
    data, fds, _, _ = socket.recv_fds(shim, wire.REPLY_SIZE, 2)
    reply = wire.Reply.loads(data)
    assert reply.verdict is wire.Verdict.SWAP and reply.code is wire.Code.NONE
    assert len(fds) == 1
    assert hop.got == req
    with socket.socket(fileno=fds[0]) as tunnel:
        tunnel.settimeout(WAIT)
        assert tunnel.getpeername() == ("127.0.0.1", hop.port)
        assert tunnel.recv(16) == b"!"        # nothing past the reply was consumed
        [d] = lane.done()
        assert (d.code, d.route, d.fd, d.failed) == (0, ROUTE_ID, mine.fileno(), len(kinds))
        assert lanelib.address_of(d.local) == tunnel.getsockname()
        assert lanelib.address_of(d.peer) == ("127.0.0.1", hop.port)
    with pytest.raises(OSError) as info:
        sock.getpeername()
    assert info.value.errno == errno.ENOTCONN
    state = lane.lib.pool_state(POOL)
    assert state is not None and (state.ready, state.taken) == (0, 1)


@pytest.mark.parametrize("case", ["empty", "bound", "ipv6-socket"])
def test_a_pool_route_leaves_what_it_cannot_swap_to_the_daemon(lane: Lane,
                                                                 case: str) -> None:
    """No tunnel waiting, a program's socket bound to a port of its own (a tunnel's
    would lose it), or of another family than the tunnels: the request is given
    back as read, and the tunnels stay."""
    req = socks4_request(DEST, DEST_PORT)
    if case != "empty":
        lane.tunnel(lane.hop(len(req), []))
    lane.add(None, req, [lanelib.REPLY_SOCKS4], pool=POOL)
    shim, mine = lane.control()
    sock = lane.program(socket.AF_INET6 if case == "ipv6-socket" else socket.AF_INET)
    if case == "bound":
        sock.bind(("127.0.0.1", 0))
    lane.ask(shim, handoff_header(), [sock])
    [g] = lane.given()
    assert (g.fd, g.data, len(g.fds)) == (mine.fileno(), handoff_header(), 1)
    state = lane.lib.pool_state(POOL)
    assert (state.ready if state else 0) == (0 if case == "empty" else 1)


@pytest.mark.parametrize("script", [["close"], [b"\x00\x5b\x00", "close"],
                                    [b"\x07\x5a" + bytes(6)]],
                         ids=["closed", "cut-short", "broken"])
def test_a_tunnel_that_fails_goes_back_to_the_daemon_with_the_request(
        lane: Lane, script: list[Step]) -> None:
    """A pre-built tunnel that fails without the last hop's answer (closed, a reply cut
    short or broken) may be one that died while it waited: it is thrown away, the
    request given back as read with the program's socket (untouched), and the
    process's routes dropped; nothing is answered."""
    req = socks4_request(DEST, DEST_PORT)
    hop = lane.hop(len(req), script)
    lane.tunnel(hop)
    lane.tunnel(lane.hop(0, []))
    lane.add(None, req, [lanelib.REPLY_SOCKS4], pool=POOL)
    shim, mine = lane.control()
    sock = lane.program()
    lane.ask(shim, handoff_header(), [sock])
    [g] = lane.given()
    assert (g.fd, g.err, g.data) == (mine.fileno(), 0, handoff_header())
    [fd] = g.fds
    assert os.fstat(fd).st_ino == os.fstat(sock.fileno()).st_ino
    assert hop.got == req
    assert select.select([shim], [], [], 0)[0] == []   # no answer: the daemon's to give
    assert lane.lib.done() == []
    state = lane.lib.pool_state(POOL)
    assert state is not None and (state.ready, state.taken, state.discarded) == (1, 1, 1)
    # the route went with the failure: the next request is the daemon's too
    lane.lib.watch(mine.fileno(), PROC)
    lane.ask(shim, handoff_header(), [sock])
    [g] = lane.given()
    assert g.data == handoff_header()
    state = lane.lib.pool_state(POOL)
    assert state is not None and state.ready == 1


@pytest.mark.parametrize("socks", [4, 5])
def test_a_refusal_the_last_hop_answers_on_a_tunnel_is_the_programs(
        lane: Lane, socks: int) -> None:
    """A refusal the last hop answered on a pre-built tunnel is the target's (or the
    hop's) word, which a fresh chain would only hear again: FAIL with its code, as on
    any route, the tunnel closed, nothing given back, and one attempt at the target."""
    if socks == 4:
        req, kinds, answer = (socks4_request(DEST, DEST_PORT), [lanelib.REPLY_SOCKS4],
                              b"\x00\x5b" + bytes(6))
        code, failed = wire.Code.CONNREFUSED, 0
    else:               # rep 4, host unreachable: after the greeting's reply
        req, kinds, answer = SOCKS5_REQUESTS, list(SOCKS5_KINDS), \
            SOCKS5_NO_AUTH + socks5_reply(rep=4)
        code, failed = wire.Code.HOSTUNREACH, 1
    hop = lane.hop(len(req), [answer])
    lane.tunnel(hop)
    lane.tunnel(lane.hop(0, []))
    lane.add(None, req, kinds, pool=POOL)
    shim, mine = lane.control()
    sock = lane.program()
    lane.ask(shim, handoff_header(), [sock])
    reply = lane.answer(shim)
    assert (reply.verdict, reply.code) == (wire.Verdict.FAIL, code)
    [d] = lane.done()
    assert (d.code, d.failed, d.route) == (code, failed, ROUTE_ID)
    assert lane.lib.take(8) == []
    assert hop.got == req
    with pytest.raises(OSError) as info:        # the program's socket: never connected
        sock.getpeername()
    assert info.value.errno == errno.ENOTCONN
    state = lane.lib.pool_state(POOL)
    assert state is not None and (state.ready, state.taken, state.discarded) == (1, 1, 0)
    # the route went with the failure, as after any: the next request is the daemon's
    lane.ask(shim, handoff_header(), [sock])
    [g] = lane.given()
    assert g.data == handoff_header()


def test_a_pool_keeps_its_ready_tunnels_in_the_lane(lib: LaneLib) -> None:
    """chains/pool.py with the lane's store (listeners/lane.py LaneTunnels): what it
    builds waits in the lane's pool, its own takes come from there, and a take by the
    lane (taken_elsewhere) is refilled as its own would be. Builds are socket pairs."""
    import asyncio

    from socksify.chains.health import HopHealth
    from socksify.chains.pool import Prebuilt, TunnelPool
    from socksify.chains.spec import ChainSpec
    from socksify.listeners.lanetunnels import LaneTunnels
    from socksify.proxies import Proxy
    from socksify.sockstream import RawStream

    peers: list[socket.socket] = []

    class Pool(TunnelPool):
        async def _build(self) -> Prebuilt:
            ours, theirs = socket.socketpair()
            peers.append(theirs)
            return Prebuilt(RawStream(ours, owned=True), self.route, time.monotonic())

    async def until(what: str, check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + WAIT
        while not check():
            assert time.monotonic() < deadline, f"not within {WAIT}s: {what}"
            await asyncio.sleep(0.005)

    async def main() -> dict[str, int]:
        spec = ChainSpec("t", (Proxy.parse("socks4://10.0.0.1:1080"),
                               Proxy.parse("socks4://10.0.0.2:1080")), prebuilt=4)
        # _build is the test's: the lane builds nothing, nor refills
        lane = cast(Any, SimpleNamespace(lib=lib, refill=lambda *_: False,
                                         unrefill=lambda _: None))
        pool = Pool(spec, HopHealth(), lambda s: LaneTunnels(lane, POOL + 10, s))
        try:
            assert pool.take() is None              # the first take starts the pool
            await until("the first fill", lambda: len(pool.store) == 4)
            state = lib.pool_state(POOL + 10)
            assert state is not None and (state.ready, state.low) == (4, 2)
            ready = pool.take()
            assert ready is not None and ready.stream.sock.family == socket.AF_UNIX
            ready.stream.close()
            for _ in range(2):                      # the lane's takes: half the pool
                fd = lib.pool_take(POOL + 10)
                assert fd is not None
                os.close(fd)
                pool.taken_elsewhere()
            await until("the refill", lambda: len(pool.store) == 4)
            return pool.describe()
        finally:
            pool.close()
            assert lib.pool_state(POOL + 10) is None
            for peer in peers:
                peer.close()

    assert asyncio.run(main()) == {"ready": 4, "size": 4, "built": 7, "used": 3,
                                   "discarded": 0}


@pytest.mark.parametrize("case", ["built", "refused", "closed"])
def test_the_lane_builds_a_pools_tunnel(lane: Lane, case: str) -> None:
    """lane_pool_build: hop 1 connected on a socket of the lane's, its request written
    and the reply read; the tunnel then waits in the pool, reported with proc 0. A
    refusal is reported as for a connect, and a pool closed meanwhile gets nothing."""
    req = socks4_request("10.9.9.9", 1080)          # hop 1 asked for the last hop
    answer = b"\x00\x5b" + bytes(6) if case == "refused" else SOCKS4_GRANTED
    hop = lane.hop(len(req), [0.3, answer] if case == "closed" else [answer])
    route = Route(proc=0, family=4, addr=bytes(16), port=0,
                  hop1=lanelib.sockaddr_of(hop.host, hop.port), timeout_ms=3000,
                  requests=req, replies=(lanelib.REPLY_SOCKS4,), route=ROUTE_ID)
    lane.lib.pool_build(POOL, route, time.monotonic_ns() + int(WAIT * 1e9), 1)
    if case == "closed":
        hop.requests_in.wait(WAIT)
        lane.lib.pool_close(POOL)
    [d] = lane.done()
    assert (d.proc, d.route, d.fd) == (0, ROUTE_ID, -1)
    assert hop.got == req
    state = lane.lib.pool_state(POOL)
    if case == "built":
        assert d.code == 0 and d.failed == 1
        assert state is not None and (state.ready, state.low) == (1, 1)
        fd = lane.lib.pool_take(POOL)
        assert fd is not None
        with socket.socket(fileno=fd) as tunnel:
            assert tunnel.getpeername() == ("127.0.0.1", hop.port)
            assert tunnel.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    elif case == "refused":
        assert (d.code, d.failed, d.reply) == (wire.Code.CONNREFUSED, 0, b"\x00\x5b")
        assert state is not None and state.ready == 0
    else:
        assert (d.code, d.err) == (wire.Code.CONNREFUSED, errno.ENOENT)
        assert state is None


def test_a_one_hop_tunnel_is_built_by_the_connect_alone(lane: Lane) -> None:
    """A pool of a 1-hop chain: its tunnels are hop 1 connected, no request and no
    reply; the build is done once the connect is, never waiting for the hop to
    speak."""
    hop = lane.hop(0, [])                       # accepts, then says nothing
    route = Route(proc=0, family=4, addr=bytes(16), port=0,
                  hop1=lanelib.sockaddr_of(hop.host, hop.port), timeout_ms=3000,
                  requests=b"", replies=(), route=ROUTE_ID)
    lane.lib.pool_build(POOL, route, time.monotonic_ns() + int(WAIT * 1e9), 1)
    [d] = lane.done()
    assert (d.proc, d.code, d.failed) == (0, 0, 0)   # not the route's timeout
    fd = lane.lib.pool_take(POOL)
    assert fd is not None
    with socket.socket(fileno=fd) as tunnel:
        assert tunnel.getpeername() == ("127.0.0.1", hop.port)


def test_a_build_needs_a_hop_and_a_running_lane(lib: LaneLib) -> None:
    route = Route(proc=0, family=4, addr=bytes(16), port=0,
                  hop1=lanelib.sockaddr_of("127.0.0.1", 9), timeout_ms=1000,
                  requests=b"", replies=(), route=ROUTE_ID)
    for pool, bad in ((0, route), (POOL, Route(**{**route.__dict__, "hop1": b""}))):
        with pytest.raises(OSError) as info:
            lib.pool_build(pool, bad, 0, 0)
        assert info.value.errno == errno.EINVAL
    lib.stop()
    with pytest.raises(OSError) as info:
        lib.pool_build(POOL, route, 0, 0)
    assert info.value.errno == errno.ESRCH

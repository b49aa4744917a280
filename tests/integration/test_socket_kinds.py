"""Sends and connects judged by what the kernel does with them (docs/data-path.md "Which
connections are touched"): AF_UNSPEC destinations (the kernel's udp_sendmsg() and
raw_sendmsg() read them as AF_INET), AF_INET and IPv4-mapped destinations on AF_INET6 UDP
sockets, and socket kinds the daemon cannot carry (raw IP, ICMP "ping", SCTP, DCCP,
SEQPACKET). A real program (tests/programs/socketkinds.c) tries each; raw-socket
witnesses in the proxy zone, which the client zone reaches directly, record every UDP,
UDP-Lite, ICMP and test-protocol packet that arrives there, and must see none of the
program's markers when it runs under a chain. A control run without socksify shows the
same packets do arrive."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import lab as lablib
from conftest import skip_or_fail

pytestmark = pytest.mark.lab

PROGRAM = Path(__file__).resolve().parent.parent / "programs" / "socketkinds.c"
PROTO_TEST = 253
# ICMP, UDP, UDP-Lite and the test protocol the raw cases use
WATCHED = (socket.IPPROTO_ICMP, socket.IPPROTO_UDP, 136, PROTO_TEST)
# The cases that send to the proxy zone's address (the rest need a kernel that has
# the protocol, or are carried through the chain: mptcp4-connect)
LEAKY = ("udp4-sendto-unspec", "udp4-sendmsg-unspec", "udp4-sendmmsg-unspec",
         "udplite4-sendto-unspec", "udp6-sendto-inet", "udp6-sendmsg-inet",
         "udp6-sendto-mapped", "udp6-sendmmsg-mapped", "udp6-connect-inet",
         "raw4-sendto-unspec", "raw4-sendto-inet", "raw4-sendmsg-unspec",
         "raw4-connect-inet", "ping4-sendto-inet", "ping4-connect-inet")
MAYBE_MISSING = ("sctp4-stream-connect", "sctp6-stream-connect-mapped",
                 "sctp4-seqpacket-sendto", "dccp4-connect", "seqpacket4-connect")


class RawWitness:
    """Raw sockets in a namespace, one per watched protocol: every packet of those
    protocols that reaches the namespace is copied here, whatever its port."""

    def __init__(self, ns: str) -> None:
        self.packets: list[bytes] = []
        self._lock = threading.Lock()
        self._stop = False
        self._socks: list[socket.socket] = []
        for proto in WATCHED:
            def make(p: int = proto) -> socket.socket:
                s = socket.socket(socket.AF_INET, socket.SOCK_RAW, p)
                s.settimeout(0.2)
                return s
            self._socks.append(lablib.in_netns(ns, make))  # type: ignore[arg-type]
        self._threads = [threading.Thread(target=self._loop, args=(s,), daemon=True)
                         for s in self._socks]
        for t in self._threads:
            t.start()

    def _loop(self, s: socket.socket) -> None:
        while not self._stop:
            try:
                data = s.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self.packets.append(data)

    def seen(self, marker: str) -> set[str]:
        """The case names whose "MARKER CASE" payload arrived."""
        m = marker.encode()
        with self._lock:
            found = set()
            for p in self.packets:
                i = p.find(m)
                if i >= 0:
                    found.add(p[i + len(m):].split()[0].decode(errors="replace"))
            return found

    def close(self) -> None:
        self._stop = True
        for t in self._threads:
            t.join(2)
        for s in self._socks:
            s.close()


@pytest.fixture(scope="module")
def socketkinds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        skip_or_fail("no C compiler (cc) to build tests/programs/socketkinds.c")
    out = tmp_path_factory.mktemp("socketkinds")
    out.chmod(0o755)
    exe = out / "socketkinds"
    r = subprocess.run([cc, "-O1", "-Wall", "-o", str(exe), str(PROGRAM)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return exe


@pytest.fixture
def witness(lab: lablib.Lab) -> Iterator[RawWitness]:
    w = RawWitness(lab.proxy_ns)
    try:
        yield w
    finally:
        w.close()


@pytest.fixture
def udp_sink(lab: lablib.Lab) -> Iterator[int]:
    """A bound UDP port in the proxy zone (so a datagram that got there is not answered
    with an ICMP error); its port."""
    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", 0))
        return s
    s: socket.socket = lablib.in_netns(lab.proxy_ns, make)  # type: ignore[assignment]
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


@pytest.fixture
def ping_allowed(lab: lablib.Lab) -> Iterator[None]:
    """ICMP "ping" datagram sockets in the client zone for every group (the namespace's
    default, "1 0", allows nobody)."""
    key = "net.ipv4.ping_group_range"
    old = lab.client_run(["sysctl", "-n", key], timeout=10, check=True).stdout.split()
    lab.client_run(["sysctl", "-qw", f"{key}=0 2147483647"], timeout=10, check=True)
    try:
        yield
    finally:
        lab.client_run(["sysctl", "-qw", f"{key}={' '.join(old)}"], timeout=10)


def results(out: str) -> dict[str, str]:
    return {w[0]: w[1] for w in (line.split() for line in out.splitlines()) if len(w) == 2}


def run_cases(runner: object, exe: Path, lab: lablib.Lab, marker: str,
              udp_port: int) -> lablib.Result:
    argv = [str(exe), marker, lab.proxy_near_ip, str(udp_port), str(lab.witness.port)]
    return runner(argv)  # type: ignore[operator,no-any-return]


def test_control_the_witness_sees_them_without_socksify(
        lab: lablib.Lab, socketkinds: Path, witness: RawWitness, udp_sink: int,
        ping_allowed: None) -> None:
    """Without socksify every leaky case reaches the proxy zone: an empty record under
    socksify means something."""
    marker = "ctl" + os.urandom(4).hex()
    res = run_cases(lambda a: lab.client_run(a, timeout=60), socketkinds, lab, marker,
                    udp_sink)
    got = results(res.stdout)
    assert all(got.get(c) == "sent" for c in LEAKY), res.describe()
    lablib.wait_until(lambda: witness.seen(marker) >= set(LEAKY), 10,
                      f"every case at the witness; seen {witness.seen(marker)}")


def test_unjudgeable_destinations_and_kinds_are_refused(
        lab: lablib.Lab, sk, socketkinds: Path, witness: RawWitness, udp_sink: int,
        ping_allowed: None) -> None:
    """Under a chain: AF_UNSPEC (sendto, sendmsg, sendmmsg; UDP, UDP-Lite, raw), AF_INET
    and v4-mapped destinations on AF_INET6 UDP sockets, raw and ping sockets are refused
    with EACCES, and nothing reaches the proxy zone; an MPTCP connect is carried through
    the chain (the witness sees it from the hop's address)."""
    marker = "sk" + os.urandom(4).hex()
    before = len(lab.witness.accepted)
    res = run_cases(lambda a: sk.run(a, via=sk.hops(1)), socketkinds, lab, marker,
                    udp_sink)
    got = results(res.stdout)
    assert {c: got.get(c) for c in LEAKY} == {c: "EACCES" for c in LEAKY}, sk.describe(res)
    assert got.get("mptcp4-connect") == "sent", sk.describe(res)
    lablib.wait_until(lambda: len(lab.witness.accepted) > before, 10,
                      "the MPTCP connection at the witness")
    new = lab.witness.accepted[before:]
    assert [a for a, _ in new] == [lab.proxy_near_ip], new   # via the hop, not direct
    time.sleep(1.0)                  # a stray datagram would have arrived by now
    assert witness.seen(marker) == set(), witness.seen(marker)
    assert "only TCP and UDP go through the socksify daemon" in res.stderr, res.stderr


def test_sctp_dccp_seqpacket_are_refused_or_absent(
        lab: lablib.Lab, sk, socketkinds: Path, udp_sink: int) -> None:
    """SCTP, DCCP and IPv4 SEQPACKET sockets to a non-loopback address: refused with
    EACCES where the kernel has them. Where it does not, socket() itself fails: the test
    says so (skip) rather than pass; tests/c/test_addr.c covers the shim's
    classification of those kinds."""
    marker = "kd" + os.urandom(4).hex()
    res = run_cases(lambda a: sk.run(a, via=sk.hops(1)), socketkinds, lab, marker,
                    udp_sink)
    got = results(res.stdout)
    assert all(c in got for c in MAYBE_MISSING), sk.describe(res)
    present = {c: v for c, v in got.items() if c in MAYBE_MISSING
               and not v.startswith("nosocket:")}
    assert present == {c: "EACCES" for c in present}, sk.describe(res)
    if not present:
        pytest.skip("this kernel has none of SCTP, DCCP, IPv4 SEQPACKET: "
                    + ", ".join(f"{c} {got[c]}" for c in MAYBE_MISSING))


def test_loopback_keeps_working(lab: lablib.Lab, sk, socketkinds: Path) -> None:
    """The same kinds of send to 127.0.0.1 (AF_UNSPEC, v4-mapped, AF_INET on AF_INET6,
    raw) go through under a chain, as before."""
    res = sk.run([str(socketkinds), "lo" + os.urandom(3).hex(), "127.0.0.1", "0", "0"],
                 via=sk.hops(1))
    got = results(res.stdout)
    cases = ("udp4-sendto-unspec", "udp4-sendmsg-unspec", "udp6-sendto-mapped",
             "udp6-sendto-inet", "raw4-sendto-inet")
    assert {c: got.get(c) for c in cases} == {c: "sent" for c in cases}, sk.describe(res)
    assert got.get("received") == "4", sk.describe(res)

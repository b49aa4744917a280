"""UDP from isolated programs (issue 19, the isolation path): a program the shim does
not load into (--isolate, a static Go client) sends its own datagrams; the
namespace's nft rules redirect them to the daemon's carrier sockets, conntrack tells
the daemon where each was going, and the daemon carries them through a SOCKS5 UDP
chain of real danted hops (the hops, far servers and witness of test_udp_chain.py,
shared as its fixtures). Replies come back with the real remote as their source.

Watched on the wire: the far servers record each datagram's source (the last hop
only); an nft counter in the client zone counts UDP leaving around the chain (must
stay 0); the lab's recording resolver must see no far name."""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import lab as lablib
from conftest import skip_or_fail, start_daemon
from integration.test_isolate import SYSTEM_PY, unprivileged  # noqa: F401 (fixture)
from integration.test_udp_chain import (FarUdp, UdpHops, Witness, _cpu_seconds,
                                        far, udp_hops, witness)  # noqa: F401

pytestmark = pytest.mark.lab

GO = "/usr/bin/go"

# sendto/recvfrom on an unconnected socket, connect+send/recv, non-blocking with
# select, and by name (a stand-in from the isolation name server): one line each.
# Every send and receive is a raw system call (the shim, loaded into this Python,
# never sees them): a program that wants out, which only the namespace's rules catch.
PY_SYSCALLS = textwrap.dedent("""\
    import ctypes, errno, os, select, socket, struct, sys
    libc = ctypes.CDLL(None, use_errno=True)
    SENDTO, RECVFROM, CONNECT = 44, 45, 42          # x86_64
    def sockaddr(host, port):
        return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + \\
            socket.inet_aton(host) + bytes(8)
    def sendto(s, data, addr=None):
        sa = sockaddr(*addr) if addr else None
        n = libc.syscall(SENDTO, s.fileno(), data, len(data), 0, sa,
                         len(sa) if sa else 0)
        if n < 0:
            raise OSError(ctypes.get_errno(), "sendto")
    def recvfrom(s, timeout=10):
        if not select.select([s], [], [], timeout)[0]:
            raise OSError(0, "timeout")
        buf, sa, salen = ctypes.create_string_buffer(65536), \\
            ctypes.create_string_buffer(16), ctypes.c_uint32(16)
        n = libc.syscall(RECVFROM, s.fileno(), buf, 65536, 0, sa, ctypes.byref(salen))
        if n < 0:
            raise OSError(ctypes.get_errno(), "recvfrom")
        port = struct.unpack("!H", sa.raw[2:4])[0]
        return buf.raw[:n], socket.inet_ntoa(sa.raw[4:8]), port
    """)
PY_CLIENT = PY_SYSCALLS + textwrap.dedent("""\
    host, port, msg = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sendto(s, msg.encode(), (host, port))
        data, src, sport = recvfrom(s)
        print("recvfrom", src, sport, data.decode())
    except OSError as exc:
        print("error", exc.errno or "timeout")
        sys.exit(0)
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sa = sockaddr(host, port)
    assert libc.syscall(CONNECT, c.fileno(), sa, len(sa)) == 0
    sendto(c, msg[::-1].encode())
    print("recv", recvfrom(c)[0].decode())
    c.setblocking(False)
    sendto(c, b"nonblocking")
    ready, _, _ = select.select([c], [], [], 10)
    print("select", recvfrom(c)[0].decode() if ready else "timeout")
    if len(sys.argv) > 4:
        addr = socket.getaddrinfo(sys.argv[4], port, socket.AF_INET,
                                  socket.SOCK_DGRAM)[0][4]
        sendto(s, b"by-name", addr)
        data, src, sport = recvfrom(s)
        print("name", addr[0], src, sport, data.decode())
    def wait_for(text):
        for _ in range(300):
            if os.path.exists(sys.argv[5]) and open(sys.argv[5]).read() == text:
                return
            select.select([], [], [], 0.1)
    if len(sys.argv) > 5:      # hold the flows open until the test has looked, then
        print("holding", flush=True)       # close one socket, and hold the other
        wait_for("close")
        c.close()
        wait_for("end")
    """)

# one echo, then (once the test has killed a hop) a datagram that must get no answer
PY_LOSS = PY_SYSCALLS + textwrap.dedent("""\
    host, port, go_on = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sendto(s, b"before", (host, port))
    print("echo", recvfrom(s)[0].decode(), flush=True)
    for _ in range(600):
        if os.path.exists(go_on):
            break
        select.select([], [], [], 0.1)
    sendto(s, b"after", (host, port))
    try:
        print("echo", recvfrom(s, 3)[0].decode())
    except OSError as exc:
        print("error", exc.errno or "timeout")
    """)

# 1,000 datagrams of 1,200 bytes with a window of 32 in flight, then 200 sequential
# echoes over UDP and over a TCP connection (both redirected: raw connect) to the far
# zone's echo servers; one line of figures
PY_BENCH = PY_SYSCALLS + textwrap.dedent("""\
    import time
    host, port, tcp_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pad = bytes(range(256)) * 4 + bytes(1196 - 1024)
    got, inflight, started = [], 0, time.monotonic()
    for seq in range(1000):
        sendto(s, struct.pack("!I", seq) + pad, (host, port))
        inflight += 1
        while inflight >= 32:
            try:
                data = recvfrom(s, 2)[0]
            except OSError:
                inflight = 0
                break
            assert data[4:] == pad
            got.append(struct.unpack("!I", data[:4])[0])
            inflight -= 1
    took = time.monotonic() - started
    while True:
        try:
            got.append(struct.unpack("!I", recvfrom(s, 2)[0][:4])[0])
            took = time.monotonic() - started
        except OSError:
            break
    print("flood", len(got), int(got == sorted(got)), len(set(got)), "%.3f" % took)
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sa = sockaddr(host, tcp_port)
    assert libc.syscall(CONNECT, t.fileno(), sa, len(sa)) == 0
    times = {"udp": [], "tcp": []}
    for i in range(200):
        msg = struct.pack("!I", i) * 16
        t0 = time.perf_counter()
        sendto(s, msg, (host, port))
        assert recvfrom(s)[0] == msg
        t1 = time.perf_counter()
        sendto(t, msg)
        back = b""
        while len(back) < len(msg):
            back += recvfrom(t)[0]
        assert back == msg
        times["udp"].append(t1 - t0)
        times["tcp"].append(time.perf_counter() - t1)
    med = {k: sorted(v)[100] * 1000 for k, v in times.items()}
    print("rtt", "%.3f" % med["udp"], "%.3f" % med["tcp"])
    """)

# a static Go program: its own UDP echo (net.Dial "udp"), and its own DNS (Go's
# resolver, asking the server given by address)
GO_CLIENT = """\
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"
)

func main() {
	switch os.Args[1] {
	case "echo":
		conn, err := net.Dial("udp", os.Args[2])
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		conn.Write([]byte(os.Args[3]))
		buf := make([]byte, 2048)
		n, err := conn.Read(buf)
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println("echo", string(buf[:n]))
	case "dns":
		server := os.Args[2]
		r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network,
			address string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "udp", server)
		}}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		addrs, err := r.LookupIPAddr(ctx, os.Args[3])
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		for _, a := range addrs {
			fmt.Println("addr", a.IP)
		}
	}
}
"""


@pytest.fixture(scope="module")
def go_udp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not os.access(GO, os.X_OK):
        skip_or_fail(f"no Go toolchain at {GO} (Debian package golang-go)")
    d = tmp_path_factory.mktemp("goudp")
    (d / "main.go").write_text(GO_CLIENT)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(d), "GOCACHE": str(d / "cache"),
           "GOPATH": str(d / "gopath"), "CGO_ENABLED": "0", "GO111MODULE": "off",
           "GOPROXY": "off", "GOFLAGS": ""}   # the standard library only: no network
    r = subprocess.run([GO, "build", "-o", str(d / "udpclient"), "main.go"], cwd=d,
                       env=env, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        pytest.fail(f"go build failed: {r.stderr[-800:]}")
    os.chmod(d, 0o755)
    return d / "udpclient"


def policy(tmp_path: Path, hops: list[str], rules: str) -> Path:
    pol = tmp_path / "isoudp.toml"
    listed = ", ".join(f'"{h}"' for h in hops)
    pol.write_text(f'[chains.u]\nhops = [{listed}]\n\n{textwrap.dedent(rules)}')
    return pol


CARRY_ALL = """\
    [[rules]]
    action = "chain:u"
    udp = "chain"
    """


def isolated_flows(sk) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    return [c for c in sk.control({"op": "connections"})["connections"]
            if c.get("kind") == "udp" and c.get("path") == "isolated"]


@pytest.mark.parametrize("n", [1, 3])
def test_python_client_through_hops(lab: lablib.Lab, sk, tmp_path: Path,
                                    udp_hops: UdpHops, far: FarUdp, witness: Witness,
                                    n: int) -> None:
    """An isolated Python program's own datagrams (unconnected, connected,
    non-blocking, by name through a stand-in) cross n hops: echoes right, with the
    far server as their source; the far server saw only the last hop; nothing went
    around the chain; the resolver saw no query; the flow is in the live table."""
    asked_before = len(lab.dns.seen())
    start_daemon(sk, policy(tmp_path, [udp_hops.url(i) for i in range(n)], CARRY_ALL))
    marker = os.urandom(6).hex()
    release = tmp_path / "release"
    bg = sk.spawn(sk.argv([sys.executable, "-c", PY_CLIENT, lablib.FAR_IP,
                           str(far.echo_port), marker, lablib.FAR_NAME, str(release)],
                          opts=["--isolate"]))
    try:
        lablib.wait_until(lambda: "holding" in bg.out_path.read_text() or
                          not bg.running(), 60, "the client's echoes")
        # the program's two sockets, while it holds them: in the live table
        flows = isolated_flows(sk)
        release.write_text("close")
        # it closes one: that flow (and its association) ends within a few sweeps
        lablib.wait_until(lambda: "UDP flow closed (socket closed)" in
                          sk.daemon_log(30000), 20, "the closed socket's flow ending")
        left = isolated_flows(sk)
    finally:
        release.write_text("end")
        res = bg.wait(30)
    assert res.returncode == 0, sk.describe(res)
    lines = res.stdout.splitlines()
    port = str(far.echo_port)
    assert lines[0] == f"recvfrom {lablib.FAR_IP} {port} {marker}", sk.describe(res)
    assert lines[1] == f"recv {marker[::-1]}", sk.describe(res)
    assert lines[2] == "select nonblocking", sk.describe(res)
    stand_in, src, src_port, body = lines[3].split()[1:]
    assert stand_in != lablib.FAR_IP and src == stand_in and src_port == port, lines
    assert body == "by-name"
    assert len(far.seen()) == 4
    assert {ip for ip, _ in far.seen()} == {lablib.PROXY_FAR_IP}
    assert witness.packets() == 0
    assert lablib.FAR_NAME not in " ".join(lab.dns.seen()[asked_before:])
    for i in range(n):
        assert "udp" in udp_hops.log(i).lower(), udp_hops.log(i)
    log = sk.daemon_log(30000)
    assert "UDP associated through chain u" in log, log
    assert len(flows) == 2, (flows, log)
    assert sorted((f["datagrams_up"], f["datagrams_down"]) for f in flows) == \
        [(2, 2), (2, 2)], flows
    assert all(f["chain"] == "u" and f["route"].count(">") == n - 1 and
               f["app"].startswith("python") and f["dropped"] == 0 for f in flows), flows
    assert len(left) == 1 and left[0]["id"] in {f["id"] for f in flows}, left
    assert "UDP flow closed (namespace ended)" in sk.daemon_log(30000)


def test_go_program_echo_and_own_dns(lab: lablib.Lab, sk, tmp_path: Path,
                                     udp_hops: UdpHops, far: FarUdp, witness: Witness,
                                     go_udp: Path) -> None:
    """A static Go program (socksify takes the isolation path by itself): its UDP
    echo, and its own resolver asking the far DNS server by address (on a port other
    than 53: port 53 stays with the isolation name server), both through 3 hops."""
    asked_before = len(lab.dns.seen())
    start_daemon(sk, policy(tmp_path, [udp_hops.url(i) for i in range(3)], CARRY_ALL))
    res = sk.run([str(go_udp), "echo", f"{lablib.FAR_IP}:{far.echo_port}", "gopher"],
                 timeout=90)
    assert res.returncode == 0, sk.describe(res)
    assert res.stdout.split() == ["echo", "gopher"], sk.describe(res)
    res = sk.run([str(go_udp), "dns", f"{lablib.FAR_IP}:{far.dns_port}",
                  lablib.FAR_NAME], timeout=90)
    assert res.returncode == 0, sk.describe(res)
    assert res.stdout.split() == ["addr", lablib.FAR_IP], sk.describe(res)
    assert f"{lablib.FAR_NAME}." in far.questions
    assert {ip for ip, _ in far.seen()} == {lablib.PROXY_FAR_IP}
    assert witness.packets() == 0
    assert lablib.FAR_NAME not in " ".join(lab.dns.seen()[asked_before:])


def test_udp_without_udp_chain_fails_with_nothing_on_the_wire(
        lab: lablib.Lab, sk, tmp_path: Path, udp_hops: UdpHops, far: FarUdp,
        witness: Witness) -> None:
    """No rule says udp = "chain": the namespace's fence drops every datagram
    (sendto fails with EPERM). With one for the echo port only, a datagram under a
    direct rule, one under a chain rule without udp = "chain" and a multicast one
    are carried to the daemon and dropped there: no answer, nothing sent."""
    start_daemon(sk, policy(tmp_path, [udp_hops.url(0)], """\
        [[rules]]
        action = "chain:u"
        """))
    res = sk.run([sys.executable, "-c", PY_CLIENT, lablib.FAR_IP, str(far.echo_port),
                  "x"], opts=["--isolate"], timeout=90)
    assert res.returncode == 0, sk.describe(res)
    assert res.stdout.split() == ["error", str(errno.EPERM)], sk.describe(res)
    sk.socksifyd("stop")
    start_daemon(sk, policy(tmp_path, [udp_hops.url(0)], f"""\
        [[rules]]
        action = "chain:u"
        port = {far.echo_port}
        udp = "chain"

        [[rules]]
        action = "direct"
        port = {far.dns_port}

        [[rules]]
        action = "chain:u"
        """))
    # the DNS port's rule is direct (the namespace has no way out); any other port's
    # is a chain without udp = "chain"
    other = next(p for p in range(20000, 20003) if p not in (far.echo_port, far.dns_port))
    # (and multicast is never carried, whatever the rule)
    for host, port, why in (
            (lablib.FAR_IP, far.dns_port, "the isolated namespace sends no UDP directly"),
            (lablib.FAR_IP, other, "a chain carries UDP only with udp"),
            ("239.255.77.1", far.echo_port, "multicast and broadcast are not carried")):
        res = sk.run([sys.executable, "-c", PY_CLIENT, host, str(port), "y"],
                     opts=["--isolate"], timeout=90)
        assert res.returncode == 0, sk.describe(res)
        assert res.stdout.split() == ["error", "timeout"], sk.describe(res)
        assert why in sk.daemon_log(30000), sk.daemon_log(30000)
    time.sleep(0.3)
    assert far.seen() == []
    assert witness.packets() == 0
    # each flow (ended with its socket or namespace) counted its datagram as dropped
    assert len(re.findall(r"UDP flow closed \((?:namespace ended|socket closed)\) "
                          r"after [0-9.]+s: 0 "
                          r"datagrams up \(0 bytes\), 0 down \(0 bytes\), 1 dropped",
                          sk.daemon_log(30000))) == 3, sk.daemon_log(30000)


def test_socks4_chain_refuses(lab: lablib.Lab, sk, tmp_path: Path, udp_hops: UdpHops,
                              far: FarUdp, witness: Witness) -> None:
    """udp = "chain" on a chain with a SOCKS4 hop: refused with the reason, the
    program gets no answer, nothing leaves."""
    start_daemon(sk, policy(tmp_path, [lab.hops[0].url, udp_hops.url(1)], CARRY_ALL))
    before = lab.hop_connects()
    res = sk.run([sys.executable, "-c", PY_CLIENT, lablib.FAR_IP, str(far.echo_port),
                  "z"], opts=["--isolate"], timeout=90)
    assert res.returncode == 0, sk.describe(res)
    assert res.stdout.split() == ["error", "timeout"], sk.describe(res)
    time.sleep(0.3)
    assert far.seen() == []
    assert witness.packets() == 0
    assert lab.hop_connects() == before
    assert "which has no UDP" in sk.daemon_log(30000), sk.daemon_log()


def test_hop_dying_mid_flow_drops_the_programs_datagrams(
        lab: lablib.Lab, sk, tmp_path: Path, udp_hops: UdpHops, far: FarUdp,
        witness: Witness) -> None:
    """Hop 2 of 3 dies while a program's association is open: the loss is logged
    with the flow, the program's next datagram gets no answer, nothing leaves around
    the chain."""
    start_daemon(sk, policy(tmp_path, [udp_hops.url(i) for i in range(3)], CARRY_ALL))
    go_on = tmp_path / "go-on"
    bg = sk.spawn(sk.argv([sys.executable, "-c", PY_LOSS, lablib.FAR_IP,
                           str(far.echo_port), str(go_on)], opts=["--isolate"]))
    try:
        lablib.wait_until(lambda: "echo" in bg.out_path.read_text() or
                          not bg.running(), 60, "the first echo")
        before = len(far.seen())
        udp_hops.kill(1)
        lablib.wait_until(lambda: "control connection of its UDP association"
                          in sk.daemon_log(30000), 20, "the association's loss")
    finally:
        go_on.write_text("")
        res = bg.wait(30)
    assert res.returncode == 0, sk.describe(res)
    assert res.stdout.split() == ["echo", "before", "error", "timeout"], \
        sk.describe(res)
    assert len(far.seen()) == before == 1
    assert witness.packets() == 0
    assert re.search(r"UDP through chain u lost: hop \d", sk.daemon_log(30000)), \
        sk.daemon_log(30000)


def test_thousand_datagrams_and_round_trips_through_three_hops(
        lab: lablib.Lab, sk, tmp_path: Path, udp_hops: UdpHops, far: FarUdp,
        witness: Witness) -> None:
    """An isolated program floods 1,000 datagrams of 1,200 bytes (32 in flight)
    through 3 hops: loss within 1%, none reordered or duplicated; then the median
    echo round trip over UDP and over TCP through the same hops (figures, printed
    with the daemon's CPU, not gates)."""
    start_daemon(sk, policy(tmp_path, [udp_hops.url(i) for i in range(3)], CARRY_ALL))
    tcp_echo = lablib.listener_in(lab.far_ns, lablib.FAR_IP)

    def serve() -> None:
        conn, _ = tcp_echo.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)
    threading.Thread(target=serve, daemon=True).start()
    pid = sk.daemon_pid()
    cpu = _cpu_seconds(pid)
    try:
        res = sk.run([sys.executable, "-c", PY_BENCH, lablib.FAR_IP, str(far.echo_port),
                      str(tcp_echo.getsockname()[1])], opts=["--isolate"], timeout=180)
    finally:
        tcp_echo.close()
    cpu = _cpu_seconds(pid) - cpu
    assert res.returncode == 0, sk.describe(res)
    flood, rtt = (line.split()[1:] for line in res.stdout.splitlines())
    received, ordered, distinct, took = int(flood[0]), flood[1], int(flood[2]), \
        float(flood[3])
    print(f"isolated, 3 hops: 1000 sent, {received} received, {1000 - received} lost, "
          f"{took:.2f}s ({1000 / took:.0f} datagrams/s each way); echo round trip "
          f"median UDP {rtt[0]} ms, TCP {rtt[1]} ms (ratio "
          f"{float(rtt[0]) / float(rtt[1]):.2f}); daemon CPU {cpu:.2f}s for all")
    assert ordered == "1", "reordered"
    assert distinct == received, "duplicated"
    assert received >= 990, f"{1000 - received} of 1000 lost"
    assert witness.packets() == 0


def test_a_sessions_own_policy_carries(lab: lablib.Lab, sk, tmp_path: Path,
                                       udp_hops: UdpHops, far: FarUdp,
                                       witness: Witness) -> None:
    """The daemon's policy carries no UDP, the command's own (-c) does: the launcher
    learns it from the daemon (status, its user's sessions) and redirects UDP."""
    start_daemon(sk, policy(tmp_path, [udp_hops.url(0)], """\
        [[rules]]
        action = "chain:u"
        """))
    own = tmp_path / "own"
    own.mkdir()
    mine = policy(own, [udp_hops.url(i) for i in range(2)], CARRY_ALL)
    res = sk.run([sys.executable, "-c", PY_CLIENT, lablib.FAR_IP, str(far.echo_port),
                  "mine"], opts=["--isolate", "-c", str(mine)], timeout=90)
    assert res.returncode == 0, sk.describe(res)
    assert res.stdout.splitlines()[:3] == [
        f"recvfrom {lablib.FAR_IP} {far.echo_port} mine", "recv enim",
        "select nonblocking"], sk.describe(res)
    assert {ip for ip, _ in far.seen()} == {lablib.PROXY_FAR_IP}
    assert witness.packets() == 0


PY_SEND6 = PY_SYSCALLS + textwrap.dedent("""\
    host, port = sys.argv[1], int(sys.argv[2])
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sa = struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", port, 0) + \\
        socket.inet_pton(socket.AF_INET6, host) + bytes(4)
    n = libc.syscall(SENDTO, s.fileno(), b"six", 3, 0, sa, len(sa))
    print("sendto", n if n >= 0 else -ctypes.get_errno())
    select.select([s], [], [], 1.0)
    """)


def test_an_ipv6_datagram_reaches_the_chain(lab: lablib.Lab, sk, tmp_path: Path,
                                            udp_hops: UdpHops, far: FarUdp,
                                            witness: Witness) -> None:
    """IPv6 in the namespace: redirected to [::1], its destination from conntrack
    (an IPv6 tuple), decided and sent into the association (the lab's hops have no
    IPv6 route onwards: that it got that far is what is checked)."""
    start_daemon(sk, policy(tmp_path, [udp_hops.url(0)], CARRY_ALL))
    res = sk.run([sys.executable, "-c", PY_SEND6, "2001:db8:77::3", "7777"],
                 opts=["--isolate"], timeout=90)
    assert res.returncode == 0, sk.describe(res)
    if res.stdout.split() == ["sendto", str(-errno.ENETUNREACH)]:
        skip_or_fail("no IPv6 in the isolated namespace here")
    assert res.stdout.split() == ["sendto", "3"], sk.describe(res)
    lablib.wait_until(lambda: "1 datagrams up (3 bytes)" in sk.daemon_log(30000), 20,
                      "the IPv6 flow's end")
    log = sk.daemon_log(30000)
    assert "UDP associated through chain u" in log, log
    assert witness.packets() == 0


def test_unprivileged_go_echo(lab: lablib.Lab, unprivileged, udp_hops: UdpHops,
                              far: FarUdp, witness: Witness, go_udp: Path) -> None:
    """A non-root user (a user namespace): the launcher makes the conntrack socket
    with its capabilities in the namespace, and the user's own daemon (no capability
    of its own) asks on it; the static Go program's echo crosses 2 hops."""
    pw, site, rt = unprivileged
    env = lablib.clean_env({"PYTHONPATH": str(site), "SOCKSIFY_RUNTIME_DIR": str(rt),
                            "HOME": str(rt), "XDG_CONFIG_HOME": str(rt / "config"),
                            "XDG_STATE_HOME": str(rt / "state")})
    env.pop("XDG_RUNTIME_DIR", None)
    as_user = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}",
               "--clear-groups", SYSTEM_PY]
    exe = rt / "udpclient"
    shutil.copy(go_udp, exe)
    mine = policy(rt, [udp_hops.url(i) for i in range(2)], CARRY_ALL)
    for path in (exe, mine):
        os.chown(path, pw.pw_uid, pw.pw_gid)
    try:
        res = lab.client_run([*as_user, "-m", "socksify.cli", "-v", "-c", str(mine),
                              "--", str(exe), "echo",
                              f"{lablib.FAR_IP}:{far.echo_port}", "rootless"],
                             env=env, timeout=90)
        assert res.returncode == 0, res.describe()
        assert "isolated network namespace" in res.stderr, res.describe()
        assert res.stdout.split() == ["echo", "rootless"], res.describe()
        assert {ip for ip, _ in far.seen()} == {lablib.PROXY_FAR_IP}
        assert witness.packets() == 0
    finally:
        lab.client_run([*as_user, "-m", "socksify.service", "stop"], env=env, timeout=20)


PY_LOOP = PY_SYSCALLS + textwrap.dedent("""\
    import time
    host, port, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(rounds):
        msg = b"round %d" % i
        sendto(s, msg, (host, port))
        try:
            while recvfrom(s, 0.5)[0] != msg:      # a late echo of an earlier round
                pass
            print(i, "ok", flush=True)
        except OSError:
            print(i, "timeout", flush=True)
        time.sleep(0.1)
    """)


def _lines(bg) -> list[str]:  # type: ignore[no-untyped-def]
    try:
        return bg.out_path.read_text().splitlines()
    except OSError:
        return []


def test_daemon_restart_under_an_isolated_udp_program(
        lab: lablib.Lab, sk, tmp_path: Path, udp_hops: UdpHops, far: FarUdp,
        witness: Witness) -> None:
    """The daemon stops under a program sending datagrams from one socket: they get
    no answer and nothing leaves; a new daemon gets the carrier sockets and the
    conntrack socket anew and the same socket's datagrams are carried again."""
    pol = policy(tmp_path, [udp_hops.url(0)], CARRY_ALL)
    start_daemon(sk, pol)
    bg = sk.spawn(sk.argv([sys.executable, "-c", PY_LOOP, lablib.FAR_IP,
                           str(far.echo_port), "200"], opts=["--isolate"]))
    try:
        lablib.wait_until(lambda: sum(ln.endswith(" ok") for ln in _lines(bg)) >= 2,
                          30, "echoes before the stop")
        res = sk.socksifyd("stop")
        assert res.returncode == 0, res.describe()
        seen = len(_lines(bg))
        lablib.wait_until(lambda: sum(ln.endswith(" timeout")
                                      for ln in _lines(bg)[seen:]) >= 2, 30,
                          "unanswered datagrams while no daemon runs")
        echoed = len(far.seen())
        time.sleep(0.5)
        assert len(far.seen()) == echoed       # nothing carried, nothing direct
        start_daemon(sk, pol)
        seen = len(_lines(bg))
        lablib.wait_until(lambda: sum(ln.endswith(" ok") for ln in _lines(bg)[seen:])
                          >= 2, 30, "echoes after the restart")
    finally:
        bg.kill()
    assert {ip for ip, _ in far.seen()} == {lablib.PROXY_FAR_IP}
    assert witness.packets() == 0

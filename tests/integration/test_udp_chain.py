"""UDP through SOCKS5 chains, hop by hop (issue 19), at the front door: real danted
hops configured for UDP ASSOCIATE in the proxy zone, a UDP echo server and a DNS
server (dnspython) in the far zone that only the proxies reach, and a SOCKS5 UDP
client of a few lines (in this process, its sockets made in the client zone).

Witnesses: the far servers record who sent each datagram (the last hop, never the
client zone); an nft counter in the client zone counts UDP leaving by its veth to
anything but hop 1's address (a datagram sent around the chain); the lab's recording
resolver must not see the far name."""

from __future__ import annotations

import secrets
import socket
import struct
import textwrap
import threading
import time
from pathlib import Path

import dns.message
import dns.rdatatype
import pytest

import lab as lablib
from conftest import start_daemon
from udplab import FarUdp, UdpHops, Witness, cpu_seconds as _cpu_seconds
from udplab import far, udp_hops, witness  # noqa: F401

pytestmark = pytest.mark.lab


class Socks5UdpClient:
    """A SOCKS5 UDP client (RFC 1928 section 7) in the client zone."""

    def __init__(self, lab: lablib.Lab, port: int, announce: bool = True) -> None:
        self.tcp = lablib.socket_in(lab.client_ns)
        self.tcp.settimeout(20)
        self.tcp.connect(("127.0.0.1", port))
        self.udp = lablib.socket_in(lab.client_ns, type=socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.tcp.sendall(b"\x05\x01\x00")
        assert lablib.recv_exact(self.tcp, 2) == b"\x05\x00"
        self.tcp.sendall(b"\x05\x03\x00\x01" + (   # where our datagrams come from
            socket.inet_aton("127.0.0.1") + struct.pack("!H", self.udp.getsockname()[1])
            if announce else bytes(6)))
        reply = lablib.recv_exact(self.tcp, 10)
        self.code = reply[1]
        self.relay = (socket.inet_ntoa(reply[4:8]), struct.unpack("!H", reply[8:10])[0])

    def send(self, host: str, port: int, data: bytes) -> None:
        try:
            addr = b"\x01" + socket.inet_aton(host)
        except OSError:
            addr = b"\x03" + bytes([len(host)]) + host.encode()
        self.udp.sendto(b"\0\0\0" + addr + struct.pack("!H", port) + data, self.relay)

    def recv(self, timeout: float = 5.0) -> tuple[str, int, bytes] | None:
        self.udp.settimeout(timeout)
        try:
            data = self.udp.recv(65536)
        except socket.timeout:
            return None
        assert data[:4] == b"\0\0\0\x01", data[:10]
        return socket.inet_ntoa(data[4:8]), struct.unpack("!H", data[8:10])[0], data[10:]

    def closed_within(self, timeout: float) -> bool:
        """Did the front door end the association (closed its TCP connection)?"""
        self.tcp.settimeout(timeout)
        try:
            return self.tcp.recv(1) == b""
        except socket.timeout:
            return False
        except OSError:
            return True

    def close(self) -> None:
        self.tcp.close()
        self.udp.close()


def start(sk, tmp_path: Path, hops: list[str], udp: str = "chain") -> int:
    """The daemon with one chain for everything to the far zone, udp as given; its
    front door's port."""
    pol = tmp_path / "udp.toml"
    listed = ", ".join(f'"{h}"' for h in hops)
    pol.write_text(textwrap.dedent(f"""\
        [chains.u]
        hops = [{listed}]

        [[rules]]
        action = "chain:u"
        udp = "{udp}"

        [frontdoor]
        listen = "127.0.0.1:0"
        """))
    start_daemon(sk, pol)
    host, port = sk.control({"op": "status"})["frontdoor"].rsplit(":", 1)
    return int(port)


def dns_ask(client: Socks5UdpClient, far: FarUdp, name: str) -> list[str]:
    query = dns.message.make_query(name, "A")
    client.send(lablib.FAR_IP, far.dns_port, query.to_wire())
    got = client.recv()
    assert got is not None, "no DNS answer"
    assert got[:2] == (lablib.FAR_IP, far.dns_port)
    answer = dns.message.from_wire(got[2])
    return [r.address for rrset in answer.answer for r in rrset
            if rrset.rdtype == dns.rdatatype.A]


@pytest.mark.parametrize("n", [1, 2, 3])
def test_udp_through_the_front_door(lab: lablib.Lab, sk, tmp_path: Path,
                                    udp_hops: UdpHops, far: FarUdp, witness: Witness,
                                    n: int) -> None:
    """Echo by address and by name (the last hop resolves it), a DNS query: answers
    correct, the far servers saw only the last hop, nothing left the client zone
    around the chain, the flow is in `connections` while it lives."""
    asked_before = len(lab.dns.seen())     # the lab's resolver is shared by all tests
    port = start(sk, tmp_path, [udp_hops.url(i) for i in range(n)])
    client = Socks5UdpClient(lab, port, announce=n != 2)   # 2: 0.0.0.0:0, pinned
    try:
        assert client.code == 0, sk.daemon_log()
        marker = secrets.token_bytes(32)
        client.send(lablib.FAR_IP, far.echo_port, marker)
        assert client.recv() == (lablib.FAR_IP, far.echo_port, marker), sk.daemon_log()
        client.send(lablib.FAR_NAME, far.echo_port, marker[::-1])
        assert client.recv() == (lablib.FAR_IP, far.echo_port, marker[::-1])
        assert dns_ask(client, far, lablib.FAR_NAME) == [lablib.FAR_IP]
        # another sender (another port than the one announced or first seen) is not
        # carried
        other = lablib.socket_in(lab.client_ns, type=socket.SOCK_DGRAM)
        with other:
            other.bind(("127.0.0.1", 0))
            other.sendto(b"\0\0\0\x01" + socket.inet_aton(lablib.FAR_IP)
                         + struct.pack("!H", far.echo_port) + b"foreign", client.relay)
            time.sleep(0.5)
        assert sum(1 for _ in far.seen()) == 3
        assert sk.control({"op": "status"})["udp_flows"] == 1
        flows = [c for c in sk.control({"op": "connections"})["connections"]
                 if c.get("kind") == "udp"]
        assert len(flows) == 1, flows
        assert flows[0]["datagrams_up"] == 3 and flows[0]["datagrams_down"] == 3
        assert flows[0]["dropped"] == 1
        assert flows[0]["chain"] == "u" and flows[0]["route"].count(">") == n - 1
        table = sk.socksifyd("connections", timeout=30)
        assert "udp " in table.stdout and "3dg" in table.stdout, table.stdout
    finally:
        client.close()
    assert {ip for ip, _ in far.seen()} == {lablib.PROXY_FAR_IP}
    assert witness.packets() == 0
    assert lablib.FAR_NAME not in " ".join(lab.dns.seen()[asked_before:])
    for i in range(n):          # every hop relayed UDP
        assert "udp" in udp_hops.log(i).lower(), udp_hops.log(i)


def test_thousand_datagrams_through_three_hops(lab: lablib.Lab, sk, tmp_path: Path,
                                               udp_hops: UdpHops, far: FarUdp,
                                               witness: Witness) -> None:
    """1,000 datagrams of 1,200 bytes, a window of 32 in flight: loss counted exactly
    (sent vs echoed), order kept; the rate (to the last echo) and the daemon's CPU
    printed."""
    port = start(sk, tmp_path, [udp_hops.url(i) for i in range(3)])
    client = Socks5UdpClient(lab, port)
    sent, got, late = 1000, [], 0
    cpu = _cpu_seconds(sk.daemon_pid())
    try:
        started = time.monotonic()
        pad = secrets.token_bytes(1200 - 4)
        inflight = 0
        for seq in range(sent):
            client.send(lablib.FAR_IP, far.echo_port, struct.pack("!I", seq) + pad)
            inflight += 1
            while inflight >= 32:
                reply = client.recv(2.0)
                if reply is None:
                    late += inflight      # counted lost unless they turn up below
                    inflight = 0
                    break
                got.append(struct.unpack("!I", reply[2][:4])[0])
                assert reply[2][4:] == pad
                inflight -= 1
        took = time.monotonic() - started
        while (reply := client.recv(2.0)) is not None:   # the last window, then 2 s idle
            got.append(struct.unpack("!I", reply[2][:4])[0])
            took = time.monotonic() - started
    finally:
        client.close()
    lost = sent - len(got)
    cpu = _cpu_seconds(sk.daemon_pid()) - cpu
    print(f"3 hops: {sent} sent, {len(got)} received, {lost} lost, "
          f"{took:.2f}s ({sent / took:.0f} datagrams/s each way), daemon CPU "
          f"{cpu:.2f}s")
    assert got == sorted(got), "reordered"
    assert len(set(got)) == len(got), "duplicated"
    assert lost <= sent // 100, f"{lost} of {sent} lost"
    assert witness.packets() == 0


def test_round_trip_udp_against_tcp(lab: lablib.Lab, sk, tmp_path: Path,
                                    udp_hops: UdpHops, far: FarUdp) -> None:
    """A figure, not a gate: 200 sequential echoes through the same 3 danted hops,
    UDP (SOCKS5 UDP hop by hop) and TCP (a CONNECT through the front door)."""
    port = start(sk, tmp_path, [udp_hops.url(i) for i in range(3)])
    tcp_echo = lablib.listener_in(lab.far_ns, lablib.FAR_IP)

    def serve() -> None:
        conn, _ = tcp_echo.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)
    threading.Thread(target=serve, daemon=True).start()
    client = Socks5UdpClient(lab, port)
    tcp = lablib.socket_in(lab.client_ns)
    try:
        tcp.settimeout(20)
        tcp.connect(("127.0.0.1", port))
        tcp.sendall(b"\x05\x01\x00\x05\x01\x00\x01" + socket.inet_aton(lablib.FAR_IP)
                    + struct.pack("!H", tcp_echo.getsockname()[1]))
        assert lablib.recv_exact(tcp, 12)[3] == 0
        tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        times: dict[str, list[float]] = {"udp": [], "tcp": []}
        for i in range(200):
            msg = struct.pack("!I", i) * 16
            t0 = time.perf_counter()
            client.send(lablib.FAR_IP, far.echo_port, msg)
            assert client.recv() == (lablib.FAR_IP, far.echo_port, msg)
            t1 = time.perf_counter()
            tcp.sendall(msg)
            assert lablib.recv_exact(tcp, len(msg)) == msg
            times["udp"].append(t1 - t0)
            times["tcp"].append(time.perf_counter() - t1)
    finally:
        client.close()
        tcp.close()
        tcp_echo.close()
    med = {k: sorted(v)[len(v) // 2] * 1000 for k, v in times.items()}
    print(f"3-hop echo round trip, median of 200: UDP {med['udp']:.3f} ms, TCP "
          f"{med['tcp']:.3f} ms (ratio {med['udp'] / med['tcp']:.2f})")


def _expect_refused(lab: lablib.Lab, sk, port: int, far: FarUdp, witness: Witness,
                    why: str) -> None:
    client = Socks5UdpClient(lab, port)
    try:
        assert client.code == 0          # decided per datagram: the first one fails
        client.send(lablib.FAR_IP, far.echo_port, b"must not arrive")
        assert client.closed_within(20), sk.daemon_log()
        assert client.recv(1.0) is None
    finally:
        client.close()
    assert far.seen() == []
    assert witness.packets() == 0
    lablib.wait_until(lambda: why in sk.daemon_log(), 10, f"{why!r} in the log")


def test_socks4_hop_refuses_udp(lab: lablib.Lab, sk, tmp_path: Path, udp_hops: UdpHops,
                                far: FarUdp, witness: Witness) -> None:
    port = start(sk, tmp_path, [lab.hops[0].url, udp_hops.url(1)])
    _expect_refused(lab, sk, port, far, witness, "which has no UDP")


def test_hop_refusing_udp_associate(lab: lablib.Lab, sk, tmp_path: Path,
                                    udp_hops: UdpHops, far: FarUdp,
                                    witness: Witness) -> None:
    no_udp = f"socks5://{lablib.PROXY_NEAR_IP}:{udp_hops.no_udp_port}"
    port = start(sk, tmp_path, [udp_hops.url(0), no_udp])
    _expect_refused(lab, sk, port, far, witness, "UDP ASSOCIATE")


def test_hop_dying_mid_flow_ends_the_association(lab: lablib.Lab, sk, tmp_path: Path,
                                                 udp_hops: UdpHops, far: FarUdp,
                                                 witness: Witness) -> None:
    port = start(sk, tmp_path, [udp_hops.url(i) for i in range(3)])
    client = Socks5UdpClient(lab, port)
    try:
        client.send(lablib.FAR_IP, far.echo_port, b"one")
        assert client.recv() == (lablib.FAR_IP, far.echo_port, b"one"), sk.daemon_log()
        udp_hops.kill(1)                 # hop 2: its danted and the children serving us
        assert client.closed_within(20), sk.daemon_log()
        before = len(far.seen())
        try:
            client.send(lablib.FAR_IP, far.echo_port, b"after")
        except OSError:
            pass
        assert client.recv(1.0) is None
        assert len(far.seen()) == before
    finally:
        client.close()
    assert witness.packets() == 0
    assert "control connection of its UDP association" in sk.daemon_log()


def test_udp_refuse_keeps_datagrams_home(lab: lablib.Lab, sk, tmp_path: Path,
                                         udp_hops: UdpHops, far: FarUdp,
                                         witness: Witness) -> None:
    """The default under a chain: datagrams are dropped (logged), never sent."""
    port = start(sk, tmp_path, [udp_hops.url(0)], udp="refuse")
    client = Socks5UdpClient(lab, port)
    try:
        client.send(lablib.FAR_IP, far.echo_port, b"x")
        assert client.recv(2.0) is None
    finally:
        client.close()
    assert far.seen() == [] and witness.packets() == 0
    assert "UDP to" in sk.daemon_log() and "refused" in sk.daemon_log()




def test_the_witness_sees_a_datagram_sent_directly(lab: lablib.Lab, sk, tmp_path: Path,
                                                  udp_hops: UdpHops, far: FarUdp,
                                                  witness: Witness) -> None:
    """The witness works: with udp = "direct" the front door sends the datagram from
    the client zone itself, and the counter sees it (it dies in the proxy zone, which
    does not forward)."""
    port = start(sk, tmp_path, [udp_hops.url(0)], udp="direct")
    client = Socks5UdpClient(lab, port)
    try:
        client.send(lablib.FAR_IP, far.echo_port, b"direct")
        lablib.wait_until(lambda: witness.packets() > 0, 10, "the witness to count it")
    finally:
        client.close()
    assert far.seen() == []

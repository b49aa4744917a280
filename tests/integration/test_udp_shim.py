"""Programs under the Linux shim get their datagrams through the chain (issue 19): by
default HANDED OFF (docs/wire.md "Datagram handoff: WRAP": the daemon builds the
association for the program's own socket, which sends to hop 1's relay itself, with
the opaque prefix the shim was given); with data_path = "relay", or where a handoff
cannot be (a stand-in destination, a socket bound to loopback), CARRIED
("Carried datagrams"): each datagram, behind a 36-byte envelope, goes to the daemon's
carrier, which carries it through the chain's SOCKS5 UDP association; replies come
back enveloped and the shim strips them. Real programs (dig, nc -u, a Python client of plain socket calls) run in the
client zone with the shim preloaded; the hops are danted with UDP (tests/udplab.py).

Witnesses: the far servers record each datagram's source (the last hop's address,
never the client zone's); an nft counter in the client zone counts UDP leaving around
the chain; the lab's recording resolver must not be asked the far name."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import lab as lablib
import users as userslib
from conftest import need, skip_or_fail, start_daemon
from socksify.protocol import control as wire
from socksify.protocol.datagram import Envelope
from udplab import FarUdp, UdpHops, Witness, cpu_seconds
from udplab import far, udp_hops, witness  # noqa: F401

pytestmark = pytest.mark.lab

CLIENT = Path(__file__).resolve().parent / "udpclient.py"
COPIES_C = Path(__file__).resolve().parents[1] / "programs" / "udpcopies.c"
COPIES_C_CASES = 11  # the result() calls of tests/programs/udpcopies.c
COPIES_C_ECHOES = 10  # its datagrams (pwritev2 at an offset sends none)


PATHS = ["handoff", "relay"]   # the chain's data path: WRAP, or the carrier


def start(sk: Any, tmp_path: Path, hops: list[str], udp: str = "chain",
          path: str = "handoff") -> None:
    pol = tmp_path / "carry.toml"
    listed = ", ".join(f'"{h}"' for h in hops)
    pol.write_text(textwrap.dedent(f"""\
        [chains.u]
        hops = [{listed}]
        data_path = "{path}"

        [[rules]]
        action = "chain:u"
        udp = "{udp}"
        """))
    start_daemon(sk, pol)


def shimmed(sk: Any, argv: list[str], timeout: float = 90) -> lablib.Result:
    """argv in the client zone with the shim preloaded (the test's daemon)."""
    res: lablib.Result = sk.lab.client_run(
        argv, env={**sk.env, "LD_PRELOAD": sk.shim}, timeout=timeout)
    return res


def client(sk: Any, *args: str, timeout: float = 90) -> dict[str, Any]:
    import sys
    res = shimmed(sk, [sys.executable, str(CLIENT), *args], timeout=timeout)
    for line in reversed(res.stdout.strip().splitlines()):
        try:
            report: dict[str, Any] = json.loads(line)
            report["_describe"] = sk.describe(res)
            return report
        except ValueError:
            continue
    raise AssertionError(f"no report: {sk.describe(res)}")


def carried_flows(sk: Any, path: str = "carried") -> list[dict[str, Any]]:
    return [c for c in sk.control({"op": "connections"})["connections"]
            if c.get("path") == path and c.get("kind") == "udp"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("n", [1, 3])
def test_programs_datagrams_are_carried(lab: lablib.Lab, sk: Any, tmp_path: Path,
                                        udp_hops: UdpHops, far: FarUdp,
                                        witness: Witness, n: int, path: str) -> None:
    """dig (its own UDP), nc -u, and a Python client (sendto/recvfrom, by address and
    by name, MSG_PEEK and MSG_TRUNC; connected send/recv, read/write, sendmsg/recvmsg
    and getpeername; non-blocking with select; local datagrams on a carried socket
    untouched; an IPv6 socket to an IPv4 destination): right answers, the far servers saw
    the last hop only, nothing left around the chain, the lab resolver was not asked
    the far name."""
    need("dig")
    need("nc")
    asked_before = len(lab.dns.seen())
    start(sk, tmp_path, [udp_hops.url(i) for i in range(n)], path=path)
    port = str(far.echo_port)
    for mode, host in (("sendto", lablib.FAR_IP), ("sendto", lablib.FAR_NAME),
                       ("connected", lablib.FAR_IP), ("nonblock", lablib.FAR_IP),
                       ("mixed", lablib.FAR_IP), ("mixedany", lablib.FAR_IP),
                       ("six", lablib.FAR_IP)):
        report = client(sk, mode, host, port)
        assert report["ok"], (mode, host, report)
    dig = shimmed(sk, ["dig", "+short", "+tries=1", "+time=10", f"@{lablib.FAR_IP}",
                       "-p", str(far.dns_port), lablib.FAR_NAME])
    assert dig.stdout.split() == [lablib.FAR_IP], sk.describe(dig)
    marker = os.urandom(8).hex()
    nc = shimmed(sk, ["sh", "-c", f"printf {marker} | nc -u -w 3 {lablib.FAR_IP} {port}"])
    assert marker in nc.stdout, sk.describe(nc)
    flows = carried_flows(sk)
    assert flows and all(f["kind"] == "udp" and f["chain"] == "u" for f in flows), flows
    log = sk.daemon_log()
    if path == "relay":
        assert sum(f["datagrams_up"] for f in flows) >= 5, flows
        assert "UDP handed off" not in log, log
    else:
        # by address from a socket not bound to loopback: handed off (dig, nc, and
        # the client's modes but by name and mixed); the rest carried
        assert log.count("UDP handed off [") >= 6, log
        assert sum(f["datagrams_up"] for f in flows) >= 2, flows
    assert all(f["route"].count(">") == n - 1 for f in flows if f["route"]), flows
    # (handed-off flows are counted too, while their sockets live)
    assert sk.control({"op": "status"})["udp_flows"] >= len(flows)
    table = sk.socksifyd("connections", timeout=30)
    assert "udp " in table.stdout, table.stdout
    assert far.seen() and {ip for ip, _ in far.seen()} == {lablib.PROXY_FAR_IP}
    assert witness.packets() == 0
    assert lablib.FAR_NAME not in " ".join(lab.dns.seen()[asked_before:])


@pytest.fixture(scope="module")
def udpcopies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        skip_or_fail("no C compiler (cc) to build tests/programs/udpcopies.c")
    exe = tmp_path_factory.mktemp("udpcopies") / "udpcopies"
    r = subprocess.run([cc, "-O1", "-Wall", "-o", str(exe), str(COPIES_C)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return exe


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("n", [1, 3])
def test_vectored_calls_and_copies_are_carried(lab: lablib.Lab, sk: Any, tmp_path: Path,
                                               udp_hops: UdpHops, far: FarUdp,
                                               witness: Witness, udpcopies: Path,
                                               n: int, path: str) -> None:
    """writev()/readv() on a connected carried socket (os.writev/os.readv; and
    pwritev2()/preadv2() at the offset -1, which are the same on a socket), and copies
    of carried sockets (os.dup: fcntl F_DUPFD_CLOEXEC; os.dup2: dup2 and dup3;
    socket(fileno=os.dup(...))), connected and not, the destination by name: every echo
    comes back unchanged, through the chain only. Without the hooks the datagram
    reaches the carrier bare (dropped) or the envelope is read as data. A C client
    makes the calls Python does not: dup(), fcntl() and __fcntl() F_DUPFD, __dup2(),
    and the 64-bit-offset names of preadv2/pwritev2."""
    asked_before = len(lab.dns.seen())
    start(sk, tmp_path, [udp_hops.url(i) for i in range(n)], path=path)
    port = str(far.echo_port)
    for mode, host in (("vectored", lablib.FAR_IP), ("copies", lablib.FAR_NAME)):
        report = client(sk, mode, host, port)
        assert report["ok"], f"{mode}: {report}"
    res = shimmed(sk, [str(udpcopies), lablib.FAR_IP, port])
    assert res.stdout.strip().splitlines()[-1:] == [f"{COPIES_C_CASES} passed, 0 failed"], \
        sk.describe(res)
    # vectored: 5 echoes; copies: 8; the C client's (each sent once, never around the
    # chain). Carried, the daemon counted them; handed off, it saw none (a stand-in
    # destination, by name, is still carried)
    echoes = 13 + COPIES_C_ECHOES
    if path == "relay":
        flows = carried_flows(sk)
        assert flows and all(f["chain"] == "u" for f in flows), flows
        assert sum(f["datagrams_up"] for f in flows) == echoes, flows
    else:   # handed-off flows end with their sockets (close, or the program's exit)
        assert re.search(r"UDP associated through chain u via .* \(handoff\)",
                         sk.daemon_log(tail=100000))
        lablib.wait_until(lambda: not carried_flows(sk, "handoff"), 15,
                          "the handed-off flows to end")
    assert len(far.seen()) == echoes and {ip for ip, _ in far.seen()} == {lablib.PROXY_FAR_IP}
    assert witness.packets() == 0
    assert lablib.FAR_NAME not in " ".join(lab.dns.seen()[asked_before:])


@pytest.mark.parametrize("path", PATHS)
def test_ten_thousand_datagrams_through_three_hops(lab: lablib.Lab, sk: Any,
                                                   tmp_path: Path, udp_hops: UdpHops,
                                                   far: FarUdp, witness: Witness,
                                                   path: str) -> None:
    """10,000 datagrams of 1,200 bytes from a connected socket under the shim, a
    window of 64 in flight: sent and received counted exactly, order kept within a
    tolerance; carried, the daemon's counters agree with the program's; handed off,
    the daemon carried none of them."""
    start(sk, tmp_path, [udp_hops.url(i) for i in range(3)], path=path)
    cpu = cpu_seconds(sk.daemon_pid())
    report = client(sk, "flood", lablib.FAR_IP, str(far.echo_port), "10000", "1200",
                    timeout=300)
    cpu = cpu_seconds(sk.daemon_pid()) - cpu
    print(f"3 hops under the shim: {report['sent']} sent, {report['received']} received,"
          f" {report['sent'] - report['received']} lost, {report['inversions']} "
          f"out of order, {report['seconds']}s "
          f"({report['received'] / report['seconds']:.0f} datagrams/s each way), "
          f"daemon CPU {cpu:.2f}s")
    assert report["ok"] and report["sent"] == 10000, report
    assert report["bad"] == 0 and report["distinct"] == report["received"], report
    assert report["received"] >= 9900, report
    assert report["inversions"] <= 10, report
    flows = carried_flows(sk)
    if path == "relay":
        assert len(flows) == 1 and flows[0]["datagrams_up"] == 10000, flows
        assert flows[0]["datagrams_down"] == report["received"], flows
    else:
        assert flows == [] and "UDP handed off [" in sk.daemon_log(), flows
    rtt = client(sk, "rtt", lablib.FAR_IP, str(far.echo_port), "200")
    assert rtt["ok"], rtt
    print(f"3-hop UDP echo ({path}), median of 200 round trips: {rtt['median_ms']} ms")
    assert witness.packets() == 0


def _refused(sk: Any, far: FarUdp, witness: Witness, mode: str = "error") -> dict[str, Any]:
    report = client(sk, mode, lablib.FAR_IP, str(far.echo_port))
    assert report["ok"], report
    assert far.seen() == [] and witness.packets() == 0
    return report


def test_socks4_hop_refuses_udp(lab: lablib.Lab, sk: Any, tmp_path: Path,
                                udp_hops: UdpHops, far: FarUdp, witness: Witness) -> None:
    start(sk, tmp_path, [lab.hops[0].url, udp_hops.url(1)])
    report = _refused(sk, far, witness)
    assert report["where"] == "send" and report["error"] == "ENETUNREACH", report
    assert "which has no UDP" in sk.daemon_log()


@pytest.mark.parametrize("path", PATHS)
def test_hop_refusing_udp_associate(lab: lablib.Lab, sk: Any, tmp_path: Path,
                                    udp_hops: UdpHops, far: FarUdp,
                                    witness: Witness, path: str) -> None:
    """Carried: the first datagram is taken and the association fails (an ERROR on
    the socket); handed off: the WRAP is refused (the association is built before the
    answer), so the send itself fails."""
    no_udp = f"socks5://{lablib.PROXY_NEAR_IP}:{udp_hops.no_udp_port}"
    start(sk, tmp_path, [udp_hops.url(0), no_udp], path=path)
    report = _refused(sk, far, witness)
    where = "recv" if path == "relay" else "send"
    assert report["where"] == where and report["error"] == "ECONNREFUSED", report
    assert "UDP ASSOCIATE" in sk.daemon_log()


@pytest.mark.parametrize("path", PATHS)
def test_hop_dying_mid_flow(lab: lablib.Lab, sk: Any, tmp_path: Path, udp_hops: UdpHops,
                            far: FarUdp, witness: Witness, path: str) -> None:
    """Hop 2 dies under a connected socket: carried, the carrier's ERROR envelope fails
    the next call (ECONNRESET); handed off, the daemon closes hop 1's control
    connection, hop 1 closes its relay, and the kernel reports the next datagram's
    port unreachable (ECONNREFUSED; the socket, connected to the relay, takes nothing
    from the carrier). Nothing leaves around the chain either way."""
    start(sk, tmp_path, [udp_hops.url(i) for i in range(3)], path=path)
    flag = tmp_path / "midflow"
    import sys
    bg = sk.spawn([sys.executable, str(CLIENT), "midflow", lablib.FAR_IP,
                   str(far.echo_port), str(flag)], preload=True)
    lablib.wait_until(lambda: (tmp_path / "midflow.ready").exists() or not bg.running(),
                      60, "the first echo")
    before = len(far.seen())
    assert before == 1, bg.result().describe()
    udp_hops.kill(1)
    lablib.wait_until(lambda: "control connection of its UDP association"
                      in sk.daemon_log(), 30, "the association to end")
    (tmp_path / "midflow.go").touch()
    res = bg.wait(60)
    report = json.loads(res.stdout.strip().splitlines()[-1])
    expected = "ECONNRESET" if path == "relay" else "ECONNREFUSED"
    assert report["ok"] and report["error"] == expected, (report, sk.daemon_log())
    assert witness.packets() == 0
    assert len(far.seen()) == before


@pytest.mark.parametrize("path", PATHS)
def test_reload_voids_grants_and_programs_ask_again(lab: lablib.Lab, sk: Any,
                                                    tmp_path: Path, udp_hops: UdpHops,
                                                    far: FarUdp, witness: Witness,
                                                    path: str) -> None:
    """A reload voids every grant (a new policy generation); a connected socket and an
    unconnected one go on being carried: the shim sees the new generation and asks
    again (once: the answer is cached for the process)."""
    import sys
    start(sk, tmp_path, [udp_hops.url(0)], path=path)
    flag = tmp_path / "twice"
    bg = sk.spawn([sys.executable, str(CLIENT), "twice", lablib.FAR_IP,
                   str(far.echo_port), str(flag)], preload=True)
    lablib.wait_until(lambda: (tmp_path / "twice.ready").exists() or not bg.running(),
                      60, "the first echoes")
    # one WRAP per socket and destination (answered CARRY under data_path relay)
    assert sk.control({"op": "status"})["carrier"]["grants"] == 2, sk.daemon_log()
    res = sk.socksifyd("reload", timeout=30)
    assert res.returncode == 0, sk.describe(res)
    (tmp_path / "twice.go").touch()
    res = bg.wait(60)
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["ok"], (report, sk.daemon_log())
    log = sk.daemon_log()
    if path == "relay":
        # then once more for the process: the CARRY answer is cached for it
        assert log.count("UDP carried [") == 3, log
    else:
        # each socket asked once, and once again after the reload
        assert log.count("UDP handed off [") == 4, log
    assert {ip for ip, _ in far.seen()} == {lablib.PROXY_FAR_IP}
    assert len(far.seen()) == 4 and witness.packets() == 0


def test_daemon_gone_refuses_never_direct(lab: lablib.Lab, sk: Any, tmp_path: Path,
                                          udp_hops: UdpHops, far: FarUdp,
                                          witness: Witness) -> None:
    """Carried once (a CARRY answer cached), then the daemon stops: the next
    datagrams are refused, never sent directly."""
    start(sk, tmp_path, [udp_hops.url(0)])
    assert client(sk, "sendto", lablib.FAR_IP, str(far.echo_port))["ok"]
    seen = len(far.seen())
    sk.socksifyd("stop", timeout=30)
    report = client(sk, "sendto", lablib.FAR_IP, str(far.echo_port))
    assert not report["ok"] and report["errno"] in (111, 110), report  # ECONNREFUSED
    assert len(far.seen()) == seen and witness.packets() == 0


def _grant(sk: Any, far: FarUdp) -> wire.Reply:
    """A CARRY answer for the far echo server, asked on the control socket as this
    test's user (the daemon's)."""
    req = wire.ConnectRequest(ipaddress.ip_address(lablib.FAR_IP), far.echo_port,
                              wire.SockType.DGRAM)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(sk.runtime_dir / "control.sock"))
        s.sendall(req.dumps())
        reply = wire.Reply.loads(lablib.recv_exact(s, wire.REPLY_SIZE))
    assert reply.verdict is wire.Verdict.CARRY, reply
    return reply


# the socket stays open a while: the carrier finds its owner in the kernel's table
SEND = ("import socket, sys, time; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        "s.sendto(bytes.fromhex(sys.argv[1]), ('127.0.0.1', int(sys.argv[2]))); "
        "time.sleep(2)")


def test_another_user_cannot_use_a_grant(lab: lablib.Lab, sk: Any, tmp_path: Path,
                                         udp_hops: UdpHops, far: FarUdp,
                                         witness: Witness) -> None:
    """Another local user holding a valid token (here: given it) sends an envelope to
    the carrier from a socket of their own: dropped (the kernel's UDP table names
    its uid). The same datagram from a socket of the grant's user is carried: the
    check is what stops it."""
    need("setpriv")
    start(sk, tmp_path, [udp_hops.url(0)])
    reply = _grant(sk, far)
    datagram = Envelope.data(ipaddress.ip_address(lablib.FAR_IP), far.echo_port,
                             reply.carry_token).wrap(b"forged").hex()
    carrier = str(reply.relay_port4)
    with userslib.system_users("u") as (other,):
        res = lab.client_run(["setpriv", f"--reuid={other.pw_uid}",
                              f"--regid={other.pw_gid}", "--clear-groups",
                              userslib.SYSTEM_PY, "-c", SEND,
                              datagram, carrier], timeout=30)
        assert res.returncode == 0, res.describe()
        lablib.wait_until(lambda: sk.control({"op": "status"})["carrier"]["dropped"]
                          .get("a socket of another user", 0) >= 1, 10, "the drop")
    time.sleep(0.5)
    assert far.seen() == []
    res = lab.client_run([userslib.SYSTEM_PY, "-c", SEND, datagram,
                          carrier], timeout=30)
    assert res.returncode == 0, res.describe()
    lablib.wait_until(lambda: far.seen(), 20, "the grant's own user to be carried")
    assert {ip for ip, _ in far.seen()} == {lablib.PROXY_FAR_IP}
    assert witness.packets() == 0


class HopOneSources:
    """An nft set in the client zone: the source ports of UDP sent to hop 1's address
    (the proxy zone's near side)."""

    def __init__(self, lab: lablib.Lab) -> None:
        import secrets
        self.lab = lab
        self.table = "skwrap" + secrets.token_hex(3)
        rules = textwrap.dedent(f"""\
            table ip {self.table} {{
              set sports {{ type inet_service; flags dynamic; }}
              chain out {{
                type filter hook output priority 0; policy accept;
                ip daddr {lablib.PROXY_NEAR_IP} meta l4proto udp add @sports {{ udp sport }}
              }}
            }}
            """)
        lab.client_run(["nft", "-f", "-"], input=rules.encode(), timeout=20, check=True)

    def ports(self) -> set[int]:
        import re
        res = self.lab.client_run(["nft", "list", "set", "ip", self.table, "sports"],
                                  timeout=20, check=True)
        m = re.search(r"elements = \{([^}]*)\}", res.stdout)
        return {int(p) for p in m.group(1).replace(",", " ").split()} if m else set()

    def close(self) -> None:
        self.lab.client_run(["nft", "delete", "table", "ip", self.table], timeout=20)


def test_handed_off_datagrams_go_straight_to_hop_1(lab: lablib.Lab, sk: Any,
                                                   tmp_path: Path, udp_hops: UdpHops,
                                                   far: FarUdp,
                                                   witness: Witness) -> None:
    """On the wire: a connected socket's datagrams through 3 hops leave from the
    program's own port for hop 1 (the client zone's nft set of source ports to hop 1
    holds it); the carrier carries none; `socksifyd connections` shows the flow as
    udp, path handoff, no byte counts. Once the program is killed the flow ends (the
    daemon watches the asking process) and hop 1's control connection with it."""
    import sys
    sources = HopOneSources(lab)
    try:
        start(sk, tmp_path, [udp_hops.url(i) for i in range(3)])
        flag = tmp_path / "midflow"
        bg = sk.spawn([sys.executable, str(CLIENT), "midflow", lablib.FAR_IP,
                       str(far.echo_port), str(flag)], preload=True)
        ready = tmp_path / "midflow.ready"
        lablib.wait_until(lambda: ready.exists() or not bg.running(), 60, "the echo")
        port = int(ready.read_text())
        assert port in sources.ports(), (port, sources.ports())
        assert far.seen() and {ip for ip, _ in far.seen()} == {lablib.PROXY_FAR_IP}
        status = sk.control({"op": "status"})
        assert status["carrier"]["flows"] == 0 and status["carrier"]["handoff_flows"] == 1
        assert not carried_flows(sk)
        (flow,) = carried_flows(sk, "handoff")
        assert flow["up"] is None and flow["down"] is None and flow["chain"] == "u"
        assert flow["route"].count(">") == 2, flow
        rows = json.loads(sk.socksifyd("connections", "--json", timeout=30).stdout)
        listed = rows["connections"] if isinstance(rows, dict) else rows
        assert any(r.get("path") == "handoff" and r.get("kind") == "udp"
                   for r in listed), listed
        table = sk.socksifyd("connections", timeout=30)
        assert "udp " in table.stdout, table.stdout
        # the program is killed: its flow ends (its pidfd)
        bg.kill()
        lablib.wait_until(lambda: not carried_flows(sk, "handoff"), 20,
                          "the handed-off flow to end")
        assert re.search(r"UDP flow closed \(the program \(pid \d+\) exited\)",
                         sk.daemon_log()), sk.daemon_log()[-2000:]
        assert witness.packets() == 0
    finally:
        sources.close()


def _wrap(sk: Any, sock: socket.socket, port: int) -> Any:
    """A WRAP answer for the far echo server's port, asked on the control socket as
    this test's user with sock attached, as the shim asks."""
    from socksify.protocol.datagram import WrapReply
    req = wire.ConnectRequest(ipaddress.ip_address(lablib.FAR_IP), port,
                              wire.SockType.DGRAM, op=wire.Op.WRAP)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(sk.runtime_dir / "control.sock"))
        socket.send_fds(s, [req.dumps()], [sock.fileno()])
        head = lablib.recv_exact(s, wire.REPLY_SIZE)
        body = lablib.recv_exact(s, WrapReply.body_len(head))
    return WrapReply.loads(head + body)


def _unwrap(sk: Any, sock: socket.socket) -> wire.Reply:
    """An UNWRAP with sock attached, as the shim's close() sends it."""
    local = sock.getsockname()
    req = wire.ConnectRequest(ipaddress.ip_address(local[0]), local[1],
                              wire.SockType.DGRAM, op=wire.Op.UNWRAP)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(sk.runtime_dir / "control.sock"))
        socket.send_fds(s, [req.dumps()], [sock.fileno()])
        return wire.Reply.loads(lablib.recv_exact(s, wire.REPLY_SIZE))


def test_hop_1_takes_datagrams_only_from_the_programs_port(lab: lablib.Lab, sk: Any,
                                                          tmp_path: Path,
                                                          udp_hops: UdpHops, far: FarUdp,
                                                          witness: Witness) -> None:
    """docs/security.md, the datagram handoff: hop 1 (danted) relays only datagrams
    from the address and port the daemon declared in UDP ASSOCIATE, the program
    socket's: the same prefix sent from another socket (another port: what another
    local user could do) is dropped by danted. Once the program closes its socket
    (an UNWRAP first, as the shim's close() sends), the association ends, and a
    socket bound to that very port once the daemon let it go reaches nothing."""
    start(sk, tmp_path, [udp_hops.url(i) for i in range(2)])

    def bound() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", 0))
        s.settimeout(5)
        return s
    prog: socket.socket = lablib.in_netns(lab.client_ns, bound)  # type: ignore[assignment]
    other: socket.socket = lablib.in_netns(lab.client_ns, bound)  # type: ignore[assignment]
    try:
        w = _wrap(sk, prog, far.echo_port)
        relay = (str(w.relay), w.relay_port)
        prog.sendto(w.send_prefix + b"legit", relay)
        got, frm = prog.recvfrom(2048)
        assert frm == relay and w.reply_payload(got) == b"legit", got
        assert len(far.seen()) == 1
        other.sendto(w.send_prefix + b"forged", relay)
        time.sleep(1.0)
        assert len(far.seen()) == 1, far.seen()      # danted dropped it
        port = prog.getsockname()[1]
        assert _unwrap(sk, prog).verdict is wire.Verdict.READY
        prog.close()
        assert not carried_flows(sk, "handoff")

        def same_port() -> socket.socket | None:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.bind(("0.0.0.0", port))
            except OSError:           # the daemon holds it until hop 1 has closed
                s.close()
                return None
            return s
        late = lablib.wait_until(lambda: lablib.in_netns(lab.client_ns, same_port), 20,
                                 "the daemon to let the port go")
        assert isinstance(late, socket.socket)
        with late:
            late.sendto(w.send_prefix + b"too late", relay)
            time.sleep(1.0)
        assert len(far.seen()) == 1, far.seen()
        assert witness.packets() == 0
    finally:
        prog.close()
        other.close()


# Another local user, racing for a handed-off socket's port: binds it as soon as it can
# (every millisecond), then sends the program's send prefix from it to hop 1's relay.
RACER = r'''
import errno, json, socket, sys, time
port, relay, prefix = int(sys.argv[1]), (sys.argv[2], int(sys.argv[3])), bytes.fromhex(sys.argv[4])
deadline = time.monotonic() + float(sys.argv[5])
refused = sent = 0
s = None
print("racing", flush=True)
while time.monotonic() < deadline:
    if s is None:
        t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            t.bind(("0.0.0.0", port))
        except OSError as e:
            t.close()
            if e.errno != errno.EADDRINUSE:
                raise
            refused += 1
            time.sleep(0.001)
            continue
        s = t
    try:
        s.sendto(prefix + b"forged", relay)
        sent += 1
    except OSError:
        pass
    time.sleep(0.01)
print(json.dumps({"refused": refused, "sent": sent, "bound": s is not None}), flush=True)
'''


@pytest.mark.parametrize("how", ["close", "exit"])
def test_another_user_racing_for_a_closed_sockets_port_reaches_nothing(
        lab: lablib.Lab, sk: Any, tmp_path: Path, udp_hops: UdpHops, far: FarUdp,
        witness: Witness, how: str) -> None:
    """docs/security.md, handed-off datagrams: a program under the shim closes its
    handed-off socket (close(): the shim's UNWRAP), or exits without closing it (the
    daemon watches the process). Another user spinning on bind() of that port from
    before the close gets EADDRINUSE while the daemon holds it, and once it gets the
    port, its datagrams with the program's prefix to hop 1's relay reach nothing: the
    far server saw only the program's. The association ends promptly: no udp/handoff
    row (on close while the program still runs)."""
    import sys
    from socksify.protocol.socks5udp import wrap
    need("setpriv")
    start(sk, tmp_path, [udp_hops.url(0)])
    flag = tmp_path / "closing"
    bg = sk.spawn([sys.executable, str(CLIENT), "closing", lablib.FAR_IP,
                   str(far.echo_port), str(flag), how], preload=True)
    ready = Path(str(flag) + ".ready")
    lablib.wait_until(lambda: ready.exists() or not bg.running(), 60, "the echo")
    assert ready.exists(), sk.describe(bg.result())
    info = json.loads(ready.read_text())
    assert info["first"] == "one" and info["relay"][1], info
    assert len(carried_flows(sk, "handoff")) == 1
    prefix = wrap(lablib.FAR_IP, far.echo_port, b"").hex()
    with userslib.system_users("r") as (other,):
        racer = sk.spawn(["setpriv", f"--reuid={other.pw_uid}", f"--regid={other.pw_gid}",
                          "--clear-groups", userslib.SYSTEM_PY, "-c", RACER,
                          str(info["port"]), info["relay"][0], str(info["relay"][1]),
                          prefix, "8"])
        lablib.wait_until(lambda: "racing" in racer.result().stdout
                          or not racer.running(), 30, "the racer to start")
        time.sleep(0.3)                  # it spins on bind() while the program holds it
        Path(str(flag) + ".go").touch()
        if how == "close":
            lablib.wait_until(lambda: Path(str(flag) + ".closed").exists(), 30,
                              "the program's close()")
        lablib.wait_until(lambda: not carried_flows(sk, "handoff"), 15,
                          "the handed-off flow to end")
        if how == "close":
            assert bg.running()          # ended by the close, not by an exit
            assert "the program closed its socket" in sk.daemon_log()
        else:
            assert "exited" in sk.daemon_log()
        res = racer.wait(60)
    Path(str(flag) + ".end").touch()
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["refused"] >= 1 and report["bound"] and report["sent"] >= 1, report
    time.sleep(0.5)
    assert len(far.seen()) == 1, far.seen()        # the program's "one", nothing forged
    assert witness.packets() == 0


def test_many_wrapped_sockets_leave_the_daemon_no_descriptor(
        lab: lablib.Lab, sk: Any, tmp_path: Path, udp_hops: UdpHops, far: FarUdp,
        witness: Witness) -> None:
    """200 handed-off sockets in a row, each closed: the daemon's descriptor count
    returns to where it was (its copies of the sockets and hop 1's control
    connections are all let go)."""
    import sys
    import psutil
    start(sk, tmp_path, [udp_hops.url(0)])
    pid = sk.daemon_pid()
    assert pid is not None
    # one round first: the daemon's lasting descriptors (carrier, loops) are open
    report = client(sk, "many", lablib.FAR_IP, str(far.echo_port), "1")
    assert report["ok"], report["_describe"]
    lablib.wait_until(lambda: not carried_flows(sk, "handoff"), 15, "the first flow to end")
    time.sleep(0.5)
    before = psutil.Process(pid).num_fds()
    report = client(sk, "many", lablib.FAR_IP, str(far.echo_port), "200", timeout=300)
    assert report["ok"], report["_describe"]
    lablib.wait_until(lambda: not carried_flows(sk, "handoff"), 15, "the flows to end")
    lablib.wait_until(lambda: psutil.Process(pid).num_fds() <= before, 20,
                      f"the daemon's descriptors back to {before}")
    assert "the program closed its socket" in sk.daemon_log(tail=100000)
    assert witness.packets() == 0


# A hostile SOCKS5 hop with UDP ASSOCIATE, in the proxy zone: for each datagram from the
# client it sends back, from its relay, junk, then the right reply with the
# destination's port off by one (another prefix), then the right reply ("pong").
HOSTILE_HOP = r'''
import socket, struct, sys, threading
host = sys.argv[1]
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((host, 0)); ls.listen(8)
print(ls.getsockname()[1], flush=True)
def serve(c):
    c.recv(3); c.sendall(b"\x05\x00")
    head = c.recv(4); c.recv(6 if head[3] == 1 else 18)
    r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); r.bind((host, 0))
    c.sendall(b"\x05\x00\x00\x01" + socket.inet_aton(host) + struct.pack("!H", r.getsockname()[1]))
    while True:
        data, src = r.recvfrom(65536)
        if data[:4] != b"\0\0\0\x01":
            continue
        hdr = data[:10]
        other = hdr[:8] + struct.pack("!H", (struct.unpack("!H", hdr[8:])[0] + 1) & 0xffff)
        r.sendto(b"junk from hop 1", src)
        r.sendto(other + b"another prefix", src)
        r.sendto(hdr + b"pong", src)
while True:
    c, _ = ls.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
'''

HOSTILE_CLIENT = r'''
import json, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(10)
s.sendto(b"ping", (host, port))
data, src = s.recvfrom(2048)
s.setblocking(False)
more = []
import time; time.sleep(0.5)
while True:
    try:
        more.append(s.recv(2048).decode(errors="replace"))
    except BlockingIOError:
        break
print(json.dumps({"first": data.decode(errors="replace"), "src": list(src), "more": more}))
'''


def test_a_hostile_hop_1_cannot_deliver_junk(lab: lablib.Lab, sk: Any,
                                             tmp_path: Path, witness: Witness) -> None:
    """A scripted hop 1 answers each handed-off datagram with junk, a reply with another
    destination's prefix and the right reply: the program gets only the right one,
    from the destination it asked; the other two are dropped by the shim."""
    import subprocess
    import sys
    script = tmp_path / "hostile.py"
    script.write_text(HOSTILE_HOP)
    hop = subprocess.Popen(["ip", "netns", "exec", lab.hops[0].ns, sys.executable,
                            str(script), lablib.PROXY_NEAR_IP], stdout=subprocess.PIPE)
    try:
        assert hop.stdout is not None
        port = int(hop.stdout.readline())
        start(sk, tmp_path, [f"socks5://{lablib.PROXY_NEAR_IP}:{port}"])
        client_py = tmp_path / "hostile_client.py"
        client_py.write_text(HOSTILE_CLIENT)
        res = shimmed(sk, [sys.executable, str(client_py), lablib.FAR_IP, "7777"])
        report = json.loads(res.stdout.strip().splitlines()[-1])
        assert report == {"first": "pong", "src": [lablib.FAR_IP, 7777], "more": []}, \
            (report, sk.describe(res))
        assert "UDP handed off [" in sk.daemon_log()
        assert witness.packets() == 0
    finally:
        hop.kill()
        hop.wait()

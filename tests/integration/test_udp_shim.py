"""Programs under the Linux shim get their datagrams CARRIED (issue 19,
docs/wire.md "Carried datagrams"): a rule with udp = "chain" sends each datagram,
behind a 36-byte envelope, to the daemon's carrier, which carries it through the
chain's SOCKS5 UDP association; replies come back enveloped and the shim strips
them. Real programs (dig, nc -u, a Python client of plain socket calls) run in the
client zone with the shim preloaded; the hops are danted with UDP (tests/udplab.py).

Witnesses: the far servers record each datagram's source (the last hop's address,
never the client zone's); an nft counter in the client zone counts UDP leaving around
the chain; the lab's recording resolver must not be asked the far name."""

from __future__ import annotations

import ipaddress
import json
import os
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


def start(sk: Any, tmp_path: Path, hops: list[str], udp: str = "chain") -> None:
    pol = tmp_path / "carry.toml"
    listed = ", ".join(f'"{h}"' for h in hops)
    pol.write_text(textwrap.dedent(f"""\
        [chains.u]
        hops = [{listed}]

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


def carried_flows(sk: Any) -> list[dict[str, Any]]:
    return [c for c in sk.control({"op": "connections"})["connections"]
            if c.get("path") == "carried"]


@pytest.mark.parametrize("n", [1, 3])
def test_programs_datagrams_are_carried(lab: lablib.Lab, sk: Any, tmp_path: Path,
                                        udp_hops: UdpHops, far: FarUdp,
                                        witness: Witness, n: int) -> None:
    """dig (its own UDP), nc -u, and a Python client (sendto/recvfrom, by address and
    by name, MSG_PEEK and MSG_TRUNC; connected send/recv, read/write, sendmsg/recvmsg
    and getpeername; non-blocking with select; local datagrams on a carried socket
    untouched; an IPv6 socket to an IPv4 destination): right answers, the far servers saw
    the last hop only, nothing left around the chain, the lab resolver was not asked
    the far name."""
    need("dig")
    need("nc")
    asked_before = len(lab.dns.seen())
    start(sk, tmp_path, [udp_hops.url(i) for i in range(n)])
    port = str(far.echo_port)
    for mode, host in (("sendto", lablib.FAR_IP), ("sendto", lablib.FAR_NAME),
                       ("connected", lablib.FAR_IP), ("nonblock", lablib.FAR_IP),
                       ("mixed", lablib.FAR_IP), ("six", lablib.FAR_IP)):
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
    assert sum(f["datagrams_up"] for f in flows) >= 5, flows
    assert all(f["route"].count(">") == n - 1 for f in flows if f["route"]), flows
    assert sk.control({"op": "status"})["udp_flows"] == len(flows)
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


@pytest.mark.parametrize("n", [1, 3])
def test_vectored_calls_and_copies_are_carried(lab: lablib.Lab, sk: Any, tmp_path: Path,
                                               udp_hops: UdpHops, far: FarUdp,
                                               witness: Witness, udpcopies: Path,
                                               n: int) -> None:
    """writev()/readv() on a connected carried socket (os.writev/os.readv; and
    pwritev2()/preadv2() at the offset -1, which are the same on a socket), and copies
    of carried sockets (os.dup: fcntl F_DUPFD_CLOEXEC; os.dup2: dup2 and dup3;
    socket(fileno=os.dup(...))), connected and not, the destination by name: every echo
    comes back unchanged, through the chain only. Without the hooks the datagram
    reaches the carrier bare (dropped) or the envelope is read as data. A C client
    makes the calls Python does not: dup(), fcntl() and __fcntl() F_DUPFD, __dup2(),
    and the 64-bit-offset names of preadv2/pwritev2."""
    asked_before = len(lab.dns.seen())
    start(sk, tmp_path, [udp_hops.url(i) for i in range(n)])
    port = str(far.echo_port)
    for mode, host in (("vectored", lablib.FAR_IP), ("copies", lablib.FAR_NAME)):
        report = client(sk, mode, host, port)
        assert report["ok"], f"{mode}: {report}"
    res = shimmed(sk, [str(udpcopies), lablib.FAR_IP, port])
    assert res.stdout.strip().splitlines()[-1:] == [f"{COPIES_C_CASES} passed, 0 failed"], \
        sk.describe(res)
    flows = carried_flows(sk)
    assert flows and all(f["chain"] == "u" for f in flows), flows
    # vectored: 5 echoes; copies: 8; the C client's (each sent once, never around the
    # chain)
    echoes = 13 + COPIES_C_ECHOES
    assert sum(f["datagrams_up"] for f in flows) == echoes, flows
    assert len(far.seen()) == echoes and {ip for ip, _ in far.seen()} == {lablib.PROXY_FAR_IP}
    assert witness.packets() == 0
    assert lablib.FAR_NAME not in " ".join(lab.dns.seen()[asked_before:])


def test_ten_thousand_datagrams_through_three_hops(lab: lablib.Lab, sk: Any,
                                                   tmp_path: Path, udp_hops: UdpHops,
                                                   far: FarUdp, witness: Witness) -> None:
    """10,000 datagrams of 1,200 bytes from a connected socket under the shim, a
    window of 64 in flight: sent and received counted exactly, order kept within a
    tolerance; the daemon's counters agree with the program's."""
    start(sk, tmp_path, [udp_hops.url(i) for i in range(3)])
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
    assert len(flows) == 1 and flows[0]["datagrams_up"] == 10000, flows
    assert flows[0]["datagrams_down"] == report["received"], flows
    rtt = client(sk, "rtt", lablib.FAR_IP, str(far.echo_port), "200")
    assert rtt["ok"], rtt
    print(f"3-hop carried UDP echo, median of 200 round trips: {rtt['median_ms']} ms")
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


def test_hop_refusing_udp_associate(lab: lablib.Lab, sk: Any, tmp_path: Path,
                                    udp_hops: UdpHops, far: FarUdp,
                                    witness: Witness) -> None:
    no_udp = f"socks5://{lablib.PROXY_NEAR_IP}:{udp_hops.no_udp_port}"
    start(sk, tmp_path, [udp_hops.url(0), no_udp])
    report = _refused(sk, far, witness)
    assert report["where"] == "recv" and report["error"] == "ECONNREFUSED", report
    assert "UDP ASSOCIATE" in sk.daemon_log()


def test_hop_dying_mid_flow(lab: lablib.Lab, sk: Any, tmp_path: Path, udp_hops: UdpHops,
                            far: FarUdp, witness: Witness) -> None:
    start(sk, tmp_path, [udp_hops.url(i) for i in range(3)])
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
    assert report["ok"] and report["error"] == "ECONNRESET", (report, sk.daemon_log())
    assert witness.packets() == 0
    assert len(far.seen()) == before


def test_reload_voids_grants_and_programs_ask_again(lab: lablib.Lab, sk: Any,
                                                    tmp_path: Path, udp_hops: UdpHops,
                                                    far: FarUdp, witness: Witness) -> None:
    """A reload voids every grant (a new policy generation); a connected socket and an
    unconnected one go on being carried: the shim sees the new generation and asks
    again (once: the answer is cached for the process)."""
    import sys
    start(sk, tmp_path, [udp_hops.url(0)])
    flag = tmp_path / "twice"
    bg = sk.spawn([sys.executable, str(CLIENT), "twice", lablib.FAR_IP,
                   str(far.echo_port), str(flag)], preload=True)
    lablib.wait_until(lambda: (tmp_path / "twice.ready").exists() or not bg.running(),
                      60, "the first echoes")
    # one question per process and destination: the answer is cached
    assert sk.control({"op": "status"})["carrier"]["grants"] == 1, sk.daemon_log()
    res = sk.socksifyd("reload", timeout=30)
    assert res.returncode == 0, sk.describe(res)
    (tmp_path / "twice.go").touch()
    res = bg.wait(60)
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["ok"], (report, sk.daemon_log())
    log = sk.daemon_log()
    assert log.count("UDP carried [") == 2, log        # asked again once
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

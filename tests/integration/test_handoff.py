"""The kernel-direct data path (handoff), pre-built tunnels and the shim's cache of
DIRECT answers (docs/data-path.md, docs/wire.md), with real danted hops.

A small probe program sets options and flags on its socket, connects under socksify,
reports what its socket looks like afterwards (flags, options, getpeername,
getsockname) and fetches a file over it, hash-checked.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import lab as lablib
from conftest import start_daemon

pytestmark = pytest.mark.lab

PROBE = r'''
import errno, fcntl, hashlib, json, os, select, socket, sys, time
host, port, path, count, blocking = (sys.argv[1], int(sys.argv[2]), sys.argv[3],
                                     int(sys.argv[4]), sys.argv[5] == "blocking")
pause = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0

def control(fd):   # the shim's control connection, kept between requests
    try:
        dup = os.dup(int(fd))
    except OSError:
        return False
    try:
        s = socket.socket(fileno=dup)
    except OSError:
        os.close(dup)
        return False
    try:
        peer = s.getpeername() if s.family == socket.AF_UNIX else ""
    except OSError:
        peer = ""
    finally:
        s.close()
    return isinstance(peer, str) and peer.endswith("control.sock")

def fds():
    return sorted(fd for fd in os.listdir("/proc/self/fd") if not control(fd))

out = []
fds_before = fds()
for i in range(count):
    if i:
        time.sleep(pause)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 77)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 100000)
    # more than any SOCKS reply: the daemon must not wait for it on the chain's replies
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 64)
    if not blocking:
        s.setblocking(False)
    fcntl.fcntl(s, fcntl.F_SETFD, 0)                     # not close-on-exec
    before = {"fl": fcntl.fcntl(s, fcntl.F_GETFL), "fd": fcntl.fcntl(s, fcntl.F_GETFD),
              "rcvbuf": s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)}
    fileno = s.fileno()
    err = s.connect_ex((host, port))
    if err == errno.EINPROGRESS:
        select.select([], [s], [], 30)
        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        out.append({"errno": err})
        s.close()
        continue
    after = {"fl": fcntl.fcntl(s, fcntl.F_GETFL), "fd": fcntl.fcntl(s, fcntl.F_GETFD),
             "rcvbuf": s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)}
    info = {
        "errno": 0, "same_fd": s.fileno() == fileno, "before": before, "after": after,
        "nodelay": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
        "keepalive": s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        "keepidle": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
        "rcvlowat": s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT),
        "peer": list(s.getpeername()), "local": list(s.getsockname()),
    }
    s.setblocking(True)
    s.sendall(f"GET {path} HTTP/1.0\r\nHost: far\r\n\r\n".encode())
    data = b""
    while True:
        chunk = s.recv(1 << 16)
        if not chunk:
            break
        data += chunk
    s.close()
    info["sha256"] = hashlib.sha256(data.split(b"\r\n\r\n", 1)[1]).hexdigest()
    out.append(info)
print(json.dumps({"conns": out, "fds_before": fds_before, "fds_after": fds()}))
'''


@pytest.fixture
def probe(tmp_path: Path) -> Path:
    path = tmp_path / "probe.py"
    path.write_text(PROBE)
    return path


def run_probe(sk, lab: lablib.Lab, probe: Path, marker: str, opts: list[str],
              count: int = 1, blocking: bool = True, pause: float = 0.0,
              hops: int = 3) -> dict[str, Any]:
    res = sk.run([sys.executable, str(probe), lab.far_ip, str(lab.http_port),
                  f"/small.bin?m={marker}", str(count),
                  "blocking" if blocking else "nonblocking", str(pause)],
                 via=sk.hops(hops), opts=["-v", *opts], timeout=120)
    assert res.returncode == 0, sk.describe(res)
    report: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return report


def check_socket(lab: lablib.Lab, conn: dict[str, Any], kernel_direct: bool) -> None:
    """The program's socket after connect(): its own fd, flags and options as it set
    them, the destination it asked for as its peer, the file intact."""
    assert conn["errno"] == 0, conn
    assert conn["same_fd"], conn
    assert conn["after"]["fl"] == conn["before"]["fl"], conn      # O_NONBLOCK as it was
    assert conn["after"]["fd"] == conn["before"]["fd"], conn      # close-on-exec too
    assert conn["after"]["rcvbuf"] == conn["before"]["rcvbuf"], conn
    assert conn["nodelay"] and conn["keepalive"] and conn["keepidle"] == 77, conn
    assert conn["rcvlowat"] == 64, conn
    assert conn["peer"] == [lab.far_ip, lab.http_port], conn
    # kernel-direct: the socket's own address is the client zone's, not a loopback
    # connection to the daemon's relay
    assert (conn["local"][0] == lablib.CLIENT_IP) == kernel_direct, conn
    assert conn["sha256"] == lab.small_sha256, conn


@pytest.mark.parametrize("blocking", [True, False], ids=["blocking", "nonblocking"])
def test_handoff_keeps_the_programs_socket(lab: lablib.Lab, sk, probe: Path,
                                           blocking: bool) -> None:
    """Handoff (the default): the chain is built on the program's own socket, which
    then talks to hop 1 itself; the daemon holds nothing for it afterwards."""
    m = f"handoff-{os.urandom(4).hex()}"
    before = lab.hop_connects()
    report = run_probe(sk, lab, probe, m, [], blocking=blocking)
    (conn,) = report["conns"]
    check_socket(lab, conn, kernel_direct=True)
    assert report["fds_after"] == report["fds_before"], report
    assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]
    lab.wait_hop_connects(before, [1, 1, 1])
    assert "handed off" in sk.daemon_log(), sk.daemon_log()
    assert sk.control({"op": "connections"})["connections"] == []


def test_one_hop_handoff_reads_its_reply_below_the_programs_low_water_mark(
        lab: lablib.Lab, sk, probe: Path) -> None:
    """A program that set SO_RCVLOWAT (64) before connect(): the daemon reads hop 1's
    8-byte reply anyway (a wait for 64 bytes would have run into the read timeout:
    ETIMEDOUT) and the program finds its own value again (check_socket)."""
    m = f"lowat-{os.urandom(4).hex()}"
    report = run_probe(sk, lab, probe, m, [], hops=1)
    (conn,) = report["conns"]
    check_socket(lab, conn, kernel_direct=True)
    assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]


def test_relay_is_still_there(lab: lablib.Lab, sk, probe: Path) -> None:
    """--data-path relay: the same program, its socket connected to the daemon's relay
    (a loopback address), everything else as with handoff."""
    m = f"relay-{os.urandom(4).hex()}"
    report = run_probe(sk, lab, probe, m, ["--data-path", "relay"])
    (conn,) = report["conns"]
    check_socket(lab, conn, kernel_direct=False)
    assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]
    assert "handed off" not in sk.daemon_log()


def test_prebuilt_tunnels(lab: lablib.Lab, sk, probe: Path) -> None:
    """--prebuilt 2: after the first connection the daemon keeps two tunnels built up to
    hop 3; the next connections finish one with a single request and put its socket in
    the program's socket's place, with the program's options and flags."""
    m = f"prebuilt-{os.urandom(4).hex()}"
    before = lab.hop_connects()
    report = run_probe(sk, lab, probe, m, ["--prebuilt", "2"], count=4, pause=1.0)
    for conn in report["conns"]:
        check_socket(lab, conn, kernel_direct=True)
    assert report["fds_after"] == report["fds_before"], report
    assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip] * 4
    log = sk.daemon_log(20000)
    assert log.count("(pre-built)") >= 2, log
    # hop 3 was asked for the far host once per connection, by pre-built tunnels too
    far = f"{lab.far_ip}.{lab.http_port}"
    lablib.wait_until(lambda: lab.hop_targets_since(before)[2].count(far) == 4, 10,
                      "hop 3 to log four requests for the far host")


def prebuilt_policy(sk, tmp_path: Path, extra: str = "") -> Path:
    pol = tmp_path / "pol.toml"
    hops = ", ".join(f'"{h}"' for h in sk.hops(3))
    pol.write_text(f'[chains.c3]\nhops = [{hops}]\nprebuilt = 2\n{extra}\n'
                   '[default]\naction = "chain:c3"\n')
    return pol


def pool_of(sk) -> dict[str, int]:
    status = sk.control({"op": "status"})
    (pool,) = [c["prebuilt"] for c in status["chains"] if c.get("prebuilt")]
    return pool  # type: ignore[no-any-return]


def fetch_once(lab: lablib.Lab, sk, probe: Path, name: str) -> None:
    m = f"{name}-{os.urandom(4).hex()}"
    res = sk.run([sys.executable, str(probe), lab.far_ip, str(lab.http_port),
                  f"/small.bin?m={m}", "1", "blocking"], opts=["-v"], timeout=120)
    assert res.returncode == 0, sk.describe(res)
    (conn,) = json.loads(res.stdout.strip().splitlines()[-1])["conns"]
    check_socket(lab, conn, kernel_direct=True)
    assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]


def test_prebuilt_tunnels_are_aged_out(lab: lablib.Lab, sk, probe: Path,
                                       tmp_path: Path) -> None:
    """prebuilt_max_age 1 s: a tunnel that waited longer is closed and replaced (a hop
    would otherwise drop it at its own negotiation timeout)."""
    start_daemon(sk, prebuilt_policy(sk, tmp_path, "prebuilt_max_age = 1.0"))
    fetch_once(lab, sk, probe, "warm")         # the chain's first use starts the pool
    lablib.wait_until(lambda: pool_of(sk)["discarded"] >= 2 and pool_of(sk)["ready"] == 2,
                      20, "two tunnels to age out and be replaced")
    fetch_once(lab, sk, probe, "aged")


def test_prebuilt_tunnels_are_health_checked(lab: lablib.Lab, sk, probe: Path,
                                             tmp_path: Path) -> None:
    """Hop 3 restarts while two tunnels wait at it: both are dead. The next connection
    is not given one (it would fail): it is found closed, thrown away, and the
    connection succeeds on a fresh chain."""
    start_daemon(sk, prebuilt_policy(sk, tmp_path))
    fetch_once(lab, sk, probe, "warm")
    lablib.wait_until(lambda: pool_of(sk)["ready"] == 2, 20, "two tunnels ready")
    lab.stop_hop(3)
    lab.start_hop(3)
    fetch_once(lab, sk, probe, "afterrestart")
    assert pool_of(sk)["discarded"] >= 1, pool_of(sk)


CONNECTS = r'''
import errno, os, socket, sys, time
host, port, n, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def connect():
    s = socket.socket()
    try:
        s.settimeout(10)
        s.connect((host, port))
        return 0
    except OSError as exc:
        return exc.errno
    finally:
        s.close()
first = [connect() for _ in range(n)]
print("phase1", *first, flush=True)
deadline = time.time() + 60
while not os.path.exists(go) and time.time() < deadline:
    time.sleep(0.05)
print("phase2", connect(), flush=True)
'''

NEAR_DIRECT = """\
[chains.c1]
hops = ["{hop}"]

[[rules]]
name = "near"
dest = ["{near}/32"]
action = "{near_action}"

[default]
action = "chain:c1"
"""


def direct_events(sk) -> int:
    return sum(1 for line in sk.daemon_log(10**6).splitlines()
               if f"-> {lablib.CLIENT_IP}:" in line and ": direct" in line)


@pytest.mark.parametrize("how", ["reload", "kill"])
def test_cached_direct_answers(lab: lablib.Lab, sk, tmp_path: Path, how: str) -> None:
    """A destination the policy sends direct is asked about once; the next connects use
    the shim's cached answer (the daemon logs one decision for five connects). A reload
    that blocks it voids the cache at once (EACCES, the witness sees nothing more); a
    killed daemon voids it too (ECONNREFUSED: fail closed, never direct)."""
    witness = lablib.WitnessServer(lablib.listener_in(lab.client_ns, lablib.CLIENT_IP),
                                   "near")
    try:
        pol = tmp_path / "pol.toml"
        pol.write_text(NEAR_DIRECT.format(hop=sk.hops(1)[0], near=lablib.CLIENT_IP,
                                          near_action="direct"))
        pid = start_daemon(sk, pol)
        script = tmp_path / "connects.py"
        script.write_text(CONNECTS)
        go = tmp_path / "go"
        bg = sk.spawn([sys.executable, str(script), lablib.CLIENT_IP, str(witness.port),
                       "5", str(go)], preload=True)
        lablib.wait_until(lambda: "phase1" in bg.result().stdout or not bg.running(),
                          60, "five direct connects")
        assert bg.result().stdout.split()[:6] == ["phase1"] + ["0"] * 5, \
            bg.result().describe()
        lablib.wait_until(lambda: witness.count() == 5, 10, "the witness to see 5")
        assert direct_events(sk) == 1, sk.daemon_log()
        if how == "reload":
            pol.write_text(NEAR_DIRECT.format(hop=sk.hops(1)[0], near=lablib.CLIENT_IP,
                                              near_action="block"))
            res = sk.socksifyd("reload")
            assert res.returncode == 0, sk.describe(res)
            want = errno.EACCES
        else:
            os.kill(pid, signal.SIGKILL)
            lablib.wait_until(lambda: not Path(f"/proc/{pid}").exists(), 10,
                              "the daemon to die")
            want = errno.ECONNREFUSED
        go.touch()
        res = bg.wait(60)
        assert res.stdout.split()[-2:] == ["phase2", str(want)], res.describe()
        assert witness.count() == 5, "a connect went direct after the cache was void"
    finally:
        witness.close()


def test_policy_keys_are_checked(tmp_path: Path) -> None:
    from socksify.errors import ConfigError
    from socksify.policy import Policy
    cases = {
        'prebuilt = "two"': "prebuilt must be a whole number",
        'prebuilt = 2\nstrategy = "dynamic"': "prebuilt tunnels need a fixed route",
        'data_path = "splice"': "data_path 'splice' must be one of handoff, relay",
        'prebuilt = 1000': "between 0 (off) and 64",
    }
    for extra, message in cases.items():
        pol = tmp_path / "p.toml"
        pol.write_text(textwrap.dedent(f"""\
            [chains.c]
            hops = ["socks4://10.0.0.1:1080"]
            {extra}

            [default]
            action = "chain:c"
            """))
        with pytest.raises(ConfigError) as info:
            Policy.load(pol)
        assert message in str(info.value) and f"{pol}:3" in str(info.value), info.value


def test_bad_handoffs_are_refused_and_leave_nothing(lab: lablib.Lab, sk) -> None:
    """HANDOFF requests a broken or hostile local client might send: none, two, or the
    wrong kind of descriptor (a pipe, a UDP socket, a Unix socket). Each gets FAIL
    code 7 (EPROTO), the daemon keeps serving, and it holds no descriptor of theirs
    afterwards."""
    import ipaddress
    import socket as so
    from socksify.protocol import control as wire

    res = sk.run(["true"], via=sk.hops(1))
    assert res.returncode == 0, sk.describe(res)
    pid = sk.daemon_pid()
    assert pid is not None
    base = sorted(os.listdir(f"/proc/{pid}/fd"))
    request = wire.ConnectRequest(ipaddress.ip_address(lab.far_ip), lab.http_port,
                                  op=wire.Op.HANDOFF).dumps()
    r, w = os.pipe()
    udp = so.socket(so.AF_INET, so.SOCK_DGRAM)
    unix_a, unix_b = so.socketpair()
    tcp1, tcp2 = so.socket(), so.socket()
    try:
        for fds in ([], [tcp1.fileno(), tcp2.fileno()], [r], [udp.fileno()],
                    [unix_a.fileno()]):
            c = so.socket(so.AF_UNIX, so.SOCK_STREAM)
            c.settimeout(10)
            c.connect(str(sk.runtime_dir / "control.sock"))
            so.send_fds(c, [request], fds)
            reply = wire.Reply.loads(lablib.recv_exact(c, wire.REPLY_SIZE))
            c.close()
            assert reply.verdict is wire.Verdict.FAIL and reply.code is wire.Code.PROTO, \
                (fds, reply)
    finally:
        for fd in (r, w):
            os.close(fd)
        for s in (udp, unix_a, unix_b, tcp1, tcp2):
            s.close()
    lablib.wait_until(lambda: sorted(os.listdir(f"/proc/{pid}/fd")) == base, 10,
                      "the daemon's fds to be back where they were")
    m = f"after-{os.urandom(4).hex()}"
    c = sk.client("rawfetch", lab.far_ip, str(lab.http_port), f"/small.bin?m={m}",
                  via=sk.hops(1))
    assert c.ok and c["sha256"] == lab.small_sha256, c.describe()
    assert sk.daemon_pid() == pid

"""The lane (lane/lane.c, listeners/lane.py): the daemon's compiled connect path,
with real danted hops. A program's first connect to a destination goes through the
chain engine, which leaves the lane a route. The lane then builds the program's next
connects to that destination on its own, with the same bytes on the wire and the
same socket for the program. A refusal, a reload and a session's end send the next
connect back through the engine.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

import lab as lablib
from conftest import start_daemon
from integration.test_handoff import PROBE, check_socket

pytestmark = pytest.mark.lab


@pytest.fixture
def probe(tmp_path: Path) -> Path:
    path = tmp_path / "probe.py"
    path.write_text(PROBE)
    return path


def serve_once(listener) -> threading.Thread:
    """Accept one connection on listener and send it "!"; from then on the port
    refuses."""
    def serve() -> None:
        listener.settimeout(30)
        try:
            conn, _ = listener.accept()
            conn.sendall(b"!")
            conn.close()
        finally:
            listener.close()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    return server


def lane_lines(sk) -> int:
    return sk.daemon_log(40000).count("handed off by the lane")


@pytest.mark.parametrize("scheme", ["socks4", "socks5"])
@pytest.mark.parametrize("hops", [1, 3])
def test_repeat_connects_are_built_by_the_lane(lab: lablib.Lab, sk, probe: Path,
                                               scheme: str, hops: int) -> None:
    """Four connects of one program to one destination: the first through the chain
    engine, the next three by the lane. Each socket is the program's own, with its
    options, flags and SO_RCVLOWAT (64) as it set them, connected through every hop
    (the hops' logs) to the far host, which serves the file whole."""
    m = f"lane-{scheme}-{hops}-{os.urandom(4).hex()}"
    before = lab.hop_connects()
    via = [h.url.replace("socks4://", f"{scheme}://") for h in lab.hops[:hops]]
    res = sk.run([sys.executable, str(probe), lab.far_ip, str(lab.http_port),
                  f"/small.bin?m={m}", "4", "blocking", "0.05"], via=via, opts=["-v"],
                 timeout=120)
    assert res.returncode == 0, sk.describe(res)
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert len(report["conns"]) == 4, report
    for conn in report["conns"]:
        check_socket(lab, conn, kernel_direct=True)
    assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip] * 4
    lab.wait_hop_connects(before, [4] * hops)
    assert lane_lines(sk) == 3, sk.daemon_log()
    status = sk.control({"op": "status"})
    # the program has exited: its routes went with its control connection
    assert status["lane"] == {"served": 3, "routes": 0, "processes": 0, "tunnels": 0}, \
        status


def test_a_refusal_by_the_lane_is_the_programs_errno_and_the_engine_takes_over(
        lab: lablib.Lab, sk, tmp_path: Path) -> None:
    """The far service goes away after the first connect: the lane's next connect
    gets hop 3's refusal and answers ECONNREFUSED (never a direct connection), logs
    it, and drops the process's routes: the connect after it goes through the chain
    engine again, and is refused there too."""
    listener = lablib.listener_in(lab.far_ns)
    port = listener.getsockname()[1]
    client = tmp_path / "client.py"
    client.write_text(CLIENT)
    server = serve_once(listener)
    res = sk.run([sys.executable, str(client), lab.far_ip, str(port), "3"],
                 via=sk.hops(3), opts=["-v"], timeout=60)
    server.join(10)
    assert res.returncode == 0, sk.describe(res)
    errs = json.loads(res.stdout.strip().splitlines()[-1])
    assert errs == [0, errno.ECONNREFUSED, errno.ECONNREFUSED], sk.describe(res)
    log = sk.daemon_log(40000)
    assert "handed off by the lane" not in log, log
    assert log.count("CONNECT the target refused") == 1, log   # the lane's refusal


CLIENT = r'''
import json, socket, sys, time
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pause = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0   # between connects
out = []
for i in range(count):
    if i:
        time.sleep(pause)
    s = socket.socket()
    s.settimeout(20)
    err = s.connect_ex((host, port))
    if err == 0:
        s.recv(1)
    out.append(err)
    s.close()
print(json.dumps(out))
'''


def test_a_reload_sends_the_next_connect_through_the_new_policy(
        lab: lablib.Lab, sk, tmp_path: Path, probe: Path) -> None:
    """A daemon policy with a 3-hop chain; after two connects (the second by the
    lane) the policy is changed to a 1-hop chain and reloaded (SIGHUP): the next
    connect of the same program goes through the new chain, not the lane's route."""
    pol = tmp_path / "policy.toml"

    def write(hops: int) -> None:
        pol.write_text("[chains.out]\nhops = [" + ", ".join(
            f'"{h.url}"' for h in lab.hops[:hops]) + ']\n\n[default]\naction = '
            '"chain:out"\n')

    write(3)
    pid = start_daemon(sk, pol)
    go = tmp_path / "go"
    ready = tmp_path / "ready"
    waiter = tmp_path / "waiter.py"
    waiter.write_text(WAITER)
    m = f"reload-{os.urandom(4).hex()}"
    bg = sk.spawn([sys.executable, str(waiter), lab.far_ip, str(lab.http_port),
                   f"/small.bin?m={m}", str(ready), str(go)], preload=True)
    lablib.wait_until(ready.exists, 30, "the first two connects")
    assert lane_lines(sk) == 1, sk.daemon_log()
    before = lab.hop_connects()
    write(1)
    os.kill(pid, signal.SIGHUP)
    lablib.wait_until(lambda: "policy reloaded" in sk.daemon_log(40000), 10,
                      "the reload's log line")
    go.touch()
    out = bg.wait(60)
    assert out.returncode == 0, out
    deltas = lab.wait_hop_connects(before, [1, 0, 0])
    assert deltas[0] == 1 and deltas[1] == 0 and deltas[2] == 0, deltas
    assert lane_lines(sk) == 1, sk.daemon_log()
    assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip] * 3


WAITER = r'''
import os, socket, sys, time
host, port, path, ready, go = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
def fetch():
    s = socket.create_connection((host, port), timeout=20)
    s.sendall(f"GET {path} HTTP/1.0\r\nHost: far\r\n\r\n".encode())
    while s.recv(65536):
        pass
    s.close()
fetch(); fetch()
open(ready, "w").close()
deadline = time.time() + 60
while not os.path.exists(go) and time.time() < deadline:
    time.sleep(0.05)
fetch()
'''


@pytest.mark.parametrize("scheme", ["socks4", "socks5"])
@pytest.mark.parametrize("blocking", [True, False], ids=["blocking", "nonblocking"])
def test_repeat_connects_finish_prebuilt_tunnels_in_the_lane(
        lab: lablib.Lab, sk, probe: Path, scheme: str, blocking: bool) -> None:
    """--prebuilt 4 on a 3-hop chain: the first connect starts the pool, whose
    tunnels wait in the lane; the next ones, a pause apart (the pool is full again),
    are finished by the lane with hop 3's request alone and the tunnel's socket put
    in the program's socket's place (SWAP), with the program's options and flags.
    Hop 3 is asked for the far host once per connect, and the far host serves each."""
    m = f"lanepool-{scheme}-{os.urandom(4).hex()}"
    before = lab.hop_connects()
    via = [h.url.replace("socks4://", f"{scheme}://") for h in lab.hops[:3]]
    res = sk.run([sys.executable, str(probe), lab.far_ip, str(lab.http_port),
                  f"/small.bin?m={m}", "4", "blocking" if blocking else "nonblocking",
                  "0.5"], via=via, opts=["-v", "--prebuilt", "4"], timeout=120)
    assert res.returncode == 0, sk.describe(res)
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert len(report["conns"]) == 4, report
    for conn in report["conns"]:
        check_socket(lab, conn, kernel_direct=True)
    assert report["fds_after"] == report["fds_before"], report
    assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip] * 4
    far = f"{lab.far_ip}.{lab.http_port}"
    lablib.wait_until(lambda: lab.hop_targets_since(before)[2].count(far) == 4, 10,
                      "hop 3 to log four requests for the far host")
    log = sk.daemon_log(40000)
    assert log.count("handed off by the lane (pre-built)") == 3, log
    assert log.count("handed off by the lane") == 3, log
    # the pool's tunnels were built by the lane too: the first four at least (the
    # replacements of those taken may be cut short by the session's end)
    assert sk.control({"op": "status"})["lane"]["tunnels"] >= 4, log


@pytest.mark.parametrize("path", ["lane", "engine"])
def test_a_refusal_on_a_pre_built_tunnel_is_the_programs_at_once(
        lab: lablib.Lab, sk, tmp_path: Path, path: str) -> None:
    """prebuilt = 2, and the far service goes away after the first connect: on a
    pre-built tunnel hop 3 answers the second connect's request with a refusal, which
    is the target's word: the program gets ECONNREFUSED at once, as on any route, and
    the far host sees one attempt, not one per tunnel and fresh chain. The same from
    the lane and from the chain engine (SOCKSIFY_LANE=0). Never a direct connection."""
    listener = lablib.listener_in(lab.far_ns)
    port = listener.getsockname()[1]
    pol = tmp_path / "pol.toml"
    hops = ", ".join(f'"{h}"' for h in sk.hops(3))
    pol.write_text(f'[chains.c3]\nhops = [{hops}]\nprebuilt = 2\n'
                   '[default]\naction = "chain:c3"\n')
    if path == "engine":
        sk.env["SOCKSIFY_LANE"] = "0"
    start_daemon(sk, pol)
    client = tmp_path / "client.py"
    client.write_text(CLIENT)
    server = serve_once(listener)
    refused_before = len(lab.hops[2].failed_lines())
    res = sk.spawn([sys.executable, str(client), lab.far_ip, str(port), "2", "0.5"],
                   preload=True).wait(60)
    server.join(10)
    assert res.returncode == 0, res
    errs = json.loads(res.stdout.strip().splitlines()[-1])
    assert errs == [0, errno.ECONNREFUSED], res
    target = f"{lab.far_ip}.{port}"
    lablib.wait_until(lambda: any(target in ln for ln in
                                  lab.hops[2].failed_lines()[refused_before:]), 10,
                      "hop 3 to log the refused connect")
    time.sleep(0.5)            # and anything after it: none is expected
    tried = [ln for ln in lab.hops[2].failed_lines()[refused_before:] if target in ln]
    assert len(tried) == 1, tried
    log = sk.daemon_log(40000)
    assert "pre-built tunnel failed" not in log, log
    # the lane's words for it, or the engine's (which would have said "pre-built
    # tunnel failed" and tried a fresh chain)
    assert ("CONNECT the target refused (reply 005b)" if path == "lane" else
            f"CONNECT {lab.far_ip}:{port} refused, code 91") in log, log
    status = sk.control({"op": "status"})
    (pool,) = [c["prebuilt"] for c in status["chains"] if c.get("prebuilt")]
    assert (pool["used"], pool["discarded"]) == (1, 0), pool



"""The shim's kept control connections (docs/wire.md, "One connection, many requests"):
one request at a time on each, at most four per process, the process's own after a
fork, not inherited across exec, replaced after a daemon restart -- and never a direct
connection while no daemon answers.

Real programs under `socksify --via`: a Python client that fetches the lab's small
file from the far zone (the far server must see the last hop's address) and reports
which control connections it holds (Unix sockets whose peer is control.sock, by inode).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import textwrap
from pathlib import Path

import pytest

import lab as lablib

pytestmark = pytest.mark.lab

PROBE = textwrap.dedent(r'''
    import hashlib, json, os, socket, sys, threading, time

    def control():
        """Inodes of this process's control connections."""
        out = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                dup = os.dup(int(fd))
            except OSError:
                continue
            try:
                s = socket.socket(fileno=dup)
            except OSError:
                os.close(dup)
                continue
            try:
                peer = s.getpeername() if s.family == socket.AF_UNIX else ""
            except OSError:
                peer = ""
            finally:
                s.close()
            if isinstance(peer, str) and peer.endswith("control.sock"):
                out.append(os.readlink(f"/proc/self/fd/{fd}"))
        return sorted(out)

    def fetch(host, port, marker):
        s = socket.create_connection((host, port), timeout=30)
        s.sendall(f"GET /small.bin?m={marker} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        return hashlib.sha256(data.split(b"\r\n\r\n", 1)[1]).hexdigest()

    mode, host, port, marker = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    if mode == "fork":
        out = {"parent1": fetch(host, port, marker + "-p1"), "parent_ctl": control()}
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            child = {"inherited": control(), "sha": fetch(host, port, marker + "-c")}
            child["ctl"] = control()
            os.write(w, json.dumps(child).encode())
            os._exit(0)
        os.close(w)
        data = b""
        while True:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            data += chunk
        os.waitpid(pid, 0)
        out["child"] = json.loads(data)
        out["parent2"] = fetch(host, port, marker + "-p2")
        out["parent_ctl2"] = control()
        print(json.dumps(out))
    elif mode == "exec":
        fetch(host, port, marker + "-before")
        sys.stdout.write(json.dumps({"before_exec": control()}) + "\n")
        sys.stdout.flush()
        os.execv(sys.executable, [sys.executable, sys.argv[0], "after-exec", host,
                                  str(port), marker])
    elif mode == "after-exec":
        fds = {fd: os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
               if os.path.exists(f"/proc/self/fd/{fd}")}
        out = {"at_start": control(), "fds": fds}
        out["sha"] = fetch(host, port, marker + "-after")
        out["ctl"] = control()
        print(json.dumps(out))
    elif mode == "threads":
        n, each = 8, 10
        results, errors = {}, []
        lock = threading.Lock()
        done = threading.Barrier(n + 1)
        leave = threading.Event()
        def worker(t):
            try:
                for i in range(each):
                    sha = fetch(host, port, f"{marker}-t{t}-{i}")
                    with lock:
                        results[f"t{t}-{i}"] = sha
            except OSError as exc:
                with lock:
                    errors.append(f"t{t}: {exc}")
            done.wait(60)
            leave.wait(60)
        threads = [threading.Thread(target=worker, args=(t,)) for t in range(n)]
        for t in threads:
            t.start()
        done.wait(120)
        held = control()             # all eight threads alive
        leave.set()
        for t in threads:
            t.join(60)
        time.sleep(0.2)
        print(json.dumps({"results": results, "errors": errors, "held": held,
                          "after_join": control()}))
    elif mode == "loop":
        log, stop = sys.argv[5], sys.argv[6]
        deadline = time.monotonic() + 90
        with open(log, "a") as out:
            while time.monotonic() < deadline and not os.path.exists(stop):
                s = socket.socket()
                s.settimeout(5)
                try:
                    s.connect((host, port))
                    rec = {"ok": True}
                except OSError as exc:
                    rec = {"ok": False, "errno": exc.errno}
                finally:
                    s.close()
                rec["ctl"] = control()
                out.write(json.dumps(rec) + "\n")
                out.flush()
                time.sleep(0.2)
''')


@pytest.fixture
def probe(tmp_path: Path) -> Path:
    path = tmp_path / "ctlprobe.py"
    path.write_text(PROBE)
    return path


def _through_chain(lab: lablib.Lab, marker: str, count: int = 1) -> None:
    """Each fetch with this marker reached the far server from the last hop."""
    clients = [r.client for r in lab.http.requests_for(marker)]
    assert clients == [lab.proxy_far_ip] * count, (marker, clients)


def test_fork_child_opens_its_own(lab: lablib.Lab, sk, probe: Path) -> None:
    """A child forked after its parent's connects talks to the daemon on a connection of
    its own (its copy of the parent's is not used: the daemon would see the parent's
    pid and two processes' requests could interleave), and both connect through the
    chain."""
    m = secrets.token_hex(6)
    res = sk.run([sys.executable, str(probe), "fork", lab.far_ip, str(lab.http_port), m],
                 via=sk.hops(1))
    assert res.returncode == 0, sk.describe(res)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["parent1"] == out["parent2"] == out["child"]["sha"] == lab.small_sha256
    for part in ("-p1", "-c", "-p2"):
        _through_chain(lab, m + part)
    parent = out["parent_ctl"]
    assert len(parent) == 1, out
    assert out["child"]["inherited"] == parent, out       # the copy a fork gives
    assert len(out["child"]["ctl"]) == 1 and out["child"]["ctl"] != parent, out
    assert out["parent_ctl2"] == parent, out                # the parent keeps its own


def test_exec_does_not_inherit_it(lab: lablib.Lab, sk, probe: Path) -> None:
    """The kept connection is close-on-exec: the exec'd program starts without it (its
    /proc/self/fd holds no Unix socket), opens its own and connects through the chain."""
    m = secrets.token_hex(6)
    res = sk.run([sys.executable, str(probe), "exec", lab.far_ip, str(lab.http_port), m],
                 via=sk.hops(1))
    assert res.returncode == 0, sk.describe(res)
    lines = [json.loads(ln) for ln in res.stdout.strip().splitlines()]
    assert len(lines[0]["before_exec"]) == 1, lines
    after = lines[-1]
    assert after["at_start"] == [], after
    assert not [t for t in after["fds"].values() if t.startswith("socket:")], after
    assert after["sha"] == lab.small_sha256
    assert len(after["ctl"]) == 1 and after["ctl"] != lines[0]["before_exec"], after
    _through_chain(lab, m + "-before")
    _through_chain(lab, m + "-after")


def test_threads_never_share_one_at_once(lab: lablib.Lab, sk, probe: Path) -> None:
    """Eight threads connecting at once through the chain, ten times each: every
    fetch is whole and carried by the chain (no two requests interleaved on one
    connection), and the program keeps at most four control connections however many
    threads ask (the others use one of their own, closed after the request)."""
    m = secrets.token_hex(6)
    res = sk.run([sys.executable, str(probe), "threads", lab.far_ip, str(lab.http_port),
                  m], via=sk.hops(1), timeout=180)
    assert res.returncode == 0, sk.describe(res)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["errors"] == [], out["errors"]
    assert len(out["results"]) == 80
    assert set(out["results"].values()) == {lab.small_sha256}
    for t in range(8):
        for i in range(10):
            _through_chain(lab, f"{m}-t{t}-{i}")
    assert 1 <= len(out["held"]) <= 4, out["held"]
    assert set(out["after_join"]) <= set(out["held"]), out
    assert "no reply from the daemon" not in res.stderr, res.stderr


def records(path: Path) -> list[dict[str, object]]:
    try:
        return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    except FileNotFoundError:
        return []


def test_daemon_restart_under_a_kept_connection(lab: lablib.Lab, sk, probe: Path,
                                                 tmp_path: Path) -> None:
    """A program connects every 0.2 s on one kept control connection; the daemon is
    killed: its next connects are refused (ECONNREFUSED, never direct: the witness,
    reachable directly from the client zone, sees only the hop), and once a daemon is
    back they are carried again, on a new control connection, without restarting the
    program; the command says the daemon went away and that it reattached."""
    log, stop = tmp_path / "attempts.jsonl", tmp_path / "stop"
    target = (lab.proxy_near_ip, lab.witness.port)
    witness_before = len(lab.witness.accepted)
    bg = sk.spawn([sk.install.socksify, "--via", lab.hops[0].url, "--", sys.executable,
                   str(probe), "loop", target[0], str(target[1]), "-", str(log),
                   str(stop)])
    try:
        lablib.wait_until(lambda: sum(1 for r in records(log) if r["ok"]) >= 3, 30,
                          "three connections through the first daemon")
        pid = sk.daemon_pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        mark = len(records(log))
        lablib.wait_until(lambda: sum(1 for r in records(log)[mark:] if not r["ok"]) >= 3,
                          30, "refused connections while no daemon runs")
        res = sk.socksifyd("start")
        assert res.returncode == 0, sk.describe(res)
        lablib.wait_until(lambda: any(r["ok"] for r in records(log)[mark + 3:]), 30,
                          "connections through the restarted daemon")
        stop.touch()
        done = bg.wait(30)
        assert done.returncode == 0, done.describe()
    finally:
        stop.touch()
    attempts = records(log)
    before = [r for r in attempts[:mark] if r["ok"]]
    kept = before[0]["ctl"]
    assert len(kept) == 1 and all(r["ctl"] == kept for r in before), before
    first_fail = next(i for i, r in enumerate(attempts) if i >= mark and not r["ok"])
    back = next(i for i, r in enumerate(attempts) if i > first_fail and r["ok"])
    gap = attempts[first_fail:back]
    # no daemon: ECONNREFUSED; restarted, until the command re-attached its session:
    # EACCES (unknown session). Never a success, which would have been direct.
    assert gap and all(r["errno"] in (111, 13) for r in gap), gap
    assert gap[0]["errno"] == 111, gap
    assert "went away" in done.stderr and "reattached" in done.stderr, done.stderr
    assert attempts[back]["ctl"] and attempts[back]["ctl"] != kept, attempts[back]
    peers = {addr for addr, _ in lab.witness.accepted[witness_before:]}
    assert peers == {lab.proxy_near_ip}, peers

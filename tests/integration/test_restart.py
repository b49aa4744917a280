"""A daemon that dies while socksified programs run: their connections are refused
meanwhile (never direct), and once a daemon is back they go through the chain again,
without restarting the programs."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest

import lab as lablib

pytestmark = pytest.mark.lab

LOOP = textwrap.dedent("""\
    import json, socket, sys, time
    host, port, log, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    deadline = time.monotonic() + 60
    with open(log, "a") as out:
        while time.monotonic() < deadline:
            try:
                open(stop).close()
                break
            except FileNotFoundError:
                pass
            s = socket.socket()
            s.settimeout(5)
            try:
                s.connect((host, port))
                rec = {"ok": True}
            except OSError as exc:
                rec = {"ok": False, "errno": exc.errno}
            finally:
                s.close()
            out.write(json.dumps(rec) + "\\n")
            out.flush()
            time.sleep(0.2)
    """)


def records(path: Path) -> list[dict[str, object]]:
    try:
        return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    except FileNotFoundError:
        return []


def test_daemon_restart_while_a_program_runs(lab: lablib.Lab, sk, tmp_path: Path) -> None:
    script = tmp_path / "loop.py"
    script.write_text(LOOP)
    log, stop = tmp_path / "attempts.jsonl", tmp_path / "stop"
    target = (lab.proxy_near_ip, lab.witness.port)   # directly reachable: a leak shows
    witness_before = len(lab.witness.accepted)
    bg = sk.spawn([sk.install.socksify, "--via", lab.hops[0].url, "--", sys.executable,
                   str(script), target[0], str(target[1]), str(log), str(stop)])
    try:
        lablib.wait_until(lambda: sum(1 for r in records(log) if r["ok"]) >= 2, 30,
                          "two connections through the first daemon")
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
    first_fail = next(i for i, r in enumerate(attempts) if i >= mark and not r["ok"])
    back = next(i for i, r in enumerate(attempts) if i > first_fail and r["ok"])
    gap = attempts[first_fail:back]
    # While no daemon answered: ECONNREFUSED; after the restart, until the command
    # re-attached its session: EACCES (unknown session). Never a success (it would
    # have been direct) — the witness check below proves none went around.
    assert gap and all(r["errno"] in (111, 13) for r in gap), gap
    assert gap[0]["errno"] == 111, gap
    assert "went away" in done.stderr and "reattached" in done.stderr, done.stderr
    # every connection the witness saw came from a hop, never from the client zone
    peers = {addr for addr, _ in lab.witness.accepted[witness_before:]}
    assert peers == {lab.proxy_near_ip}, peers

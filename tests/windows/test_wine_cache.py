"""The DLL keeps the daemon's DIRECT answers as the Linux shim does (docs/wire.md
"Caching"): a Windows program under Wine making N direct UDP sends or TCP connects to
an address a direct rule lets out asks the daemon once, not N times (counted in the
daemon's log: one decision line per question); after `socksifyd reload` with a policy
that now blocks that address, the next send or connect is asked again and refused
(the generation changed), and nothing more reaches the witness."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

import lab as lablib

from . import winelab
from .conftest import Win

pytestmark = pytest.mark.lab

WSAEACCES = 10013
WSAECONNREFUSED = 10061
N = 200
DISCARD_PORT = "9"


def policy(ip: str, action: str) -> str:
    return (f'[[rules]]\nname = "cached"\ndest = "{ip}/32"\naction = "{action}"\n\n'
            '[default]\naction = "block"\n')


def decisions(win: Win, target: str) -> list[str]:
    """The daemon's decision lines about target (one per question a shim asked)."""
    text = win.sk.logfile.read_text(errors="replace")
    return [line for line in text.splitlines() if f"-> {target}" in line]


@pytest.mark.parametrize("mode", ["udp", "tcp"])
def test_direct_answers_are_cached_until_reload(lab: lablib.Lab, win: Win,
                                                tmp_path: Path, mode: str) -> None:
    witness = lab.witness
    assert witness is not None
    ip, port = (lab.client_ip, DISCARD_PORT) if mode == "udp" \
        else (lab.proxy_near_ip, str(witness.port))
    target = f"{ip}:{port}"
    conf = tmp_path / "policy.toml"
    conf.write_text(policy(ip, "direct"))
    res = win.sk.socksifyd("start", "-c", str(conf))
    assert res.returncode == 0, win.sk.describe(res)
    lablib.wait_until(lambda: (win.sk.runtime_dir / "control.tcp").exists(), 10,
                      "the daemon's control.tcp")
    seen_before = witness.count()
    ready, ready_win = win.go_file()
    go, go_win = win.go_file()
    proc = win.spawn("repeat", [ip, port, str(N), mode, ready_win, go_win])
    try:
        lablib.wait_until(lambda: ready.exists() or proc.proc.poll() is not None, 120,
                          "the program's direct batch")
        assert ready.exists(), proc.result().describe()
        asked = decisions(win, target)
        assert len(asked) == 1, f"{len(asked)} questions for {N} calls:\n" + "\n".join(
            asked[:5]) + "\n" + proc.result().describe()
        if mode == "tcp":
            lablib.wait_until(lambda: witness.count() - seen_before >= N, 10,
                              "the witness's connections")
        conf.write_text(policy(ip, "block"))
        res = win.sk.socksifyd("reload")
        assert res.returncode == 0, win.sk.describe(res)
        go.touch()
        out = proc.wait(60)
    finally:
        go.touch()
        proc.kill()
    print(out.stdout)   # BATCH N FIRST REST (microseconds): the cost per call
    assert out.result_line()[:3] == ["RESULT", "fail", str(WSAEACCES)], out.describe()
    asked = decisions(win, target)
    assert len(asked) == 2 and not asked[1].rstrip().endswith("direct"), "\n".join(asked)
    if mode == "tcp":
        time.sleep(0.5)
        assert witness.count() - seen_before == N, "a blocked connect went out"


def test_killed_daemon_voids_the_cache(lab: lablib.Lab, win: Win, tmp_path: Path) -> None:
    """The daemon is killed (SIGKILL: no chance to write a zero generation, its
    control file stays): the program's next datagram to the cached address is not
    sent directly but asked, and refused (no daemon answers), once the pid is gone."""
    ip, port = lab.client_ip, DISCARD_PORT
    conf = tmp_path / "policy.toml"
    conf.write_text(policy(ip, "direct"))
    res = win.sk.socksifyd("start", "-c", str(conf))
    assert res.returncode == 0, win.sk.describe(res)
    lablib.wait_until(lambda: (win.sk.runtime_dir / "control.tcp").exists(), 10,
                      "the daemon's control.tcp")
    ready, ready_win = win.go_file()
    go, go_win = win.go_file()
    proc = win.spawn("repeat", [ip, port, "5", "udp", ready_win, go_win])
    try:
        lablib.wait_until(lambda: ready.exists() or proc.proc.poll() is not None, 120,
                          "the program's direct batch")
        assert ready.exists(), proc.result().describe()
        pid = int(win.sk.pidfile.read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        lablib.wait_until(lambda: not Path(f"/proc/{pid}").exists(), 10, "the daemon's end")
        assert (win.sk.runtime_dir / "control.tcp").exists()  # left behind
        time.sleep(0.3)   # past the DLL's 100 ms belief in a live pid
        go.touch()
        out = proc.wait(60)
    finally:
        go.touch()
        proc.kill()
    assert out.result_line()[:3] == ["RESULT", "fail", str(WSAECONNREFUSED)], \
        out.describe()

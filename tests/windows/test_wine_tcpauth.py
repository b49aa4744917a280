"""The DLL's side of the TCP control handshake, under Wine: its code (BCrypt HMAC and
RNG) against the shared vectors (tests/c/test_tcpauth.c), and a Windows program whose
daemon was killed with -9 while another real user took over the port its stale
control.tcp names (tests/integration/squatter.py, which would answer DIRECT): the
program's connect fails with WSAECONNREFUSED, the near witness it asked for sees
nothing, and the squatter receives only hellos (magic and a random nonce), never the
key nor a request. The Windows `socksifyd status` and `socksify` (python.exe) refuse
it too, saying why."""

from __future__ import annotations

import pwd
import re
import subprocess
import sys
from pathlib import Path

import pytest

import lab as lablib
from conftest import Background

from . import winelab
from .conftest import Native, Win

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from test_tcpcontrol_squat import kill_9, other_user, received, squat  # noqa: E402,F401

pytestmark = pytest.mark.lab

WSAECONNREFUSED = 10061
VECTORS = winelab.REPO / "tests" / "vectors" / "tcpauth.txt"


def test_dll_handshake_vectors(wine: winelab.Wine, wine_build: Path) -> None:
    exe = wine_build / "test_tcpauth.exe"
    repo = winelab.REPO
    r = subprocess.run([winelab.MINGW, "-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror",
                        f"-I{repo / 'shim/windows'}", str(repo / "tests/c/test_tcpauth.c"),
                        str(repo / "shim/windows/tcpauth.c"), "-lbcrypt", "-o", str(exe)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    res = wine.spawn([wine.wine64, str(exe), winelab.winpath(VECTORS)]).wait(120)
    print(res.stdout)
    assert res.returncode == 0, res.describe()
    match = re.search(r"^(\d+) passed, 0 failed", res.stdout, re.M)
    cases = sum(1 for line in VECTORS.read_text().splitlines()
                if line.split()[:1] in (["proof"], ["bad-answer"]))
    assert match and int(match[1]) == cases + 1, res.describe()   # + the RNG check


def test_dll_refuses_a_squatter_on_a_stale_port(lab: lablib.Lab, win: Win,
                                                other_user: pwd.struct_passwd) -> None:
    from socksify import controlfile
    assert lab.witness is not None
    win.start_daemon()
    stale = win.sk.runtime_dir / "control.tcp"
    port, key = controlfile.parse_line(stale.read_text())
    go, go_win = win.go_file()
    before = lab.witness.count()
    proc = win.spawn("blocking", [lab.proxy_near_ip, str(lab.witness.port), "squat",
                                  go_win], via=win.sk.hops(1))
    bg: Background | None = None
    try:
        lablib.wait_until(lambda: win.sk.control({"op": "status"}).get("sessions"), 60,
                          "the launcher's session")
        kill_9(win.sk)
        assert stale.exists()
        bg = squat(win.sk, other_user, port)
        go.touch()
        res = proc.wait(120)
        status = win.python("service", ["status"]).wait(120)
        launch = win.run("blocking", [lab.proxy_near_ip, str(lab.witness.port), "squat2"],
                         via=win.sk.hops(1))
    finally:
        proc.kill()
        if bg is not None:
            bg.kill()
    got = received(bg)
    assert res.result_line()[:3] == ["RESULT", "fail", str(WSAECONNREFUSED)], \
        f"{res.describe()}\nthe squatter got {got}"
    assert "did not prove it is the socksify daemon" in res.stderr, res.describe()
    assert lab.witness.count() == before, "a connection went around the dead daemon"
    assert status.returncode == 3 and "not running" in status.stdout \
        and "not this user's socksify daemon" in status.stderr, status.describe()
    assert launch.returncode == 1 and "not this user's socksify daemon" in launch.stderr \
        and "RESULT" not in launch.stdout, launch.describe()
    assert lab.witness.count() == before
    print(f"the squatter received: {[g.hex() for g in got]}")
    assert got and all(len(g) == 20 and g[:4] == b"SKTC" for g in got), got
    assert all(key not in g and key.hex().encode() not in g for g in got)


def test_native_control_file_is_owner_only(native: Native) -> None:
    """The Windows daemon (python.exe under Wine) gives control.tcp and its runtime
    directory an ACL for SYSTEM, Administrators and the user only: no Everyone,
    Users or Authenticated Users entry (Wine keeps ACLs as Unix mode bits, so what
    this shows is Wine's rendering of them)."""
    res = native.socksifyd("start")
    assert res.returncode == 0, native.describe(res)
    path = native.runtime_dir / "control.tcp"
    code = ("import sys; sys.path.insert(0, {daemon!r}); from pathlib import Path; "
            "from socksify import winacl; "
            "[print(winacl.describe(Path(p))) for p in sys.argv[1:]]").format(
                daemon=winelab.winpath(winelab.REPO / "daemon"))
    shown = native.wine.spawn([native.wine.wine64, str(winelab.python_dir() / "python.exe"),
                               "-c", code, winelab.winpath(path),
                               winelab.winpath(native.runtime_dir)]).wait(120)
    print(shown.stdout)
    lines = shown.stdout.split()
    assert shown.returncode == 0 and len(lines) == 2, shown.describe()
    for sddl in lines:
        aces = re.findall(r"\(A;[^;]*;[^;]*;;;([^)]+)\)", sddl)
        owner = sddl.split("D:")[0].removeprefix("O:")
        assert aces and set(aces) <= {"SY", "BA", owner}, sddl

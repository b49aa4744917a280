"""The DNS call hooks without the lab: getaddrinfo_a() under the shim keeps glibc's
contract (tests/programs/gaicheck.c prints what it prints without the shim), asks
the daemon about a name (a control socket that holds its answer back sees the RESOLVE
and keeps the request in progress), and the res_* calls fail closed when there is no
daemon (tests/programs/dnscalls.c)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import skip_or_fail

from socksify import shimlib

PROGRAMS = Path(__file__).resolve().parents[1] / "programs"
NO_RECOVERY = 3
ECONNREFUSED = 111
EAI_AGAIN, EAI_NOTCANCELED, EAI_ALLDONE = -3, -102, -103


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.fail("no C compiler (cc) to build the test programs")
    out = tmp_path_factory.mktemp("dnsprogs")
    progs = {}
    for name in ("gaicheck", "dnscalls"):
        exe = out / name
        subprocess.run([cc, "-O1", "-Wall", "-pthread", "-o", str(exe),
                        str(PROGRAMS / f"{name}.c"), "-lresolv", "-lanl"], check=True,
                       timeout=120)
        progs[name] = exe
    return progs


@pytest.fixture()
def runtime_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="skdns-"))   # short: sun_path is 108 bytes
    os.chmod(d, 0o700)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def shim_env(runtime_dir: Path, **extra: str) -> dict[str, str]:
    shim = shimlib.library_path()
    assert shim.is_file(), "install socksify first (pip install .)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKSIFY_")}
    return {**env, "LD_PRELOAD": str(shim), "SOCKSIFY_RUNTIME_DIR": str(runtime_dir),
            **extra}


# Every program runs in a network namespace of its own with nothing but a loopback that
# is down (unshare -rn: a user namespace, so no root needed): a query that got out by
# mistake would reach no resolver at all, the machine's included.
ISOLATE = ["unshare", "-rn"]


@pytest.fixture(scope="module", autouse=True)
def isolation() -> None:
    if shutil.which("unshare") is None or subprocess.run(
            [*ISOLATE, "true"], capture_output=True, timeout=30).returncode != 0:
        skip_or_fail("cannot make a network namespace (unshare -rn: a user namespace, no "
                     "root needed) to run these in")


def run(argv: list[str], env: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ISOLATE, *argv], env=env, capture_output=True, text=True,
                          timeout=timeout)


# What gaicheck rounds prints under glibc 2.36's own getaddrinfo_a (read by hand from
# runs without the shim; that glibc's own implementation crashed with SIGSEGV in
# __gai_notify in 11 of 60 runs of this program, so it is not run here).
GLIBC_ROUNDS = "".join(f"round {n} done 200 failed 0 signal {n}\n" for n in range(1, 6)) \
    + "wait ret 0 status 0 suspend-after -103 bad-mode -11\n"


def test_getaddrinfo_a_contract_is_glibcs(built: dict[str, Path], runtime_dir: Path) -> None:
    """Numeric names and localhost need no daemon: 5 batches of 200 with SIGEV_SIGNAL
    notifications, GAI_WAIT, gai_suspend() on a finished request (EAI_ALLDONE), a bad
    mode (EAI_SYSTEM): glibc's answers, three times over."""
    for _ in range(3):
        res = run([str(built["gaicheck"]), "rounds"], env=shim_env(runtime_dir))
        assert res.returncode == 0, res.stdout + res.stderr
        assert res.stdout == GLIBC_ROUNDS


def test_getaddrinfo_a_asks_the_daemon(built: dict[str, Path], runtime_dir: Path) -> None:
    """A control socket that reads the request and never answers: the request stays in
    progress (gai_suspend() times out, gai_cancel() cannot cancel it), the socket saw
    the name, and without an answer the lookup fails (EAI_AGAIN), never local."""
    name = f"held-{os.urandom(3).hex()}.example"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(runtime_dir / "control.sock"))
    listener.listen(8)
    received: list[bytes] = []
    held: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            held.append(conn)
            conn.settimeout(5)
            try:
                received.append(conn.recv(4096))
            except OSError:
                pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        res = run([str(built["gaicheck"]), "pending", name],
                  env=shim_env(runtime_dir, SOCKSIFY_TIMEOUT="2"))
    finally:
        listener.shutdown(socket.SHUT_RDWR)   # wakes serve()'s accept(); close() would not
        listener.close()
        for c in held:
            c.close()
        t.join(5)
    lines = dict(line.split() for line in res.stdout.splitlines())
    assert lines == {"ret": "0", "inprogress": "1", "suspend-timeout": str(EAI_AGAIN),
                     "cancel": str(EAI_NOTCANCELED), "suspend": "0",
                     "status": str(EAI_AGAIN)}, res.stdout + res.stderr
    assert any(name.encode() in r for r in received), received


@pytest.mark.parametrize("call,args", [("query", ["a.example"]), ("search", ["b"]),
                                       ("querydomain", ["c", "example"]),
                                       ("send", ["d.example"]),
                                       ("nquery", ["127.0.0.1"])])
def test_res_calls_fail_closed_without_a_daemon(built: dict[str, Path], runtime_dir: Path,
                                                call: str, args: list[str]) -> None:
    """No daemon: every res_* call is refused (numeric names too: res_query always
    queries DNS), with the reason on stderr."""
    res = run([str(built["dnscalls"]), call, *args], env=shim_env(runtime_dir))
    assert res.returncode == 0, res.stdout + res.stderr
    words = next(ln.split() for ln in res.stdout.splitlines() if ln.startswith(call))
    assert words[1:] == ["rc", "-1", "h_errno", str(NO_RECOVERY), "errno",
                         str(ECONNREFUSED)], res.stdout
    assert "refused: the socksify daemon did not answer" in res.stderr, res.stderr

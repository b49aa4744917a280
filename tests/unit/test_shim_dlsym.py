"""The shim's dlsym()/dlvsym() hooks (shim/linux/dlsym.c), on real programs: connect()
fetched past the shim -- from a handle of libc.so.6, or by libc's version name -- is the
shim's hook again, while another LD_PRELOAD library that wraps connect() through
RTLD_NEXT keeps working in either order, and programs run with LD_BIND_NOW. No daemon:
with SOCKSIFY_PROXY_LOOPBACK=1 every connect the shim sees fails closed
(ECONNREFUSED), so "OK" means a connection that went around the shim."""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from socksify import shimlib

PROGRAMS = Path(__file__).resolve().parents[1] / "programs"
WAYS = ("plain", "dlsym-default", "dlsym-next", "dlsym-libc", "dlvsym-next",
        "dlvsym-default", "dlvsym-libc", "libc-dlsym-libc")
# Through a handle of libc, or by version: what a wrapper after the shim still gets
PAST = ("dlsym-libc", "dlvsym-next", "dlvsym-default", "dlvsym-libc", "libc-dlsym-libc")

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64",
                                reason="the dlsym/dlvsym hooks are x86-64 only")


@pytest.fixture(scope="module")
def shim() -> str:
    path = shimlib.library_path()
    assert path.is_file(), f"{path} is missing: run `pip install .` first"
    return str(path)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if shutil.which("cc") is None:
        pytest.fail("no C compiler (cc) to build the dlsym test programs")
    out = tmp_path_factory.mktemp("dlsym")
    exe, lib = out / "dlbypass", out / "wrapconnect.so"
    subprocess.run(["cc", "-O1", "-Wall", "-o", str(exe), str(PROGRAMS / "dlbypass.c")],
                   check=True, timeout=120)
    subprocess.run(["cc", "-O1", "-Wall", "-shared", "-fPIC", "-o", str(lib),
                    str(PROGRAMS / "wrapconnect.c")], check=True, timeout=120)
    return {"dlbypass": exe, "wrap": lib}


@pytest.fixture
def listener() -> Iterator[int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


def run(argv: list[str], preload: str | None, **extra: str
        ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SOCKSIFY_") and k not in ("LD_PRELOAD", "LD_BIND_NOW")}
    env.update(SOCKSIFY_SOCKET="/nonexistent/socksify-test/control.sock", **extra)
    if preload is not None:
        env["LD_PRELOAD"] = preload
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


def ways(res: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert res.returncode == 0, res
    return dict(line.split() for line in res.stdout.splitlines())


def test_control_every_way_connects_without_the_shim(built: dict[str, Path],
                                                     listener: int) -> None:
    res = run([str(built["dlbypass"]), "127.0.0.1", str(listener)], None)
    assert ways(res) == {w: "OK" for w in WAYS}


@pytest.mark.parametrize("bind_now", ["", "1"])
def test_every_way_reaches_the_hook(shim: str, built: dict[str, Path], listener: int,
                                    bind_now: str) -> None:
    extra = {"LD_BIND_NOW": bind_now} if bind_now else {}
    res = run([str(built["dlbypass"]), "127.0.0.1", str(listener)], shim,
              SOCKSIFY_PROXY_LOOPBACK="1", **extra)
    assert ways(res) == {w: "ECONNREFUSED" for w in WAYS}, res.stderr


@pytest.mark.parametrize("order", ["wrapper first", "shim first"])
def test_a_second_preload_wrapper_keeps_working(shim: str, built: dict[str, Path],
                                                listener: int, order: str) -> None:
    """Loopback is direct: every way connects, through the wrapper and the shim, and
    nothing calls itself forever."""
    libs = [str(built["wrap"]), shim] if order == "wrapper first" else [shim,
                                                                          str(built["wrap"])]
    res = run([str(built["dlbypass"]), "127.0.0.1", str(listener)], " ".join(libs),
              LD_BIND_NOW="1")
    assert ways(res) == {w: "OK" for w in WAYS}, res.stderr
    calls = int(res.stderr.split("wrapconnect calls ")[1].split()[0])
    assert calls >= 3, res.stderr       # plain, dlsym-default, dlsym-next at least


def test_with_a_wrapper_after_the_shim(shim: str, built: dict[str, Path],
                                       listener: int) -> None:
    """A wrapper preloaded after the shim is where the shim's connect() leads, so libc's
    own connect() is no longer the shim's next: lookups past both still reach libc (the
    limit README "Limits today" states); a wrapper first is covered."""
    res = run([str(built["dlbypass"]), "127.0.0.1", str(listener)],
              f"{shim} {built['wrap']}", SOCKSIFY_PROXY_LOOPBACK="1")
    assert ways(res) == {w: "OK" if w in PAST else "ECONNREFUSED" for w in WAYS}
    res = run([str(built["dlbypass"]), "127.0.0.1", str(listener)],
              f"{built['wrap']} {shim}", SOCKSIFY_PROXY_LOOPBACK="1")
    assert ways(res) == {w: "ECONNREFUSED" for w in WAYS}, res.stderr


def test_programs_run_with_bind_now(shim: str, tmp_path: Path) -> None:
    """Python (ctypes, ssl, sqlite3: many dlopen/dlsym calls) and curl load and run."""
    code = ("import ctypes, ssl, sqlite3, json, hashlib, decimal; "
            "libc = ctypes.CDLL('libc.so.6'); assert libc.getpid() == __import__('os')"
            ".getpid(); ctypes.CDLL(None).connect; print('python ok')")
    for bind_now in ("", "1"):
        res = run([sys.executable, "-c", code], shim, LD_BIND_NOW=bind_now)
        assert res.returncode == 0 and "python ok" in res.stdout, res
        curl = shutil.which("curl")
        if curl is None:
            continue
        f = tmp_path / "page.txt"
        f.write_text("curl ok\n")
        res = run([curl, "-sS", f"file://{f}"], shim, LD_BIND_NOW=bind_now)
        assert res.returncode == 0 and res.stdout == "curl ok\n", res

"""Ways around the shim without raw system calls, in the lab: a child started through
execveat() with an empty environment, and connect() fetched past the shim with
dlsym(dlopen("libc.so.6"), …) or dlvsym(…, "GLIBC_2.2.5"). The near witness is directly
reachable from the client zone; each connection must reach it through the chain (from
the hop's address), never from the client's."""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

import pytest

import lab as lablib
from conftest import skip_or_fail

pytestmark = pytest.mark.lab

PROGRAMS = Path(__file__).resolve().parent.parent / "programs"


def build(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        skip_or_fail(f"no C compiler (cc) to build tests/programs/{name}.c")
    out = tmp_path_factory.mktemp(name)
    out.chmod(0o755)
    exe = out / name
    r = subprocess.run([cc, "-O1", "-Wall", "-o", str(exe), str(PROGRAMS / f"{name}.c")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return exe


@pytest.fixture(scope="module")
def execveat_prog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory, "execveat")


@pytest.fixture(scope="module")
def dlbypass_prog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory, "dlbypass")


@pytest.mark.parametrize("mode", ["abs", "rel", "empty"])
def test_execveat_child_with_empty_environment_stays_socksified(
        lab: lablib.Lab, sk, execveat_prog: Path, mode: str) -> None:
    before = list(lab.witness.accepted)
    res = sk.run([str(execveat_prog), mode, str(execveat_prog), "connect",
                  lab.proxy_near_ip, str(lab.witness.port)], via=sk.hops(1))
    assert res.returncode == 0, sk.describe(res)
    assert "preload yes" in res.stdout and "connect OK" in res.stdout, sk.describe(res)
    lablib.wait_until(lambda: len(lab.witness.accepted) > len(before), 10,
                      "the witness connection")
    new = lab.witness.accepted[len(before):]
    assert [a for a, _ in new] == [lab.proxy_near_ip], new   # via the hop, not direct


@pytest.mark.skipif(platform.machine() != "x86_64",
                    reason="the dlsym/dlvsym hooks are x86-64 only")
def test_connect_fetched_past_the_shim_goes_through_the_chain(
        lab: lablib.Lab, sk, dlbypass_prog: Path) -> None:
    """connect() from dlsym/dlvsym with RTLD_DEFAULT, RTLD_NEXT and a handle of libc,
    by name and by libc's version name: every one reaches the witness through the
    hop."""
    before = list(lab.witness.accepted)
    res = sk.run([str(dlbypass_prog), lab.proxy_near_ip, str(lab.witness.port)],
                 via=sk.hops(1))
    got = dict(line.split() for line in res.stdout.splitlines() if len(line.split()) == 2)
    assert len(got) == 8 and set(got.values()) == {"OK"}, sk.describe(res)
    lablib.wait_until(lambda: len(lab.witness.accepted) >= len(before) + 8, 10,
                      "8 witness connections")
    new = lab.witness.accepted[len(before):]
    assert [a for a, _ in new] == [lab.proxy_near_ip] * 8, new   # via the hop

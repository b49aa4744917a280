"""execveat() in the lab: a child started through it with an empty environment keeps the
shim, so its connection to the near witness (directly reachable from the client zone)
goes through the chain and shows there with the hop's address, never the client's."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import lab as lablib
from conftest import skip_or_fail

pytestmark = pytest.mark.lab

PROGRAM = Path(__file__).resolve().parent.parent / "programs" / "execveat.c"


@pytest.fixture(scope="module")
def execveat_prog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        skip_or_fail("no C compiler (cc) to build tests/programs/execveat.c")
    out = tmp_path_factory.mktemp("execveat")
    out.chmod(0o755)
    exe = out / "execveat"
    r = subprocess.run([cc, "-O1", "-Wall", "-o", str(exe), str(PROGRAM)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return exe


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

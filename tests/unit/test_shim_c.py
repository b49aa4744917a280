"""Compile and run the C wire tests (tests/c/test_wire.c) on the shared vectors."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors" / "control.txt"
# Cases test_wire.c runs besides the vector lines: its loopback table (10), its name
# table (16) and its API edge cases (13). Keep in step with run_loopback(), run_names()
# and run_api() there.
LOOPBACK_CASES = 10
NAME_CASES = 16
API_CASES = 13
# Every kind of vector line; each must be present, and each line of it must pass.
KINDS = ("request", "resolve", "reply", "peer-reply", "bad-reply")


def vector_lines(kind: str | None = None) -> int:
    return sum(1 for line in VECTORS.read_text().splitlines()
               if line.strip() and not line.startswith("#")
               and (kind is None or line.split()[0] == kind))


def test_c_wire_vectors(tmp_path: Path) -> None:
    cc = os.environ.get("CC", "cc").split()
    if shutil.which(cc[0]) is None:
        pytest.fail(f"no C compiler ({cc[0]}) to build tests/c/test_wire.c")
    exe = tmp_path / "test_wire"
    shim = ROOT / "shim"
    subprocess.run([*cc, "-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-D_GNU_SOURCE",
                    f"-I{shim}", f"-I{shim / 'common'}", str(ROOT / "tests/c/test_wire.c"),
                    *sorted(str(p) for p in (shim / "common").glob("*.c")), "-o", str(exe)],
                   check=True)
    run = subprocess.run([str(exe), str(VECTORS)], capture_output=True, text=True)
    print(run.stdout)
    assert run.returncode == 0, run.stdout + run.stderr
    last = run.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"(\d+) passed, (\d+) failed", last)
    assert match, last
    assert int(match[2]) == 0
    assert vector_lines() >= 20
    assert int(match[1]) == vector_lines() + LOOPBACK_CASES + NAME_CASES + API_CASES
    oks = [line.split()[1] for line in run.stdout.splitlines() if line.startswith("ok ")]
    for kind in KINDS:
        assert vector_lines(kind) > 0, f"no {kind} vectors"
        assert oks.count(kind) == vector_lines(kind), kind
    assert oks.count("loopback") == LOOPBACK_CASES and oks.count("api") == API_CASES
    assert oks.count("name") == NAME_CASES

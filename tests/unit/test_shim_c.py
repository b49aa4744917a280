"""Compile and run the C wire tests (tests/c/test_wire.c) on the shared vectors, the
environment-merging tests of the exec hooks (tests/c/test_env.c), and the socket-kind
and destination tests of the send and connect hooks (tests/c/test_kinds.c)."""

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
# table (16) and its API edge cases (15). Keep in step with run_loopback(), run_names()
# and run_api() there.
LOOPBACK_CASES = 10
NAME_CASES = 16
API_CASES = 15
# Every kind of vector line; each must be present, and each line of it must pass.
KINDS = ("request", "resolve", "reply", "peer-reply", "bad-reply", "name-reply",
         "bad-name-reply")
# Cases of test_env.c: its LD_PRELOAD list table (8), its merge table (11) and its edge
# cases (5). Keep in step with run_preload_has(), run_merge() and run_limits() there.
ENV_CASES = {"preload": 8, "merge": 11, "limits": 5}


def vector_lines(kind: str | None = None) -> int:
    return sum(1 for line in VECTORS.read_text().splitlines()
               if line.strip() and not line.startswith("#")
               and (kind is None or line.split()[0] == kind))


def run_c_test(tmp_path: Path, name: str, *args: str,
               linux: tuple[str, ...] = ()) -> tuple[int, str]:
    """Build tests/c/NAME.c with shim/common (and the named shim/linux files) and run
    it: (passed count, its output)."""
    cc = os.environ.get("CC", "cc").split()
    if shutil.which(cc[0]) is None:
        pytest.fail(f"no C compiler ({cc[0]}) to build tests/c/{name}.c")
    exe = tmp_path / name
    shim = ROOT / "shim"
    subprocess.run([*cc, "-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-D_GNU_SOURCE",
                    f"-I{shim / 'common'}", f"-I{shim / 'linux'}",
                    str(ROOT / f"tests/c/{name}.c"),
                    *sorted(str(p) for p in (shim / "common").glob("*.c")),
                    *(str(shim / "linux" / f) for f in linux), "-o", str(exe)],
                   check=True)
    run = subprocess.run([str(exe), *args], capture_output=True, text=True)
    print(run.stdout)
    assert run.returncode == 0, run.stdout + run.stderr
    last = run.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"(\d+) passed, (\d+) failed", last)
    assert match, last
    assert int(match[2]) == 0
    return int(match[1]), run.stdout


def test_c_wire_vectors(tmp_path: Path) -> None:
    passed, stdout = run_c_test(tmp_path, "test_wire", str(VECTORS))
    assert vector_lines() >= 20
    assert passed == vector_lines() + LOOPBACK_CASES + NAME_CASES + API_CASES
    oks = [line.split()[1] for line in stdout.splitlines() if line.startswith("ok ")]
    for kind in KINDS:
        assert vector_lines(kind) > 0, f"no {kind} vectors"
        assert oks.count(kind) == vector_lines(kind), kind
    assert oks.count("loopback") == LOOPBACK_CASES and oks.count("api") == API_CASES
    assert oks.count("name") == NAME_CASES


def test_c_env_merge(tmp_path: Path) -> None:
    passed, stdout = run_c_test(tmp_path, "test_env")
    assert passed == sum(ENV_CASES.values())
    oks = [line.split()[1] for line in stdout.splitlines() if line.startswith("ok ")]
    for kind, count in ENV_CASES.items():
        assert oks.count(kind) == count, kind


DATAGRAM_VECTORS = ROOT / "tests" / "vectors" / "datagram.txt"
DATAGRAM_KINDS = ("carry", "envelope", "bad-envelope")
DATAGRAM_API_CASES = 6  # run_api() in tests/c/test_datagram.c


def test_c_datagram_vectors(tmp_path: Path) -> None:
    passed, stdout = run_c_test(tmp_path, "test_datagram", str(DATAGRAM_VECTORS))
    lines = [line.split()[0] for line in DATAGRAM_VECTORS.read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert passed == len(lines) + DATAGRAM_API_CASES
    oks = [line.split()[1] for line in stdout.splitlines() if line.startswith("ok ")]
    for kind in DATAGRAM_KINDS:
        assert lines.count(kind) > 0, f"no {kind} vectors"
        assert oks.count(kind) == lines.count(kind), kind
    assert oks.count("api") == DATAGRAM_API_CASES


WRAP_VECTORS = ROOT / "tests" / "vectors" / "wrap.txt"
WRAP_KINDS = ("wrap-request", "wrap", "bad-wrap", "match")
WRAP_SHIFT_CASES = 8  # run_shift() in tests/c/test_wrap.c


def test_c_wrap_vectors_and_shift(tmp_path: Path) -> None:
    passed, stdout = run_c_test(tmp_path, "test_wrap", str(WRAP_VECTORS),
                                linux=("wrapshift.c",))
    lines = [line.split()[0] for line in WRAP_VECTORS.read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert passed == len(lines) + WRAP_SHIFT_CASES
    oks = [line.split()[1] for line in stdout.splitlines() if line.startswith("ok ")]
    for kind in WRAP_KINDS:
        assert lines.count(kind) > 0, f"no {kind} vectors"
        assert oks.count(kind) == lines.count(kind), kind
    assert oks.count("shift") == WRAP_SHIFT_CASES


# Cases of test_kinds.c: its socket-kind table (16) and its destination table (15).
# Keep in step with run_kinds() and run_dests() there.
KINDS_CASES = {"kind": 16, "dest": 15}


def test_c_socket_kinds_and_destinations(tmp_path: Path) -> None:
    passed, stdout = run_c_test(tmp_path, "test_kinds")
    assert passed == sum(KINDS_CASES.values())
    oks = [line.split()[1] for line in stdout.splitlines() if line.startswith("ok ")]
    for kind, count in KINDS_CASES.items():
        assert oks.count(kind) == count, kind


# Cases of test_copies.c: the carried table's (21) and the noted peers' (4).
COPIES_CASES = {"dup": 21, "peer": 4}


def test_c_tables_follow_copies(tmp_path: Path) -> None:
    """A copy of a carried socket (dup, dup2, dup3, fcntl F_DUPFD) is carried under its
    new number, and a noted peer follows its socket; dup2() onto a descriptor drops
    what the shim kept of the socket it closed."""
    passed, stdout = run_c_test(tmp_path, "test_copies",
                                linux=("fdcopy.c", "carried.c", "peers.c"))
    assert passed == sum(COPIES_CASES.values())
    oks = [line.split()[1] for line in stdout.splitlines() if line.startswith("ok ")]
    for kind, count in COPIES_CASES.items():
        assert oks.count(kind) == count, kind

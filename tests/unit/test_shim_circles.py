"""The shim has no circles (scripts/shim_circles.py: modules of shim/common and
shim/linux that depend on each other through #include or a symbol one object uses and
another defines), and the check does find one, of either kind, when there is."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "shim_circles.py"


def check(shim: Path) -> subprocess.CompletedProcess[str]:
    cc = os.environ.get("CC", "cc").split()
    if shutil.which(cc[0]) is None or shutil.which("nm") is None:
        pytest.fail(f"no C compiler ({cc[0]}) or nm to check the shim's circles")
    return subprocess.run([sys.executable, str(SCRIPT), str(shim)], capture_output=True,
                          text=True, timeout=120)


def test_shim_has_no_circles() -> None:
    run = check(ROOT / "shim")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "no circles" in run.stdout


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_call_back_is_a_circle(tmp_path: Path) -> None:
    # init.c calls a resolver of hook.c, and hook.c calls socksify_init() of init.c:
    # the shape the real-symbol table replaced. No header includes the other's.
    write(tmp_path / "common" / "wire.c", "int socksify_wire(void) { return 0; }\n")
    write(tmp_path / "linux" / "init.c",
          "void hook_resolve(void);\nvoid socksify_init(void) { hook_resolve(); }\n")
    write(tmp_path / "linux" / "hook.c",
          "void socksify_init(void);\nvoid hook_resolve(void) {}\n"
          "int hook(void) { socksify_init(); return 0; }\n")
    run = check(tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "circle of 2 modules: linux/hook linux/init" in run.stdout
    assert "linux/init -> linux/hook: linux/init.c uses hook_resolve()" in run.stdout
    assert "linux/hook -> linux/init: linux/hook.c uses socksify_init()" in run.stdout


def test_headers_leading_back_are_a_circle(tmp_path: Path) -> None:
    # a.h includes b.h and b.h includes a.h (guards hide it from the compiler); the wire
    # header belongs to common/wire.c despite its socksify_ prefix.
    write(tmp_path / "common" / "socksify_wire.h", '#include "a.h"\n')
    write(tmp_path / "common" / "wire.c", '#include "socksify_wire.h"\n')
    write(tmp_path / "linux" / "a.h", '#pragma once\n#include "b.h"\n')
    write(tmp_path / "linux" / "b.h", '#pragma once\n#include "socksify_wire.h"\n')
    write(tmp_path / "linux" / "b.c", '#include "b.h"\n')
    run = check(tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "circle of 3 modules: common/wire linux/a.h linux/b" in run.stdout

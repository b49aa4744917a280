"""socksify refuses programs the shim cannot load into, instead of running them
unprotected; real binaries are built here to check each case."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from socksify import programs, shimlib

HELLO = "int main(void) { return 0; }\n"


@pytest.fixture(scope="module")
def shim() -> Path:
    path = shimlib.library_path()
    assert path.is_file(), "install socksify first (pip install .)"
    return path


def build(tmp_path: Path, name: str, *flags: str) -> Path:
    src = tmp_path / "hello.c"
    src.write_text(HELLO)
    out = tmp_path / name
    subprocess.run(["cc", *flags, "-o", str(out), str(src)], check=True, timeout=120)
    return out


def test_dynamic_program_passes(tmp_path: Path, shim: Path) -> None:
    programs.check(str(build(tmp_path, "dyn")), shim)
    programs.check("sh", shim)          # found on PATH


def test_static_program_is_refused(tmp_path: Path, shim: Path) -> None:
    exe = build(tmp_path, "static", "-static")
    with pytest.raises(programs.Unprotectable, match="statically linked"):
        programs.check(str(exe), shim)


def test_script_is_judged_by_its_interpreter(tmp_path: Path, shim: Path) -> None:
    static = build(tmp_path, "static", "-static")
    script = tmp_path / "run.sh"
    script.write_text(f"#!{static}\n")
    script.chmod(0o755)
    with pytest.raises(programs.Unprotectable, match="statically linked"):
        programs.check(str(script), shim)
    env_script = tmp_path / "env.sh"
    env_script.write_text("#!/usr/bin/env -S sh -e\necho hi\n")
    env_script.chmod(0o755)
    programs.check(str(env_script), shim)


def test_go_program_is_refused(tmp_path: Path, shim: Path) -> None:
    """A dynamically linked binary that carries Go's build-info marker."""
    exe = build(tmp_path, "gotool")
    with open(exe, "ab") as f:
        f.write(b"\x00" * 16 + programs.GO_BUILDINFO + b"\x08\x02")
    with pytest.raises(programs.Unprotectable, match="Go program"):
        programs.check(str(exe), shim)


def test_other_architecture_is_refused(tmp_path: Path, shim: Path) -> None:
    exe = build(tmp_path, "dyn")
    data = bytearray(exe.read_bytes())
    data[18:20] = (0xB7).to_bytes(2, "little")      # EM_AARCH64
    exe.write_bytes(bytes(data))
    with pytest.raises(programs.Unprotectable, match="another architecture"):
        programs.check(str(exe), shim)


@pytest.mark.root("chown to another user")
def test_setuid_program_of_another_user_is_refused(tmp_path: Path, shim: Path) -> None:
    exe = build(tmp_path, "suid")
    os.chown(exe, 65534, 65534)
    exe.chmod(0o755 | stat.S_ISUID)
    tmp_path.chmod(0o755)
    with pytest.raises(programs.Unprotectable, match="setuid"):
        programs.check(str(exe), shim)


def test_cli_refuses_with_126_and_the_override_runs_it(tmp_path: Path) -> None:
    exe = build(tmp_path, "static", "-static")
    env = {**os.environ, "SOCKSIFY_RUNTIME_DIR": str(tmp_path / "rt")}
    out = subprocess.run([sys.executable, "-m", "socksify.cli", "--no-isolate", "--via",
                          "socks4://127.0.0.1:9", str(exe)], capture_output=True,
                         text=True, timeout=60, env=env)
    assert out.returncode == 126, out.stderr
    assert "statically linked" in out.stderr and "--allow-unprotected" in out.stderr
    assert not (tmp_path / "rt" / "control.sock").exists()   # no daemon was started
    if shutil.which("socksifyd"):
        out = subprocess.run([sys.executable, "-m", "socksify.cli", "--via",
                              "socks4://127.0.0.1:9", "--allow-unprotected", str(exe)],
                             capture_output=True, text=True, timeout=60, env=env)
        subprocess.run([sys.executable, "-m", "socksify.service", "stop"], env=env,
                       capture_output=True, timeout=60)
        assert out.returncode == 0, out.stderr

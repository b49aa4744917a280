"""The shim's exec hooks, on real programs: a child whose environment was cleared or
rewritten gets LD_PRELOAD and the SOCKSIFY_* variables back, and a child that would not
load the shim (setuid, statically linked) is refused. No daemon: SOCKSIFY_SOCKET points
nowhere, so any lookup or connection would fail closed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import skip_or_fail

from socksify import shimlib

SOCKET = "/nonexistent/socksify-test/control.sock"
SESSION = "0123456789abcdef"
PRINT_ENV = ("import os; print(os.environ.get('LD_PRELOAD'), "
             "os.environ.get('SOCKSIFY_SOCKET'), os.environ.get('SOCKSIFY_SESSION'))")


@pytest.fixture(scope="module")
def shim() -> str:
    path = shimlib.library_path()
    assert path.is_file(), f"{path} is missing: run `pip install .` first"
    return str(path)


def shim_env(shim: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SOCKSIFY_") and k != "LD_PRELOAD"}
    env.update(LD_PRELOAD=shim, SOCKSIFY_SOCKET=SOCKET, SOCKSIFY_SESSION=SESSION, **extra)
    return env


def run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)


def build(tmp_path: Path, name: str, source: str, *flags: str) -> Path:
    if shutil.which("cc") is None:
        skip_or_fail("no C compiler (cc)")
    src = tmp_path / f"{name}.c"
    src.write_text(source)
    out = tmp_path / name
    subprocess.run(["cc", *flags, "-o", str(out), str(src)], check=True, timeout=120)
    return out


def env_lines(stdout: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in stdout.splitlines() if "=" in line)


def test_env_i(shim: str) -> None:
    res = run(["env", "-i", sys.executable, "-c", PRINT_ENV], shim_env(shim))
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [shim, SOCKET, SESSION]


def test_subprocess_empty_env(shim: str) -> None:
    code = "import subprocess; subprocess.run(['env'], env={}, check=True)"
    res = run([sys.executable, "-c", code], shim_env(shim))
    assert res.returncode == 0, res.stderr
    got = env_lines(res.stdout)
    assert got == {"LD_PRELOAD": shim, "SOCKSIFY_SOCKET": SOCKET, "SOCKSIFY_SESSION": SESSION}


def test_shell_exec_env_i(shim: str) -> None:
    res = run(["sh", "-c", "exec env -i sh -c 'echo $LD_PRELOAD $SOCKSIFY_SOCKET'"],
              shim_env(shim))
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [shim, SOCKET]


def test_rewritten_preload_is_prepended(shim: str, tmp_path: Path) -> None:
    """Another LD_PRELOAD value keeps its libraries, after the shim; the program's own
    SOCKSIFY_SOCKET is kept."""
    other = build(tmp_path, "other.so", "int socksify_test_other;\n", "-shared", "-fPIC")
    code = ("import subprocess; subprocess.run(['env'], env={'LD_PRELOAD': %r, "
            "'SOCKSIFY_SOCKET': '/elsewhere.sock'}, check=True)" % str(other))
    res = run([sys.executable, "-c", code], shim_env(shim))
    assert res.returncode == 0, res.stderr
    got = env_lines(res.stdout)
    assert got["LD_PRELOAD"] == f"{shim} {other}"
    assert got["SOCKSIFY_SOCKET"] == "/elsewhere.sock" and got["SOCKSIFY_SESSION"] == SESSION


@pytest.mark.parametrize("call", ["posix_spawn", "posix_spawnp"])
def test_posix_spawn_empty_env(shim: str, call: str) -> None:
    prog = "/usr/bin/env" if call == "posix_spawn" else "env"
    code = (f"import os; pid = os.{call}({prog!r}, ['env'], {{}}); "
            "os.waitpid(pid, 0)")
    res = run([sys.executable, "-c", code], shim_env(shim))
    assert res.returncode == 0, res.stderr
    assert env_lines(res.stdout) == {"LD_PRELOAD": shim, "SOCKSIFY_SOCKET": SOCKET,
                                     "SOCKSIFY_SESSION": SESSION}


EXECLE = r"""
#include <stdio.h>
#include <unistd.h>
int main(void)
{
    char *envp[] = {NULL};
    execle("/usr/bin/env", "env", (char *)NULL, envp);
    perror("execle");
    return 1;
}
"""


def test_execle_empty_env(shim: str, tmp_path: Path) -> None:
    exe = build(tmp_path, "execle", EXECLE)
    res = run([str(exe)], shim_env(shim))
    assert res.returncode == 0, res.stderr
    assert env_lines(res.stdout) == {"LD_PRELOAD": shim, "SOCKSIFY_SOCKET": SOCKET,
                                     "SOCKSIFY_SESSION": SESSION}


@pytest.fixture
def setuid_id(tmp_path: Path) -> Path:
    """A copy of id(1), setuid to nobody, in a directory everyone may traverse."""
    if os.geteuid() != 0:
        skip_or_fail("needs root to chown a setuid copy to nobody")
    tmp_path.chmod(0o755)
    exe = tmp_path / "id"
    shutil.copy("/usr/bin/id", exe)
    os.chown(exe, 65534, -1)
    exe.chmod(0o4755)
    return exe


def test_setuid_child_is_refused(shim: str, setuid_id: Path) -> None:
    res = run(["sh", "-c", f"{setuid_id} -u"], shim_env(shim))
    assert res.returncode == 126, res
    assert "Operation not permitted" in res.stderr
    assert (f"refusing to exec {setuid_id}: setuid programs do not load the socksify "
            "shim and would run unprotected") in res.stderr


def test_setuid_child_runs_when_allowed(shim: str, setuid_id: Path) -> None:
    res = run(["sh", "-c", f"{setuid_id} -u"],
              shim_env(shim, SOCKSIFY_ALLOW_UNPROTECTED="1"))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "65534"


def test_static_child_is_refused(shim: str, tmp_path: Path) -> None:
    exe = build(tmp_path, "static", "int main(void) { return 0; }\n", "-static")
    res = run(["env", "-i", str(exe)], shim_env(shim))
    assert res.returncode == 126, res
    assert "statically linked programs do not load the socksify shim" in res.stderr
    script = tmp_path / "run"
    script.write_text(f"#!{exe}\n")
    script.chmod(0o755)
    res = run(["sh", "-c", str(script)], shim_env(shim))
    assert res.returncode == 126 and "Operation not permitted" in res.stderr, res
    res = run(["env", "-i", str(exe)], shim_env(shim, SOCKSIFY_ALLOW_UNPROTECTED="1"))
    assert res.returncode == 0, res.stderr


def test_loader_and_dynamic_children_pass(shim: str) -> None:
    """The dynamic loader has no PT_INTERP but loads the shim when run as a program
    (ldd does that); ordinary children run."""
    res = run(["ldd", "/bin/true"], shim_env(shim))
    assert res.returncode == 0 and shim in res.stdout, res
    res = run(["sh", "-c", "true && env true"], shim_env(shim))
    assert res.returncode == 0 and res.stderr == "", res.stderr


@pytest.mark.parametrize("flag", ["O_RDONLY", "O_PATH"])
def test_fexecve(shim: str, tmp_path: Path, flag: str) -> None:
    """fexecve() (os.execve with a descriptor) gets the variables back, and refuses a
    statically linked program even through an O_PATH descriptor."""
    exe = build(tmp_path, "static", "int main(void) { return 0; }\n", "-static")
    code = ("import os, sys; fd = os.open(sys.argv[1], os.%s); "
            "os.execve(fd, [sys.argv[1]], {})" % flag)
    res = run([sys.executable, "-c", code, "/usr/bin/env"], shim_env(shim))
    assert res.returncode == 0, res.stderr
    assert env_lines(res.stdout)["LD_PRELOAD"] == shim
    res = run([sys.executable, "-c", code, str(exe)], shim_env(shim))
    assert res.returncode == 1 and "PermissionError" in res.stderr, res
    assert "statically linked programs do not load the socksify shim" in res.stderr


EXECVEAT = Path(__file__).resolve().parents[1] / "programs" / "execveat.c"


@pytest.mark.parametrize("mode", ["abs", "rel", "empty", "nofollow"])
def test_execveat(shim: str, tmp_path: Path, mode: str) -> None:
    """execveat() with an empty environment (by absolute path, relative to a directory
    descriptor, through an O_PATH descriptor with AT_EMPTY_PATH, with
    AT_SYMLINK_NOFOLLOW) gets the variables back and refuses a statically linked
    program, once."""
    if shutil.which("cc") is None:
        skip_or_fail("no C compiler (cc)")
    prog = tmp_path / "execveat"
    subprocess.run(["cc", "-O1", "-Wall", "-o", str(prog), str(EXECVEAT)], check=True,
                   timeout=120)
    static = build(tmp_path, "static", "int main(void) { return 0; }\n", "-static")
    res = run([str(prog), mode, "/usr/bin/env"], shim_env(shim))
    assert res.returncode == 0, res.stderr
    env = env_lines(res.stdout)
    assert (env["LD_PRELOAD"], env["SOCKSIFY_SOCKET"], env["SOCKSIFY_SESSION"]) == (
        shim, SOCKET, SESSION), res.stdout
    res = run([str(prog), mode, str(static)], shim_env(shim))
    assert res.returncode == 126 and "execveat EPERM" in res.stdout, res
    assert res.stderr.count("statically linked programs do not load the socksify "
                            "shim") == 1, res.stderr


def test_fexecve_is_checked_once(shim: str, tmp_path: Path) -> None:
    """glibc's fexecve() makes the execveat system call itself: the fexecve hook checks
    the program, and the execveat hook does not see it again."""
    exe = build(tmp_path, "static", "int main(void) { return 0; }\n", "-static")
    code = ("import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); "
            "os.execve(fd, [sys.argv[1]], {})")
    res = run([sys.executable, "-c", code, str(exe)], shim_env(shim))
    assert res.returncode == 1 and "PermissionError" in res.stderr, res
    assert res.stderr.count("refusing to exec") == 1, res.stderr

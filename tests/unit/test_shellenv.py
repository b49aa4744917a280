"""Shell mode's pure parts: the exports `socksify env` prints (from the same
environment a socksified COMMAND gets), what `socksify off` prints, and the start-up
files that mark the prompt of bash, zsh and sh."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from socksify import cli, shellenv, shellmode
from socksify.paths import Paths

from test_man import installed

SOCKSIFY = installed("bin/socksify")


def test_env_exports_are_the_program_env(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LD_PRELOAD", "/lib/other.so")
    monkeypatch.delenv("SOCKSIFY_PROXY_LOOPBACK", raising=False)
    args = cli._parser().parse_args(["--via", "socks5://127.0.0.1:9050",
                                     "--proxy-loopback"])
    shim = tmp_path / "lib so" / "libsocksify.so"
    paths = Paths(tmp_path, tmp_path / "c.sock", tmp_path / "p", tmp_path / "l")
    env = cli.program_env(args, shim, paths, "00ff" * 4)
    text = shellenv.exports(os.environ, env)
    out = subprocess.run(["sh", "-c", f"{text}\nenv"], capture_output=True, text=True,
                         env=dict(os.environ), check=True).stdout.splitlines()
    assert f"LD_PRELOAD={shim} /lib/other.so" in out
    assert "SOCKSIFY_SESSION=00ff00ff00ff00ff" in out
    assert "SOCKSIFY_PROXY_LOOPBACK=1" in out
    assert not any(line.startswith("export PATH=") for line in text.splitlines())


def test_off_prints_unsets_and_keeps_other_preloads() -> None:
    shim = subprocess.run([str(SOCKSIFY.parent / "python"), "-m", "socksify.shimlib"],
                          capture_output=True, text=True).stdout.split()[-1]
    env = {**os.environ, "LD_PRELOAD": f"{shim} /lib/other.so",
           "SOCKSIFY_SESSION": "00" * 8, "SOCKSIFY_KEEPER": "999999999",
           "SOCKSIFY_SOCKET": "/nonexistent"}
    res = subprocess.run([str(SOCKSIFY), "off"], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert "export LD_PRELOAD=/lib/other.so" in res.stdout
    unset = next(ln for ln in res.stdout.splitlines() if ln.startswith("unset "))
    assert {"SOCKSIFY_SESSION", "SOCKSIFY_KEEPER", "SOCKSIFY_SOCKET"} <= set(unset.split())
    # a shell that carries the shim itself (--shell): refused, and eval fails
    del env["SOCKSIFY_KEEPER"]
    res = subprocess.run([str(SOCKSIFY), "off"], capture_output=True, text=True, env=env)
    assert res.returncode == 1 and res.stdout.strip() == "false"
    assert "stays socksified" in res.stderr


def test_env_refuses_a_command_and_an_active_shell() -> None:
    res = subprocess.run([str(SOCKSIFY), "env", "--isolate"], capture_output=True,
                         text=True)
    assert res.returncode == 2 and res.stdout.strip() == "false"
    res = subprocess.run([str(SOCKSIFY), "env", "--via", "socks5://127.0.0.1:9"],
                         capture_output=True, text=True,
                         env={**os.environ, "SOCKSIFY_SESSION": "00" * 8})
    assert res.returncode == 1 and "already" in res.stderr
    res = subprocess.run([str(SOCKSIFY), "--shell", "true"], capture_output=True,
                         text=True)
    assert res.returncode == 2 and "no COMMAND" in res.stderr


@pytest.mark.parametrize("shell", ["bash", "zsh", "dash"])
def test_prompt_marker(shell: str, tmp_path: Path) -> None:
    """Each shell reads its user's start-up file, then gets the marker."""
    path = shutil.which(shell)
    if path is None:
        pytest.skip(f"{shell} is not installed")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("PS1='mine$ '; MINE=bash\n")
    (home / ".zshrc").write_text("PS1='mine%% '; MINE=zsh\n")
    (home / "envrc").write_text("PS1='mine$ '; MINE=sh\n")
    env = {"HOME": str(home), "PATH": os.environ["PATH"], "ENV": str(home / "envrc")}
    env_before = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        argv, extra, cleanup = shellmode.shell_command(path)
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    try:
        res = subprocess.run(argv, input='echo "P=[$PS1] M=$MINE Z=${ZDOTDIR:-unset}"\n'
                             "exit\n", capture_output=True, text=True, timeout=30,
                             env={**env, **extra, "TERM": "dumb"})
    finally:
        cleanup()
    line = next(ln for ln in (res.stdout + res.stderr).splitlines() if "P=[" in ln)
    assert f"P=[{shellmode.MARK}mine" in line and f"M={shell.replace('dash', 'sh')}" \
        in line, res
    if shell == "zsh":
        assert "Z=unset" in line       # ZDOTDIR put back for the shell's children

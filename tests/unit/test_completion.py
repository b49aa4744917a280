"""Shell completion (`socksify completion bash|zsh`), typed in a real bash (and zsh)
in a pseudo-terminal: what TAB puts on the command line is read back by turning the
line into an `echo` of itself."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import skip_or_fail

from test_man import installed

SOCKSIFY = installed("bin/socksify")
BIN = SOCKSIFY.parent


def _socksify(*args: str, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SOCKSIFY), *args], capture_output=True, text=True,
                          timeout=30, env=env)


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text('[chains.zulu7]\nhops = ["socks5://127.0.0.1:9"]\n'
                    '[chains."alpha-x"]\nhops = ["socks4a://127.0.0.1:9"]\n')
    return path


def test_chains_callback_reads_the_policy(policy: Path, tmp_path: Path) -> None:
    out = _socksify("completion", "--chains", "-c", str(policy))
    assert out.returncode == 0 and out.stdout.split() == ["alpha-x", "zulu7"]
    env = {**os.environ, "SOCKSIFY_CONFIG": str(policy)}
    assert _socksify("completion", "--chains", env=env).stdout.split() == \
        ["alpha-x", "zulu7"]
    broken = tmp_path / "broken.toml"
    broken.write_text("[chains\n")
    out = _socksify("completion", "--chains", "-c", str(broken))
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")


def test_chains_callback_asks_the_running_daemon(policy: Path, tmp_path: Path) -> None:
    """A daemon started with -c FILE: `socksify --chain` uses FILE's chains, and so
    does completion, though no policy file is where the daemon looks by default."""
    rt = tmp_path / "rt"
    env = {**os.environ, "SOCKSIFY_RUNTIME_DIR": str(rt), "HOME": str(tmp_path),
           "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    env.pop("SOCKSIFY_CONFIG", None)
    assert _socksify("completion", "--chains", env=env).stdout == ""
    proc = subprocess.Popen([str(BIN / "socksifyd"), "run", "-c", str(policy)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not (rt / "control.sock").exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the daemon did not start"
            time.sleep(0.05)
        out = _socksify("completion", "--chains", env=env)
        assert out.stdout.split() == ["alpha-x", "zulu7"], out.stderr
    finally:
        proc.terminate()
        proc.wait(20)


def test_completion_usage_and_double_dash() -> None:
    out = _socksify("completion", "fish")
    assert out.returncode == 2 and "bash|zsh" in out.stderr
    # after an option or `--`, completion is COMMAND as before: here the usual
    # check of --via runs (and stops the command before any daemon is started)
    for argv in (["--via", "bad", "--", "completion"], ["--via", "bad", "completion"]):
        out = _socksify(*argv)
        assert out.returncode == 2 and "bad --via" in out.stderr and not out.stdout


def _shell(argv: list[str], policy: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    try:
        import pexpect
    except ImportError:
        skip_or_fail("pexpect is not installed (pip install '.[test]')")
    progs = tmp_path / "bin"
    progs.mkdir()
    prog = progs / "sktabprog9"
    prog.write_text("#!/bin/sh\n")
    prog.chmod(0o755)
    env = {"PATH": f"{BIN}:{progs}:/usr/bin:/bin", "HOME": str(tmp_path),
           "TERM": "dumb", "SOCKSIFY_CONFIG": str(policy), "PS1": "PROMPT> ",
           "INPUTRC": "/dev/null", "ZDOTDIR": str(tmp_path)}
    child = pexpect.spawn(argv[0], argv[1:], env=env, encoding="utf-8", timeout=20,
                          dimensions=(24, 200))
    return child


def _line_after_tab(child, typed: str, tabs: str = "\t") -> str:  # type: ignore[no-untyped-def]
    """Type `typed`, press TAB, then make the line print itself between markers."""
    child.send(typed + tabs)
    # the keys after TAB wait in the terminal until the completion is done; the pause
    # only keeps them out of the same read()
    time.sleep(0.05)
    # ^A: start of line; insert `echo "R<"`; ^E: end; `">R"`; Enter
    child.send('\x01echo "R<"\x05">R"\r')
    child.expect(r"\r\nR<(.*)>R\r\n")
    return str(child.match.group(1))


BASH_CASES = [
    ("socksify --vi", "socksify --via "),
    ("socksify --via so", "socksify --via socks"),
    ("socksify --via socks4a", "socksify --via socks4a://"),
    ("socksify --chain zu", "socksify --chain zulu7 "),
    ("socksify --chain al", "socksify --chain alpha-x "),
    ("socksify --strategy round", "socksify --strategy round_robin "),
    ("socksify -- sktabpro", "socksify -- sktabprog9 "),
    ("socksify --via socks5://127.0.0.1:1080 sktabpro",
     "socksify --via socks5://127.0.0.1:1080 sktabprog9 "),
    ("socksify --via socks5://127.0.0.1:1080 --chai", "socksify --via "
     "socks5://127.0.0.1:1080 --chain "),
]


def test_bash_completion_in_a_pty(policy: Path, tmp_path: Path) -> None:
    if shutil.which("bash") is None:
        skip_or_fail("bash is not installed")
    child = _shell(["bash", "--norc", "--noprofile", "-i"], policy, tmp_path)
    try:
        child.sendline("source <(socksify completion bash); echo LOADED")
        child.expect("\r\nLOADED")
        for typed, wanted in BASH_CASES:
            assert _line_after_tab(child, typed) == wanted, typed
        # ambiguous: a second TAB lists the candidates
        child.send("socksify --v\t\t")
        child.expect("--verbose")
        child.send("\x15")   # ^U: drop the line
        assert _line_after_tab(child, "socksify -c " + str(tmp_path / "policy.to")) \
            == "socksify -c " + str(tmp_path / "policy.toml") + " "
    finally:
        child.close(force=True)


def test_zsh_script_parses_and_completes(policy: Path, tmp_path: Path) -> None:
    if shutil.which("zsh") is None:
        skip_or_fail("zsh is not installed (apt-get install zsh)")
    script = tmp_path / "_socksify"
    script.write_text(_socksify("completion", "zsh").stdout)
    check = subprocess.run(["zsh", "-n", str(script)], capture_output=True, text=True,
                           timeout=30)
    assert check.returncode == 0, check.stderr
    child = _shell(["zsh", "-f", "-i"], policy, tmp_path)
    try:
        child.sendline("autoload -Uz compinit && compinit -u -D && "
                       f"source {script} && echo LOADED")
        child.expect("LOADED")
        # zsh drops its own inserted space when the cursor moves (^A): compare the words
        assert _line_after_tab(child, "socksify --chain zu").rstrip() == \
            "socksify --chain zulu7"
        assert _line_after_tab(child, "socksify --via socks4a") == \
            "socksify --via socks4a://"
        assert _line_after_tab(child, "socksify -- sktabpro").rstrip() == \
            "socksify -- sktabprog9"
        assert _line_after_tab(child, "socksify -q sktabpro").rstrip() == \
            "socksify -q sktabprog9"
    finally:
        child.close(force=True)

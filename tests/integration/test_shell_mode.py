"""Shell mode: `socksify --shell` typed into in a pseudo-terminal (the prompt is marked,
curl to the far host crosses the hops, `eval "$(socksify off)"` stops it, `exit`
returns), and `eval "$(socksify env ...)"` / `eval "$(socksify off)"` in a bash
script: on, the curl crosses the chain; off, it goes direct and cannot get out of the
client zone (the lab routes nowhere). The session lives as long as the shell: after
the shell has ended, its exports name an ended session, refused by the daemon."""

from __future__ import annotations

import os
import pty
import re
import select
import shlex
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import lab as lablib
from conftest import Socksify, need

pytestmark = pytest.mark.lab


def _shell_env(sk: Socksify, shell: str) -> dict[str, str]:
    home = Path(tempfile.mkdtemp(prefix="skshhome-", dir=sk.home))
    bindir = str(Path(sk.install.socksify).parent)
    return {**sk.env, "HOME": str(home), "SHELL": shell, "TERM": "dumb",
            "PATH": f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}


class Terminal:
    """A command on a pseudo-terminal: type lines, wait for text."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave,
                                     env=env, start_new_session=True, close_fds=True)
        os.close(slave)
        self.seen = ""

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\r")

    def expect(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.seen)
            if m:
                self.seen = self.seen[m.end():]
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {pattern!r} within {timeout}s; the terminal "
                                     f"showed: {self.seen[-3000:]!r}")
            if select.select([self.master], [], [], min(left, 0.5))[0]:
                try:
                    data = os.read(self.master, 65536)
                except OSError:
                    data = b""
                self.seen += data.decode(errors="replace").replace("\r", "")

    def close(self) -> None:
        if self.proc.poll() is None:
            lablib.kill_group(self.proc)  # type: ignore[arg-type]
        os.close(self.master)


def _shell_path(shell: str) -> str:
    need(shell)
    need("curl")
    return subprocess.run(["sh", "-c", f"command -v {shell}"], capture_output=True,
                          text=True).stdout.strip()


def _curl(lab: lablib.Lab, max_time: int) -> str:
    return (f"curl -s -o /dev/null --max-time {max_time} -w 'CODE=%{{http_code}}\\n' "
            f"{lab.url('small.bin')}")


@pytest.mark.parametrize("shell", ["bash", "zsh", "dash"])
def test_shell_in_a_terminal(sk: Socksify, shell: str) -> None:
    """socksify --shell: marked prompt, commands cross the chain, `socksify off`
    refuses (the shell itself carries the shim), `exit` returns the shell's status."""
    lab = sk.lab
    env = _shell_env(sk, _shell_path(shell))
    via = [a for url in sk.hops(3) for a in ("--via", url)]
    term = Terminal(["ip", "netns", "exec", lab.client_ns, sk.install.socksify, *via,
                     "--shell"], env)
    try:
        term.expect(r"\(socksify\) ")
        before = lab.hop_connects()
        term.type(_curl(lab, 20))
        term.expect(r"CODE=200")
        # every hop carried it: hop 3 to the far server
        assert lab.wait_hop_connects(before, [1, 1, 1]) == [1, 1, 1]
        assert lab.hop_targets_since(before)[2] == [lab.far_http_addr]
        term.type('eval "$(socksify off)"; echo "OFF=$?"')
        term.expect(r"stays socksified")
        term.expect(r"OFF=1")
        term.type(_curl(lab, 20))
        term.expect(r"CODE=200")
        assert lab.wait_hop_connects(before, [2, 2, 2]) == [2, 2, 2]
        term.type("exit 7")
        assert term.proc.wait(timeout=20) == 7
    finally:
        term.close()


@pytest.mark.parametrize("shell", ["bash", "zsh", "dash"])
def test_env_and_off_in_a_terminal(sk: Socksify, shell: str) -> None:
    """An interactive shell turned on and off: on, curl crosses the chain; off, it
    goes direct and cannot leave the client zone."""
    lab = sk.lab
    env = _shell_env(sk, _shell_path(shell))
    env["PS1"] = "plain$ "
    term = Terminal(["ip", "netns", "exec", lab.client_ns, _shell_path(shell), "-i"],
                    env)
    via = " ".join(f"--via {u}" for u in sk.hops(2))
    try:
        before = lab.hop_connects()
        term.type(f'eval "$(socksify env {via})"; echo "ON=$?"')
        term.expect(r"ON=0")
        term.type(_curl(lab, 20))
        term.expect(r"CODE=200")
        assert lab.wait_hop_connects(before, [1, 1])[:2] == [1, 1]
        term.type('eval "$(socksify off)"; echo "OFF=$?${LD_PRELOAD:-none}"')
        term.expect(r"OFF=0none")
        term.type(_curl(lab, 3))
        term.expect(r"CODE=000")            # direct: the client zone routes nowhere
        assert lab.hop_connects()[:2] == [b + 1 for b in before[:2]]
        term.type("exit 0")
        assert term.proc.wait(timeout=20) == 0
    finally:
        term.close()


def _script(sk: Socksify, body: str, timeout: float = 90) -> lablib.Result:
    env = _shell_env(sk, "/bin/bash")
    return sk.lab.client_run(["bash", "-c", body], env=env, timeout=timeout)


def test_env_and_off_in_a_script(sk: Socksify) -> None:
    need("curl")
    lab = sk.lab
    via = " ".join(f"--via {shlex.quote(u)}" for u in sk.hops(2))
    curl = f"curl -s -o /dev/null -w '%{{http_code}}\\n' {lab.url('small.bin')}"
    before = lab.hop_connects()
    res = _script(sk, f"""
        eval "$(socksify env {via})" || exit 9
        echo "ON $SOCKSIFY_SESSION $SOCKSIFY_KEEPER"
        {curl} --max-time 20
        keeper=$SOCKSIFY_KEEPER
        eval "$(socksify off)"
        echo "OFF ${{LD_PRELOAD:-none}} ${{SOCKSIFY_SESSION:-none}}"
        {curl} --max-time 3
        sleep 0.5; if kill -0 $keeper 2>/dev/null; then echo KEEPER-ALIVE; fi
        """)
    lines = res.stdout.split()
    assert res.returncode == 0 and "ON" in lines, sk.describe(res)
    session = lines[lines.index("ON") + 1]
    assert lines[lines.index("ON") + 3] == "200", sk.describe(res)
    assert lines[lines.index("OFF"):lines.index("OFF") + 4] == \
        ["OFF", "none", "none", "000"], sk.describe(res)
    assert "KEEPER-ALIVE" not in lines
    assert lab.wait_hop_connects(before, [1, 1])[:2] == [1, 1]
    lablib.wait_until(lambda: f"session {session} closed" in sk.daemon_log(100000), 10,
                      "the session to end with socksify off")


def test_session_ends_with_the_shell(sk: Socksify) -> None:
    """No `socksify off`: the keeper goes when the shell does, and a program that still
    carries the exports is refused by the daemon (never sent direct)."""
    need("curl")
    lab = sk.lab
    res = _script(sk, f'eval "$(socksify env --via {sk.hops(1)[0]})" && env | grep -E '
                  "'^(LD_PRELOAD|SOCKSIFY_)'")
    assert res.returncode == 0, sk.describe(res)
    stale = dict(line.split("=", 1) for line in res.stdout.splitlines())
    keeper = int(stale["SOCKSIFY_KEEPER"])
    lablib.wait_until(lambda: not Path(f"/proc/{keeper}").exists()
                      or "zombie" in Path(f"/proc/{keeper}/status").read_text()
                      .lower(), 10, "the keeper to end with its shell")
    lablib.wait_until(lambda: f"session {stale['SOCKSIFY_SESSION']} closed"
                      in sk.daemon_log(100000), 10, "the session to end")
    before = lab.hop_connects()
    late = lab.client_run(["curl", "-s", "-o", "/dev/null", "--max-time", "10",
                           lab.url("small.bin")], env={**sk.env, **stale}, timeout=30)
    assert late.returncode == 7, sk.describe(late)   # refused at once, not a timeout
    assert lab.hop_connects() == before
    assert "unknown session" in sk.daemon_log(), sk.daemon_log()

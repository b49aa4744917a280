"""The operator's view (issue 17) against a real daemon with live transfers through the
lab chain: `socksifyd connections --app/--chain` with two programs on two chains, and
`socksifyd top` in a real terminal (tmux, 80x24): it draws the connections, exits on
q with the terminal given back, and says so (exit 1) when the daemon stops."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
import textwrap
from pathlib import Path
from typing import Any, Iterator

import pytest

import lab as lablib
from conftest import skip_or_fail, start_daemon


def _policy(path: Path, lab: lablib.Lab) -> Path:
    """wget through c1 (one hop), everything else through c3 (three); relayed, so
    the daemon counts the bytes itself."""
    c3 = ", ".join(f'"{h.url}"' for h in lab.hops[:3])
    path.write_text(textwrap.dedent(f"""\
        [chains.c3]
        hops = [{c3}]
        data_path = "relay"

        [chains.c1]
        hops = ["{lab.hops[0].url}"]
        data_path = "relay"

        [[rules]]
        name = "wget-c1"
        app = ["wget"]
        action = "chain:c1"

        [default]
        action = "chain:c3"
        """))
    return path


def _downloads(sk, lab: lablib.Lab, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """curl and wget each downloading big.bin at 512 KiB/s (about 30 s), both seen
    carrying data in the daemon's table."""
    tag = os.urandom(4).hex()
    sk.spawn(["curl", "-q", "-sS", "--max-time", "90", "--limit-rate", "512K",
              "-o", str(tmp_path / "c.bin"), lab.url("big.bin", f"topc-{tag}")],
             preload=True)
    sk.spawn(["wget", "-q", "--no-config", "--limit-rate=512k", "-O",
              str(tmp_path / "w.bin"), lab.url("big.bin", f"topw-{tag}")],
             preload=True)

    def flowing() -> bool:
        rows = sk.control({"op": "connections"})["connections"]
        apps = {c["app"] for c in rows if c.get("down", 0) > 0}
        return {"curl", "wget"} <= apps
    lablib.wait_until(flowing, 20, "curl and wget to carry data\n" + sk.daemon_log())


def _json_rows(sk, *args: str) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    res = sk.socksifyd("connections", "--json", *args)
    assert res.returncode == 0, sk.describe(res)
    out = json.loads(res.stdout)
    assert isinstance(out["now"], float), out      # the daemon's clock, for rates
    return list(out["connections"])


@pytest.mark.lab
def test_connections_filters_by_app_and_chain(lab: lablib.Lab, sk,
                                              tmp_path: Path) -> None:
    start_daemon(sk, _policy(tmp_path / "p.toml", lab))
    with lab.small_client_buffers():
        _downloads(sk, lab, tmp_path)
        everything = _json_rows(sk)
        curl_rows = _json_rows(sk, "--app", "curl")
        c1_rows = _json_rows(sk, "--chain", "c1")
        neither = _json_rows(sk, "--app", "curl", "--chain", "c1")
        both = _json_rows(sk, "--app", "wget", "--chain", "c1")
        table = sk.socksifyd("connections", "--app", "wget")
    assert {c["app"] for c in everything} == {"curl", "wget"}, everything
    assert curl_rows and all(c["app"] == "curl" and c["chain"] == "c3"
                             for c in curl_rows), curl_rows
    assert c1_rows and all(c["app"] == "wget" for c in c1_rows), c1_rows
    assert both == c1_rows or [c["id"] for c in both] == [c["id"] for c in c1_rows]
    assert neither == []
    assert table.returncode == 0 and "wget[" in table.stdout, sk.describe(table)
    assert "curl[" not in table.stdout, table.stdout


class Terminal:
    """One tmux session of its own (own server socket, no config): width x height,
    running a command under `sh`, which then prints EXIT=<status> and the
    terminal's modes (stty -a) so the test sees what the command left behind."""

    def __init__(self, workdir: Path) -> None:
        self.socket = workdir / "tmux.sock"

    def tmux(self, *args: str, check: bool = True) -> str:
        res = subprocess.run(["tmux", "-S", str(self.socket), "-f", "/dev/null", *args],
                             capture_output=True, text=True, timeout=20)
        if check and res.returncode != 0:
            raise AssertionError(f"tmux {args}: {res.returncode} {res.stderr}")
        return res.stdout

    def start(self, argv: list[str], env: dict[str, str], width: int = 80,
              height: int = 24) -> None:
        env = {**env, "TERM": "screen"}
        cmd = " ".join(shlex.quote(a) for a in ["env", "-i", *(f"{k}={v}" for k, v in
                                                                env.items()), *argv])
        # the shell outlives a Ctrl+C sent to the command (its trap; the command
        # itself gets SIGINT as usual)
        shell = f"trap : INT; {cmd}; echo EXIT=$?; stty -a; sleep 600"
        self.tmux("new-session", "-d", "-x", str(width), "-y", str(height), "-s", "top",
                  "sh", "-c", shell)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "top")

    def alternate(self) -> bool:
        return self.tmux("display", "-p", "-t", "top", "#{alternate_on}").strip() == "1"

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "top", *keys)

    def wait_for(self, text: str, timeout: float = 20) -> str:
        found: list[str] = []

        def seen() -> bool:
            found[:] = [self.screen()]
            return text in found[0]
        try:
            lablib.wait_until(seen, timeout, repr(text), interval=0.2)
        except Exception as exc:
            raise AssertionError(f"{exc}\n--- screen ---\n{found[0] if found else ''}")
        return found[0]

    def close(self) -> None:
        self.tmux("kill-server", check=False)


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    if shutil.which("tmux") is None:
        skip_or_fail("tmux is not installed")
    workdir = Path(tempfile.mkdtemp(prefix="sktmux-"))
    term = Terminal(workdir)
    try:
        yield term
    finally:
        term.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _restored(screen: str) -> bool:
    """stty -a after the command: canonical mode and echo are on again."""
    words = screen.split()
    return "icanon" in words and "echo" in words


@pytest.mark.lab
def test_top_in_an_80x24_terminal(lab: lablib.Lab, sk, tmp_path: Path,
                                  terminal: Terminal) -> None:
    start_daemon(sk, _policy(tmp_path / "p.toml", lab))
    with lab.small_client_buffers():
        _downloads(sk, lab, tmp_path)
        terminal.start([sk.install.socksifyd, "top", "--interval", "0.5"], sk.env)
        target = f"{lablib.FAR_IP}:{lab.http_port}"
        screen = terminal.wait_for("wget[")
        screen = terminal.wait_for(target)
        assert terminal.alternate(), screen
        lines = screen.splitlines()
        assert lines[0].startswith("socksifyd pid"), screen
        assert "curl[" in screen and "c3" in screen and "c1" in screen, screen
        assert "ID" in screen and "RATE" in screen and "CHAIN" in screen, screen
        # the hops section: c3's three hops, each up
        hop = lab.hops[0].url.split("://", 1)[1]
        assert f"{hop} up" in screen, screen
        terminal.keys("q")
        after = terminal.wait_for("EXIT=", 10)
    assert "EXIT=0" in after, after
    assert not terminal.alternate(), after
    assert _restored(after), after
    assert "socksifyd pid" not in after, after   # the frame went with the screen


@pytest.mark.lab
def test_top_says_when_the_daemon_stops(lab: lablib.Lab, sk, tmp_path: Path,
                                        terminal: Terminal) -> None:
    start_daemon(sk, _policy(tmp_path / "p.toml", lab))
    terminal.start([sk.install.socksifyd, "top", "--interval", "0.3"], sk.env)
    terminal.wait_for("no live connections")
    res = sk.socksifyd("stop")
    assert res.returncode == 0, sk.describe(res)
    after = terminal.wait_for("EXIT=", 15)
    assert "EXIT=1" in after and "the daemon stopped answering" in after, after
    assert not terminal.alternate() and _restored(after), after


@pytest.mark.lab
def test_top_once_and_ctrl_c(lab: lablib.Lab, sk, tmp_path: Path,
                             terminal: Terminal) -> None:
    """--once prints a frame to a pipe and exits 0; Ctrl+C in the live view quits
    as q does."""
    start_daemon(sk, _policy(tmp_path / "p.toml", lab))
    res = sk.socksifyd("top", "--once")
    assert res.returncode == 0, sk.describe(res)
    assert res.stdout.startswith("socksifyd pid") and "c3:" in res.stdout, res.stdout
    terminal.start([sk.install.socksifyd, "top"], sk.env)
    terminal.wait_for("no live connections")
    terminal.keys("C-c")
    after = terminal.wait_for("EXIT=", 10)
    assert "EXIT=0" in after and not terminal.alternate() and _restored(after), after

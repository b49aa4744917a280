"""A fast `socksify` start (issue 16): what the command imports on its way to running
COMMAND is its start-up time. These tests hold the import set, not a timing: no
asyncio, ssl, rich, psutil, ctypes, cffi, logging, the chain engine or the daemon's
modules -- neither on `import socksify.cli` nor on a whole run against a real daemon.
(docs/performance.md, "Start-up", has the figures.)"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_man import installed

BIN = installed("bin/socksify").parent

# Never on the way to exec. (proxies.py, for --via, brings dataclasses and inspect:
# it parses the URLs only when the daemon refuses them or must be started; the
# command is started with posix_spawnp, not subprocess; the runtime paths are strings
# there, pathlib is the daemon's and the tools'; the control connection is
# controlconn's bare _socket and JSON lines, the session's thread a _thread one, and
# signals are set with _signal: socket, json, threading and signal bring re and enum.
# client.py, the tools' side, is imported only to start a daemon.)
HEAVY = {"asyncio", "ssl", "rich", "psutil", "ctypes", "cffi", "logging", "secrets",
         "hashlib", "hmac", "tomllib", "tomli", "dataclasses", "inspect", "typing",
         "shutil", "argparse", "gettext", "subprocess", "pathlib", "urllib.parse",
         "ipaddress", "fnmatch", "socket", "selectors", "json", "threading", "signal",
         "re", "enum", "types", "math", "warnings", "socksify.client", "socksify.chains",
         "socksify.procinfo", "socksify.proxies", "socksify.controlfile",
         "socksify.protocol", "socksify.shimlib", "socksify.policy", "socksify.core",
         "socksify.listeners", "socksify.daemon"}


def _imported_by(code: str) -> set[str]:
    """The modules `code` adds to a fresh interpreter's (what the site hooks of this
    Python load first does not count)."""
    probe = ("import sys; before = set(sys.modules)\n" + code +
             "\nprint(' '.join(sorted(set(sys.modules) - before)))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60, check=True)
    return set(out.stdout.split())


def test_importing_the_cli_loads_nothing_heavy() -> None:
    found = _imported_by("import socksify.cli")
    assert "socksify.cli" in found
    assert sorted(found & HEAVY) == []


def test_the_cli_names_every_strategy() -> None:
    """quickargs.py spells the strategies out (importing chains.spec would import
    the chain engine, asyncio included): they must stay the engine's."""
    from socksify import quickargs
    from socksify.chains.spec import Strategy
    assert list(quickargs.STRATEGIES) == [s.value for s in Strategy]


def test_the_cli_names_every_stream_isolation_mode() -> None:
    from socksify import quickargs
    from socksify.chains.spec import ISOLATE_MODES
    assert quickargs.ISOLATE_MODES == ISOLATE_MODES


def _importtime_modules(stderr: str) -> set[str]:
    """Module names from `python -X importtime` lines."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                names.add(name)
    return names


@pytest.fixture
def daemon(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A daemon in its own runtime directory (no policy: sessions only)."""
    rt = tmp_path / "rt"
    env = {**os.environ, "SOCKSIFY_RUNTIME_DIR": str(rt),
           "SOCKSIFY_STATE_DIR": str(rt), "HOME": str(tmp_path),
           "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    env.pop("SOCKSIFY_CONFIG", None)
    proc = subprocess.Popen([str(BIN / "socksifyd"), "run"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not (rt / "control.sock").exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the daemon did not start"
            time.sleep(0.05)
        yield env
    finally:
        proc.terminate()
        proc.wait(20)


def test_a_whole_run_imports_nothing_heavy(daemon: dict[str, str],
                                           tmp_path: Path) -> None:
    """`socksify -q --via URL -- true` and `socksify -q -c FILE -- true` against a
    running daemon, under -X importtime: everything the command imported before and
    after running `true` (its child, a shell builtin-free binary, imports nothing).
    The installed `socksify` script itself (bin/socksify on Linux, not pip's console
    script, which imports re), and a -v run, which prints the daemon's lines."""
    policy = tmp_path / "p.toml"
    policy.write_text('[chains.c]\nhops = ["socks5://127.0.0.1:9"]\n'
                      '[default]\naction = "chain:c"\n')
    runs = {"--via": ["--via", "socks5://127.0.0.1:9"], "-c": ["-c", str(policy)],
            "-v": ["-v", "--via", "socks5://127.0.0.1:9"]}
    bare = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"],
                          capture_output=True, text=True, timeout=60, check=True)
    site = _importtime_modules(bare.stderr)   # this Python's own site hooks
    for what, opts in runs.items():
        quiet = [] if what == "-v" else ["-q"]
        out = subprocess.run(
            [sys.executable, "-X", "importtime", str(BIN / "socksify"), *quiet, *opts,
             "--", "true"],
            capture_output=True, text=True, timeout=60, env=daemon)
        assert out.returncode == 0, out.stderr[-2000:]
        found = _importtime_modules(out.stderr) - site
        assert "socksify.cli" in found and "socksify.controlconn" in found, what
        assert sorted(found & HEAVY) == [], what


def test_a_bad_via_is_a_usage_error_with_a_daemon_running(daemon: dict[str, str]
                                                         ) -> None:
    """The running daemon refuses the session; the URL is then parsed here, and the
    error is the usage error it always was."""
    out = subprocess.run([str(BIN / "socksify"), "--via", "socks9://x:1", "--", "true"],
                         capture_output=True, text=True, timeout=60, env=daemon)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("usage: socksify") and "bad --via" in out.stderr
    assert not out.stdout


def test_the_fast_exit_keeps_the_status_and_the_messages(daemon: dict[str, str]
                                                         ) -> None:
    """cli.run leaves with os._exit (no interpreter finalization): COMMAND's exit
    status is still the command's, and what socksify wrote to a pipe is all there."""
    via = ["--via", "socks5://127.0.0.1:9"]
    out = subprocess.run([str(BIN / "socksify"), "-q", *via, "--", "sh", "-c", "exit 7"],
                         capture_output=True, text=True, timeout=60, env=daemon)
    assert out.returncode == 7, out.stderr
    out = subprocess.run([str(BIN / "socksify"), "-q", *via, "--", "/nonexistent/cmd"],
                         capture_output=True, text=True, timeout=60, env=daemon)
    assert out.returncode == 127
    assert out.stderr == "socksify: /nonexistent/cmd: command not found\n"
    out = subprocess.run([str(BIN / "socksify"), "-q", *via, "--", "sh", "-c",
                          "kill -TERM $$"], capture_output=True, timeout=60, env=daemon)
    assert out.returncode == 128 + 15


def test_command_starts_as_popen_started_it(daemon: dict[str, str]) -> None:
    """COMMAND is started with posix_spawnp (no subprocess import): like Popen, no
    descriptor past 2 that socksify inherited reaches it, and SIGPIPE is back to its
    default (Python ignores it) so that `socksify cmd | head` ends cmd as usual."""
    r, w = os.pipe()
    try:
        out = subprocess.run(
            [str(BIN / "socksify"), "-q", "--via", "socks5://127.0.0.1:9", "--", "sh",
             "-c", "ls /proc/$$/fd; grep SigIgn /proc/$$/status"],
            capture_output=True, text=True, timeout=60, env=daemon, pass_fds=[w])
    finally:
        os.close(r)
        os.close(w)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    assert str(w) not in lines[:lines.index("SigIgn:")], out.stdout
    ignored = int(lines[lines.index("SigIgn:") + 1], 16)
    assert not ignored & (1 << (13 - 1)), f"SIGPIPE ignored in COMMAND: {ignored:x}"

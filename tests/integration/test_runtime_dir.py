"""Another user's runtime directory, socket or pidfile (security issue 13, item 4).

With XDG_RUNTIME_DIR unset the tools use /tmp/socksify-UID, which anyone can create
first. Real users: an attacker pre-creates the victim's directory (or serves a socket
the victim's directory links to) with a fake daemon that records what it receives and
answers with terminal escape sequences; the victim's socksify and socksifyd must refuse
before sending anything (no proxy password reaches the fake), name the path, and never
signal a pid read from a pidfile. The victim has neither XDG_RUNTIME_DIR nor
SOCKSIFY_RUNTIME_DIR, so /tmp/socksify-UID really is used."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

import lab as lablib
import users as userslib
from conftest import skip_or_fail

SYSTEM_PY = userslib.SYSTEM_PY
SECRET = "S3CRETpw" + os.urandom(4).hex()
EVIL = "\x1b]0;PWNED\x07\x1b[2J"

# A fake daemon: records each connection and its bytes, answers every request with
# ok and escape sequences (pid: the one given, as a pidfile would name it). With
# "refuse" it refuses sessions with an error made of escapes instead.
FAKE_DAEMON = r"""
import json, os, socket, sys
path, record, pid, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
evil = "\x1b]0;PWNED\x07\x1b[2J"
try:
    os.unlink(path)
except FileNotFoundError:
    pass
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
os.chmod(path, 0o777)
s.listen(16)
open(record + ".ready", "w").close()
while True:
    c, _ = s.accept()
    with open(record, "ab") as f:
        f.write(b"<connection>\n")
    c.settimeout(2)
    try:
        data = c.recv(65536)
    except OSError:
        data = b""
    with open(record, "ab") as f:
        f.write(data + b"\n")
    ok = not (mode == "refuse" and b'"session"' in data)
    reply = {"ok": ok, "session": "0011223344556677", "pid": pid, "version": evil,
             "policy": evil, "error": evil, "socket": evil, "sessions": 1}
    try:
        c.sendall(json.dumps(reply).encode() + b"\n"
                  + json.dumps({"event": "connection", "text": evil}).encode() + b"\n")
    except OSError:
        pass
    c.close()
"""


def start_fake(argv_prefix: list[str], sock: Path, record: Path, pid: int,
               mode: str = "accept") -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([*argv_prefix, "-c", FAKE_DAEMON, str(sock), str(record),
                             str(pid), mode], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 15
    while not Path(str(record) + ".ready").exists():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "the fake daemon did not start in 15 s"
        time.sleep(0.05)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


@dataclass
class Strangers:
    attacker: pwd.struct_passwd
    victim: pwd.struct_passwd
    site: Path       # world-readable copy of socksify and its dependencies
    home: Path       # the victim's HOME (0700, the victim's)

    def as_user(self, user: pwd.struct_passwd) -> list[str]:
        return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                "--clear-groups"]

    def env(self) -> dict[str, str]:
        env = lablib.clean_env({"PYTHONPATH": str(self.site), "HOME": str(self.home),
                                "PATH": "/usr/bin:/bin", "SOCKSIFY_LOG": "1"})
        for k in ("XDG_RUNTIME_DIR", "XDG_STATE_HOME", "XDG_CONFIG_HOME"):
            env.pop(k, None)
        return env

    def victim_runs(self, module: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.as_user(self.victim), SYSTEM_PY, "-m", module,
                               *args], env=self.env(), capture_output=True, text=True,
                              timeout=60)

    def victim_spawns(self, *argv: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([*self.as_user(self.victim), *argv], env=self.env())

    def attacker_python(self) -> list[str]:
        return [*self.as_user(self.attacker), SYSTEM_PY]

    def runtime_dir(self) -> Path:
        return Path(f"/tmp/socksify-{self.victim.pw_uid}")


@pytest.fixture
def strangers() -> Iterator[Strangers]:
    """An attacker and a victim (fresh system users), a world-readable copy of the
    installed socksify for the system Python, and cleanup of both users'
    /tmp/socksify-UID."""
    if os.geteuid() != 0:
        skip_or_fail("needs root to create users")
    for tool in ("useradd", "userdel", "setpriv"):
        if shutil.which(tool) is None:
            skip_or_fail(f"{tool} is missing")
    differs = userslib.system_python_differs()
    if differs:
        pytest.skip(f"the other users' programs run under {userslib.SYSTEM_PY}: "
                    f"{differs}")
    top = Path(tempfile.mkdtemp(prefix="skrtdir-"))
    os.chmod(top, 0o755)
    users: list[pwd.struct_passwd] = []
    try:
        userslib.readable_site(top / "site")
        with userslib.system_users("av") as users:
            attacker, victim = users
            home = top / "home"
            home.mkdir(mode=0o700)
            os.chown(home, victim.pw_uid, victim.pw_gid)
            for u in users:   # a deleted user's uid may come back
                shutil.rmtree(f"/tmp/socksify-{u.pw_uid}", ignore_errors=True)
            yield Strangers(attacker, victim, top / "site", home)
    finally:
        for u in users:
            shutil.rmtree(f"/tmp/socksify-{u.pw_uid}", ignore_errors=True)
        shutil.rmtree(top, ignore_errors=True)


def attacker_dir(s: Strangers) -> Path:
    """A directory of the attacker's for the fake daemon's socket and its record."""
    d = Path(tempfile.mkdtemp(prefix="skattack-"))
    os.chmod(d, 0o755)
    os.chown(d, s.attacker.pw_uid, s.attacker.pw_gid)
    return d


def harm(got: bytes, sleeper: subprocess.Popen[bytes],
         results: tuple[subprocess.CompletedProcess[str], ...]) -> list[str]:
    """What the attack achieved: the password at the fake, the victim's sleep killed,
    an exit status other than 1, raw escapes printed."""
    problems = []
    if SECRET.encode() in got:
        problems.append(f"the fake daemon got the password: {got!r}")
    time.sleep(0.3)   # a SIGTERM sent just now has landed by then
    if sleeper.poll() is not None:
        problems.append(f"the victim's unrelated sleep (pid in the pidfile) was "
                        f"killed (status {sleeper.returncode})")
    for res in results:
        if res.returncode != 1:
            problems.append(f"{res.args[-2:]} exited {res.returncode}, not 1")
        if "\x1b" in res.stdout + res.stderr:
            problems.append(f"{res.args[-2:]} printed raw escapes: "
                            f"{res.stdout + res.stderr!r}")
    return problems


def assert_alive(proc: subprocess.Popen[bytes], what: str) -> None:
    time.sleep(0.3)   # a SIGTERM sent just now has landed by then
    assert proc.poll() is None, f"{what} was killed (status {proc.returncode})"


@pytest.mark.lab
def test_a_directory_another_user_made_is_refused(strangers: Strangers) -> None:
    """The attacker makes /tmp/socksify-<victim> 0777 with a fake daemon and a pidfile
    naming the victim's sleep. The victim's socksify --via (with a password),
    socksifyd status and socksifyd stop all refuse, naming the directory; the fake
    received nothing at all; the sleep lives."""
    s = strangers
    rt = s.runtime_dir()
    work = attacker_dir(s)
    record = work / "record"
    sleeper = s.victim_spawns("sleep", "120")
    fake = None
    try:
        r = subprocess.run([*s.attacker_python(), "-c",
                            f"import os; os.mkdir({str(rt)!r}); "
                            f"os.chmod({str(rt)!r}, 0o777); "
                            f"open({str(rt / 'socksifyd.pid')!r}, 'w')"
                            f".write('{sleeper.pid}\\n')"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert rt.lstat().st_uid == s.attacker.pw_uid
        fake = start_fake(s.attacker_python(), rt / "control.sock", record, sleeper.pid)

        run = s.victim_runs("socksify.cli", "--via",
                            f"socks5://user:{SECRET}@127.0.0.1:1", "true")
        status = s.victim_runs("socksify.service", "status")
        stopped = s.victim_runs("socksify.service", "stop")
        got = record.read_bytes() if record.exists() else b""
        problems = harm(got, sleeper, (run, status, stopped))
        if got:
            problems.append(f"the fake daemon was contacted: {got!r}")
        for res in (run, status, stopped):
            if str(rt) not in res.stderr or \
                    f"owned by uid {s.attacker.pw_uid}" not in res.stderr:
                problems.append(f"{res.args[-2:]}: no refusal naming {rt}: "
                                f"{res.stderr!r}")
        assert not problems, "\n".join(problems)
    finally:
        if fake is not None:
            stop(fake)
        stop(sleeper)
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.lab
def test_a_socket_served_by_another_uid_is_refused(strangers: Strangers) -> None:
    """The victim's own 0700 /tmp/socksify-<victim> whose control.sock is a symlink to
    the attacker's socket (so the directory check passes): SO_PEERCRED shows the
    attacker's uid, and nothing is sent, by the tools nor by the shim in the victim's
    program (which would send its request and its socket). socksifyd stop, with the victim's pidfile
    naming the victim's sleep, signals nothing."""
    s = strangers
    rt = s.runtime_dir()
    work = attacker_dir(s)
    record = work / "record"
    sleeper = s.victim_spawns("sleep", "120")
    fake = None
    try:
        fake = start_fake(s.attacker_python(), work / "fake.sock", record, sleeper.pid)
        r = subprocess.run([*s.as_user(s.victim), "sh", "-c",
                            f"umask 077 && mkdir {rt} && ln -s {work}/fake.sock "
                            f"{rt}/control.sock && echo {sleeper.pid} > "
                            f"{rt}/socksifyd.pid"], env=s.env(), capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        run = s.victim_runs("socksify.cli", "--via",
                            f"socks5://user:{SECRET}@127.0.0.1:1", "true")
        status = s.victim_runs("socksify.service", "status")
        stopped = s.victim_runs("socksify.service", "stop")
        shimmed = shimmed_connect(s)
        got = record.read_bytes() if record.exists() else b""
        problems = harm(got, sleeper, (run, status, stopped))
        if shimmed:
            problems.append(shimmed)
        # it sees the connections (that is how its uid is learnt), but not one byte
        if not set(got.split(b"\n")) <= {b"<connection>", b""}:
            problems.append(f"the fake daemon received bytes: {got!r}")
        for res in (run, status, stopped):
            if f"runs as uid {s.attacker.pw_uid}" not in res.stderr or \
                    str(rt / "control.sock") not in res.stderr:
                problems.append(f"{res.args[-2:]}: no refusal naming the peer's uid: "
                                f"{res.stderr!r}")
        assert not problems, "\n".join(problems)
    finally:
        if fake is not None:
            stop(fake)
        stop(sleeper)
        shutil.rmtree(work, ignore_errors=True)


CONNECT = """
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10).close()
    print("connected")
except OSError as exc:
    print("refused", exc.errno)
"""


def shimmed_connect(s: Strangers) -> str:
    """The victim's program with the shim (SOCKSIFY_PROXY_LOOPBACK: the daemon is asked
    even for loopback) connects to a listener: it must fail closed, and the listener
    see nothing. Returns what went wrong, or ""."""
    target = socket.create_server(("127.0.0.1", 0))
    target.settimeout(0.2)
    try:
        env = {**s.env(), "SOCKSIFY_PROXY_LOOPBACK": "1",
               "LD_PRELOAD": str(s.site / "socksify" / "_shim" / "libsocksify.so")}
        res = subprocess.run([*s.as_user(s.victim), SYSTEM_PY, "-c", CONNECT,
                              str(target.getsockname()[1])], env=env,
                             capture_output=True, text=True, timeout=60)
        try:
            target.accept()[0].close()
            return f"the shimmed program reached its target: {res.stdout!r}"
        except OSError:
            pass
        if "refused" not in res.stdout:
            return f"the shimmed program did not fail closed: {res.stdout!r} " \
                f"{res.stderr!r}"
        if f"runs as uid {s.attacker.pw_uid}" not in res.stderr:
            return f"the shim did not refuse the peer: {res.stdout!r} {res.stderr!r}"
        return ""
    finally:
        target.close()


def _own_env(rt: Path) -> dict[str, str]:
    env = lablib.clean_env({"SOCKSIFY_RUNTIME_DIR": str(rt), "HOME": str(rt),
                            "XDG_STATE_HOME": str(rt / "state")})
    env.pop("XDG_RUNTIME_DIR", None)
    return env


def _socksifyd(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "socksify.service", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_stop_signals_no_pid_from_the_pidfile(tmp_path: Path) -> None:
    """A real daemon of our own whose pidfile names another process of ours (a stale
    pidfile, a recycled pid): socksifyd stop stops the daemon and leaves that process
    alone."""
    rt = tmp_path / "rt"
    rt.mkdir(mode=0o700)
    env = _own_env(rt)
    started = _socksifyd(env, "start")
    assert started.returncode == 0, started.stderr
    daemon_pid = int(started.stdout.split("pid ")[1].split(")")[0])
    sleeper = subprocess.Popen(["sleep", "120"])
    try:
        (rt / "socksifyd.pid").write_text(f"{sleeper.pid}\n")
        stopped = _socksifyd(env, "stop")
        assert_alive(sleeper, "the sleep named by the pidfile")
        assert stopped.returncode == 0, stopped.stderr
        assert f"stopped (pid {daemon_pid})" in stopped.stdout
        deadline = time.monotonic() + 10
        while Path(f"/proc/{daemon_pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not Path(f"/proc/{daemon_pid}").exists() or \
            Path(f"/proc/{daemon_pid}/stat").read_text().split(") ")[1][0] == "Z"
    finally:
        stop(sleeper)
        try:
            os.kill(daemon_pid, signal.SIGKILL)   # the daemon this test started
        except ProcessLookupError:
            pass


def test_replies_reach_the_terminal_escaped(tmp_path: Path) -> None:
    """A daemon of our own uid (so every check passes) answering with escape sequences:
    socksifyd status, and socksify's refused session, show them as visible escapes."""
    rt = tmp_path / "rt"
    rt.mkdir(mode=0o700)
    env = _own_env(rt)
    fake = start_fake([sys.executable], rt / "control.sock", tmp_path / "record", 1,
                      "refuse")
    try:
        status = _socksifyd(env, "status")
        run = subprocess.run([sys.executable, "-m", "socksify.cli", "--via",
                              "socks5://127.0.0.1:1", "true"], env=env,
                             capture_output=True, text=True, timeout=60)
    finally:
        stop(fake)
    escaped = "\\x1b]0;PWNED\\x07\\x1b[2J"
    assert status.returncode == 0, status.stderr
    assert "\x1b" not in status.stdout and "\x07" not in status.stdout
    assert escaped in status.stdout, status.stdout
    assert run.returncode == 2, (run.stdout, run.stderr)
    assert "\x1b" not in run.stderr and f"socksify: {escaped}" in run.stderr, run.stderr

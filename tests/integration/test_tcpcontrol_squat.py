"""The TCP control listener (SOCKSIFY_TCP_CONTROL=1) against a squatter: after the
owner's daemon is killed with -9, its control.tcp is left behind, and another real
user listens on the port it names (tests/integration/squatter.py). The owner's
client, the same code `socksifyd status` and the launcher run on Windows
(client.connect_tcp), must refuse with a clear message, and the squatter must receive
neither the key nor a request: only a hello (magic and a random nonce). A daemon
whose start fails leaves no control.tcp behind. And another user's process that has
the key is still refused, by the owner of its TCP socket."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import sys
from pathlib import Path
from typing import Iterator

import pytest

import lab as lablib
import users as userslib
from conftest import Background, Socksify

pytestmark = pytest.mark.lab

SQUATTER = Path(__file__).resolve().parent / "squatter.py"
OWNER_CLIENT = """\
import json, sys
from pathlib import Path
from socksify import client
try:
    sock = client.connect_tcp(Path(sys.argv[1]))
except client.DaemonUnavailable as exc:
    print("REFUSED", exc)
    sys.exit(3)
client.send(sock, {"op": "status"})
print("ANSWER", json.dumps(client.read_message(sock.makefile("rb"))))
"""


@pytest.fixture
def other_user() -> Iterator[pwd.struct_passwd]:
    """A fresh system user (no home, no shell), deleted afterwards."""
    for tool in ("useradd", "userdel", "setpriv"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not found")
    with userslib.system_users("q") as (user,):
        yield user


def start_tcp_daemon(sk: Socksify) -> tuple[int, bytes]:
    """sk's daemon with the TCP control listener: (its port, its key)."""
    from socksify import controlfile
    sk.env["SOCKSIFY_TCP_CONTROL"] = "1"
    res = sk.socksifyd("start")
    assert res.returncode == 0, sk.describe(res)
    path = sk.runtime_dir / "control.tcp"
    lablib.wait_until(path.exists, 10, "control.tcp")
    return controlfile.parse_line(path.read_text())


def kill_9(sk: Socksify) -> None:
    pid = sk.daemon_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    lablib.wait_until(lambda: not Path(f"/proc/{pid}").exists()
                      or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[-1][:3],
                      10, "the daemon's death")


def squat(sk: Socksify, user: pwd.struct_passwd, port: int) -> Background:
    """squatter.py as `user` in the client zone on 127.0.0.1:port, once listening (its
    code given with -c: no file the user must be able to read)."""
    bg = sk.spawn(["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                   "--clear-groups", "env", "-i", "PATH=/usr/bin:/bin",
                   "/usr/bin/python3", "-c", SQUATTER.read_text(), str(port)])
    lablib.wait_until(lambda: "LISTENING" in bg.result().stdout or not bg.running(), 20,
                      "the squatter listening")
    assert bg.running(), bg.result().describe()
    return bg


def received(bg: Background) -> list[bytes]:
    res = bg.result()
    return [bytes.fromhex(json.loads(line)["got"]) for line in res.stdout.splitlines()
            if line.startswith("{")]


def test_owner_refuses_a_squatter_on_a_stale_port(lab: lablib.Lab, sk: Socksify,
                                                   other_user: pwd.struct_passwd) -> None:
    port, key = start_tcp_daemon(sk)
    kill_9(sk)
    stale = sk.runtime_dir / "control.tcp"
    assert stale.exists()              # a crash cannot remove it: the readers must cope
    bg = squat(sk, other_user, port)
    res = lab.client_run([sys.executable, "-c", OWNER_CLIENT, str(stale)], env=sk.env,
                         timeout=60)
    bg.kill()
    got = received(bg)
    assert res.returncode == 3 and "REFUSED" in res.stdout \
        and "not this user's socksify daemon" in res.stdout, \
        f"the owner's client accepted the squatter\n{res.describe()}\nsquatter got {got}"
    assert len(got) == 1, got
    print(f"the squatter received {len(got[0])} bytes: {got[0].hex()}")
    assert len(got[0]) == 20 and got[0][:4] == b"SKTC", got
    assert key not in got[0] and key.hex().encode() not in got[0]
    assert b"status" not in got[0]


def test_failed_start_leaves_no_control_file(lab: lablib.Lab, sk: Socksify) -> None:
    """A stale control.tcp (a crashed daemon's) and a start that fails after the TCP
    control listener is up (the front door's port is taken): afterwards there is no
    control.tcp at all, so a reader fails closed at once."""
    sk.env["SOCKSIFY_TCP_CONTROL"] = "1"
    stale = sk.runtime_dir / "control.tcp"
    stale.write_text(f"tcp 127.0.0.1:9 {'00' * 16}\n")
    stale.chmod(0o600)
    holder = sk.spawn([sys.executable, "-c", "import socket, sys, time\n"
                       "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)\n"
                       "print(s.getsockname()[1], flush=True); time.sleep(120)"])
    lablib.wait_until(lambda: holder.result().stdout.strip(), 20, "the port holder")
    taken = int(holder.result().stdout.split()[0])
    res = sk.socksifyd("run", "--socks", f"127.0.0.1:{taken}", timeout=60)
    holder.kill()
    assert res.returncode != 0 and "already in use" in res.stderr, sk.describe(res)
    assert not stale.exists(), \
        f"control.tcp survived a failed start: {stale.read_text()!r}\n{sk.describe(res)}"
    assert not list(sk.runtime_dir.glob(".control.tcp.*"))


OTHER_CLIENT = """\
import hashlib, hmac, os, socket, sys
port, key = int(sys.argv[1]), bytes.fromhex(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port), 10)
s.settimeout(10)
nc = os.urandom(16)
s.sendall(b"SKTC" + nc)
answer = b""
while len(answer) < 48:
    chunk = s.recv(48 - len(answer))
    if not chunk:
        break
    answer += chunk
nd = answer[:16]
ok = hmac.compare_digest(answer[16:], hmac.new(
    key, b"socksify tcp control v1 daemon" + nc + nd, hashlib.sha256).digest())
print("DAEMON-PROVED", ok, flush=True)
s.sendall(hmac.new(key, b"socksify tcp control v1 client" + nd + nc, hashlib.sha256)
          .digest() + b'{"op": "status"}\\n')
print("REPLY", repr(s.recv(4096)), flush=True)
"""


def test_daemon_refuses_another_users_process(lab: lablib.Lab, sk: Socksify,
                                              other_user: pwd.struct_passwd) -> None:
    """Another user's process that holds the key (a leaked control file) completes
    the handshake, but the daemon sees from the TCP table whose process it is and
    closes the connection without an answer."""
    port, key = start_tcp_daemon(sk)
    res = lab.client_run(["setpriv", f"--reuid={other_user.pw_uid}",
                          f"--regid={other_user.pw_gid}", "--clear-groups", "env", "-i",
                          "PATH=/usr/bin:/bin", "/usr/bin/python3", "-c", OTHER_CLIENT,
                          str(port), key.hex()], env=sk.env, timeout=60)
    assert "DAEMON-PROVED True" in res.stdout and "REPLY b''" in res.stdout, \
        sk.describe(res)
    assert "of another user" in sk.daemon_log(), sk.daemon_log()

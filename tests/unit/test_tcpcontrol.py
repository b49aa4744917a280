"""The loopback TCP control listener's file (controlfile.py) that Windows programs use, and
the Windows launcher's pure helpers (winlaunch.py)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from socksify import client, controlfile, winlaunch
from socksify.protocol import control as wire
from socksify.protocol import tcpauth


def test_control_line_round_trip() -> None:
    secret = bytes(range(16))
    line = controlfile.format_line(40123, secret)
    assert line == f"tcp 127.0.0.1:40123 {secret.hex()}\n"
    assert controlfile.parse_line(line) == (40123, secret)


@pytest.mark.parametrize("text", ["", "tcp 127.0.0.1:0 " + "00" * 16,
                                  "tcp 10.0.0.1:80 " + "00" * 16,
                                  "tcp 127.0.0.1:80 abcd", "udp 127.0.0.1:80 " + "00" * 16])
def test_control_line_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        controlfile.parse_line(text)


def test_wanted_only_when_asked() -> None:
    if sys.platform != "win32":
        assert not controlfile.wanted({})
    assert controlfile.wanted({"SOCKSIFY_TCP_CONTROL": "1"})


def test_launcher_paths() -> None:
    env = {"SOCKSIFY_RUNTIME_DIR": "/r"}
    assert winlaunch.control_file(env) == Path("/r/control.tcp")
    assert winlaunch.control_file({**env, "SOCKSIFY_CONTROL_FILE": "/x/c"}) == Path("/x/c")
    assert winlaunch.dll_path({"SOCKSIFY_DLL": "/d.dll"}) == Path("/d.dll")
    assert winlaunch.dll_path({}).name == "socksify.dll"


def test_env_block_is_sorted_and_double_nul_terminated() -> None:
    assert winlaunch.env_block({"b": "2", "A": "1"}) == "A=1\0b=2\0\0"


def test_daemon_serves_json_and_wire_after_the_proof() -> None:
    """A real socksifyd with SOCKSIFY_TCP_CONTROL=1: the file is 0600; the old way
    (the raw key first) and a wrong client proof are closed without a request read;
    a client that checked the daemon's proof and gave its own gets JSON status and a
    v1 RESOLVE answered; the file goes away at stop."""
    rt = Path(tempfile.mkdtemp(prefix="sktcp-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKSIFY_")}
    env.update(SOCKSIFY_RUNTIME_DIR=str(rt), SOCKSIFY_TCP_CONTROL="1",
               XDG_CONFIG_HOME=str(rt / "cfg"))
    proc = subprocess.Popen([sys.executable, "-m", "socksify.service", "run"], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    path = rt / controlfile.FILE_NAME
    try:
        deadline = time.monotonic() + 30
        while not path.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "no control.tcp"
            time.sleep(0.05)
        assert path.stat().st_mode & 0o777 == 0o600
        port, key = controlfile.parse_line(path.read_text())
        with socket.create_connection(("127.0.0.1", port), 5) as s:
            s.settimeout(10)
            s.sendall(key + b'{"op": "status"}\n')
            assert s.recv(100) == b""           # closed: not a hello
        with socket.create_connection(("127.0.0.1", port), 5) as s:
            s.settimeout(10)
            nc = bytes(range(16))
            s.sendall(tcpauth.hello(nc))
            answer = s.makefile("rb").read(tcpauth.ANSWER_SIZE)
            nd = tcpauth.check_answer(key, nc, answer)   # the daemon proved itself
            s.sendall(tcpauth.proof(bytes(16), nc, nd) + b'{"op": "status"}\n')
            assert s.recv(100) == b""           # closed: wrong proof
        for send in (b'{"op": "status"}\n',
                     wire.ResolveRequest("example.org", 0, bytes(8)).dumps()):
            with client.connect_tcp(path) as s:
                s.sendall(send)
                if send.startswith(b"{"):
                    reply = json.loads(s.makefile("rb").readline())
                    assert reply["ok"] and reply["pid"] == proc.pid
                else:
                    head = s.makefile("rb").read(wire.REPLY_SIZE)
                    # no policy and no session: refused, as on the Unix socket
                    assert wire.Reply.loads(head).verdict is wire.Verdict.FAIL
        # the live table and the event stream over the TCP control (Windows' only
        # control): the stream ends when the daemon stops
        with client.connect_tcp(path) as s:
            s.sendall(b'{"op": "connections", "app": "curl", "chain": "c"}\n')
            reply = json.loads(s.makefile("rb").readline())
            assert reply["ok"] and reply["connections"] == [], reply
            assert isinstance(reply["now"], float)
        events = client.connect_tcp(path)
        events.sendall(b'{"op": "events"}\n')
        stream = events.makefile("rb")
        assert json.loads(stream.readline())["ok"]
        proc.terminate()
        proc.wait(30)
        assert not path.exists()
        events.settimeout(10)
        assert stream.readline() == b""          # ended, not hung
        events.close()
    finally:
        proc.kill()
        proc.wait(30)
        shutil.rmtree(rt, ignore_errors=True)


def test_client_refuses_a_listener_without_the_key(tmp_path: Path) -> None:
    """A listener on the control file's port that does not hold the key (another
    user's, on a dead daemon's port): connect_tcp refuses it, and all it received is
    the 20-byte hello, never the key."""
    key = bytes(range(16))
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        path = tmp_path / "control.tcp"
        path.write_text(controlfile.format_line(port, key))
        got = bytearray()

        def squat() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(5)
                got.extend(conn.recv(100))
                conn.sendall(bytes(tcpauth.ANSWER_SIZE))   # a guess
                try:
                    while chunk := conn.recv(100):
                        got.extend(chunk)
                except OSError:
                    pass

        t = threading.Thread(target=squat)
        t.start()
        with pytest.raises(client.DaemonUnavailable, match="not this user's socksify"):
            client.connect_tcp(path)
        t.join(10)
    assert len(got) == tcpauth.HELLO_SIZE and got.startswith(tcpauth.MAGIC)
    assert key not in bytes(got) and key.hex().encode() not in bytes(got)


def test_windows_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """On Windows the runtime, state and control file live in %LOCALAPPDATA%\\socksify
    unless SOCKSIFY_RUNTIME_DIR says otherwise; SOCKSIFY_CONTROL_FILE overrides the
    control file (a daemon elsewhere)."""
    from socksify.paths import Paths
    monkeypatch.setattr(sys, "platform", "win32")
    paths = Paths.from_env({"LOCALAPPDATA": "/lad"})
    assert paths.runtime_dir == Path("/lad/socksify")
    assert paths.logfile.parent == paths.runtime_dir
    assert client.control_file(paths, {}) == Path("/lad/socksify/control.tcp")
    assert client.control_file(paths, {"SOCKSIFY_CONTROL_FILE": "/x/c"}) == Path("/x/c")
    assert Paths.from_env({"SOCKSIFY_RUNTIME_DIR": "/r"}).pidfile == Path("/r/socksifyd.pid")
    assert client.daemon_command()[1] == "-c"   # an embeddable Python ignores PYTHONPATH


# What Windows' socket module lacks of Linux's (ancillary data, peer credentials).
# The Windows daemon imports the same listener modules as Linux's; a module-level use
# of one of these stopped it at start-up under Wine (stop 25's CMSG_LEN), which only
# the slow Wine lane saw.
_NOT_ON_WINDOWS = ("CMSG_LEN", "CMSG_SPACE", "SCM_RIGHTS", "SCM_CREDENTIALS",
                   "SO_PEERCRED", "SO_PASSCRED", "MSG_CMSG_CLOEXEC")


@pytest.mark.parametrize("module", ["socksify.service", "socksify.daemon",
                                    "socksify.cli", "socksify.winlaunch"])
def test_windows_entry_points_import_without_unix_socket_names(module: str) -> None:
    code = ("import importlib, socket, sys\n"
            f"for name in {_NOT_ON_WINDOWS!r}:\n"
            "    if hasattr(socket, name): delattr(socket, name)\n"
            f"importlib.import_module({module!r})\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr

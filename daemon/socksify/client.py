"""The command-line side of the control socket: JSON requests to a running daemon,
and starting one in the background when none answers. On Windows the daemon is
reached through its loopback TCP control listener (listeners/tcpcontrol.py)."""

from __future__ import annotations

import json
import os
import socket
import sys
import time

# typing and pathlib are not imported at run time (they cost `socksify CMD` its
# start-up): for the type checker only, which reads any `if TYPE_CHECKING:` block.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

from . import controlconn
from .controlconn import DaemonUnavailable as DaemonUnavailable  # re-exported
from .controlconn import UnsafeDaemon as UnsafeDaemon
from .controlconn import check_peer as check_peer
from .paths import Paths, UnsafeRuntimeDir
from .peercred import peer_credentials
from .printable import printable

# The TCP control (controlfile, protocol/tcpauth: hashlib, hmac, secrets, logging) is
# imported where it is used, on Windows or for a control file: `socksify CMD` on Linux
# takes this module's Unix socket path only, and its start-up pays for what it imports.

# How long a starting daemon may take to answer (the wait ends at once if it exits). It
# answers within a second on an idle machine; a Windows Python under Wine on a loaded
# 2-core machine has taken over 30 s (its start-up and imports), and giving up there
# failed a command that would have run.
START_TIMEOUT = 60.0
# DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP
WINDOWS_DETACHED = 0x00000008 | 0x00000200


def control_file(paths: Paths, env: dict[str, str] | None = None) -> Path:
    """The TCP control file to use: %SOCKSIFY_CONTROL_FILE% (a daemon elsewhere, such
    as a Linux daemon serving Windows programs under Wine), else the daemon's own,
    control.tcp in the runtime directory."""
    from pathlib import Path

    from . import controlfile
    env = dict(os.environ) if env is None else env
    if env.get("SOCKSIFY_CONTROL_FILE"):
        return Path(env["SOCKSIFY_CONTROL_FILE"])
    return controlfile.file_path(paths)


def connect_tcp(path: Path, timeout: float = 5.0) -> socket.socket:
    """A connection to the TCP control listener that control file `path` names, the
    listener proven to hold the file's key and we proven to it (protocol/tcpauth.py).
    Anything else, such as another user's listener on a dead daemon's port, is
    DaemonUnavailable: it got a random nonce from us and nothing more."""
    import secrets

    from . import controlfile
    from .protocol import tcpauth
    try:
        port, key = controlfile.parse_line(path.read_text())
    except (OSError, ValueError) as exc:
        raise DaemonUnavailable(f"cannot read the daemon's control file {path} "
                                f"({exc})") from None
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout)
    except OSError as exc:
        raise DaemonUnavailable(f"nothing answers on 127.0.0.1:{port} (from {path}): "
                                f"{exc}") from None
    try:
        sock.settimeout(min(timeout, controlfile.PROOF_TIMEOUT))
        nc = secrets.token_bytes(tcpauth.NONCE_SIZE)
        sock.sendall(tcpauth.hello(nc))
        nd = tcpauth.check_answer(key, nc, _recv_exactly(sock, tcpauth.ANSWER_SIZE))
        sock.sendall(tcpauth.proof(key, nc, nd))
        sock.settimeout(timeout)
    except tcpauth.ProofError as exc:
        sock.close()
        raise DaemonUnavailable(
            f"the listener on 127.0.0.1:{port} (from {path}) is not this user's "
            f"socksify daemon ({exc}): a stale control file? refused") from None
    except OSError as exc:
        sock.close()
        raise DaemonUnavailable(f"the daemon at 127.0.0.1:{port} (from {path}) did not "
                                f"complete the handshake: {exc}") from None
    return sock


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    from .protocol import tcpauth
    buf = b""
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            raise tcpauth.ProofError(f"closed after {len(buf)} of {size} bytes")
        buf += chunk
    return buf


def connect(paths: Paths, timeout: float = 5.0) -> socket.socket:
    """A connection to the daemon, checked before a byte is sent: on Linux the
    socket's directory must be ours (paths.check_private_dir) and the process that
    accepted must run as our uid or root (check_peer), as controlconn.connect checks
    it for the command. UnsafeDaemon otherwise."""
    if sys.platform == "win32":
        return connect_tcp(control_file(paths), timeout)
    return controlconn.connect(paths, timeout, socket.socket)


def daemon_pid(paths: Paths) -> int | None:
    """The pid of the daemon answering on the checked control socket, as the kernel
    and the daemon both report it (None when no daemon answers, or when they
    disagree). Never read from the pidfile alone."""
    try:
        reply, peer = exchange(paths, {"op": "status"}, timeout=2.0)
    except (DaemonUnavailable, OSError, ValueError):
        return None
    pid = reply.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or not reply.get("ok") \
            or (peer is not None and pid != peer):
        return None
    return pid


def send(sock: socket.socket, obj: dict[str, Any]) -> None:
    sock.sendall(json.dumps(obj).encode() + b"\n")


def read_message(stream: Any) -> dict[str, Any]:
    line = stream.readline()
    if not line:
        raise DaemonUnavailable("the daemon closed the control connection")
    msg: dict[str, Any] = json.loads(line)
    return msg


def request(paths: Paths, obj: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """One request, one reply."""
    return exchange(paths, obj, timeout)[0]


def exchange(paths: Paths, obj: dict[str, Any],
             timeout: float = 5.0) -> tuple[dict[str, Any], int | None]:
    """One request, one reply, and the pid of the process that answered as the kernel
    reports it (None on Windows, where the TCP listener's secret is the check)."""
    with connect(paths, timeout) as sock, sock.makefile("rb") as stream:
        peer = None if sys.platform == "win32" else peer_credentials(sock)[0]
        send(sock, obj)
        return read_message(stream), peer


def is_running(paths: Paths) -> bool:
    """Does a daemon answer? UnsafeDaemon (a directory or a daemon that is not ours)
    is raised, not taken for "no": starting another daemon would not make it safe."""
    try:
        return bool(request(paths, {"op": "status"}, timeout=2.0).get("ok"))
    except (DaemonUnavailable, OSError, ValueError):
        return False


def start_daemon(paths: Paths, config: Path | None = None,
                 extra: list[str] | None = None) -> int:
    """Start `socksifyd run` detached, logging to paths.logfile; wait until it answers.
    Returns its pid. Another daemon winning a start race is fine: it answers too."""
    import subprocess
    try:
        paths.ensure_dirs()
    except UnsafeRuntimeDir as exc:
        raise UnsafeDaemon(str(exc)) from None
    env = {k: v for k, v in os.environ.items() if not k.startswith("LD_PRELOAD")}
    cmd = [*daemon_command(), "run"]
    if config is not None:
        cmd += ["-c", str(config)]
    cmd += extra or []
    # detached: no console (Windows) or session (Linux) whose end or Ctrl+C reaches it
    detach: dict[str, Any] = {"creationflags": WINDOWS_DETACHED} \
        if sys.platform == "win32" else {"start_new_session": True}
    # 0600: the log names every user's destinations and host names, and a root
    # daemon serving other users keeps it in a directory they may traverse (0711)
    fd = os.open(paths.logfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                 | getattr(os, "O_BINARY", 0), 0o600)
    if sys.platform != "win32":
        os.fchmod(fd, 0o600)
    with open(fd, "ab") as log, open(os.devnull, "rb") as null:
        proc = subprocess.Popen(cmd, stdin=null, stdout=log, stderr=log, env=env,
                                close_fds=True, **detach)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if is_running(paths):
            return proc.pid
        if proc.poll() is not None and not is_running(paths):
            raise DaemonUnavailable(
                f"socksifyd exited with status {proc.returncode} while starting; "
                f"last lines of {paths.logfile}:\n{tail(paths.logfile)}")
        time.sleep(0.05)
    proc.kill()
    raise DaemonUnavailable(f"socksifyd did not answer within {START_TIMEOUT:.0f}s; "
                            f"see {paths.logfile}")


def daemon_command() -> list[str]:
    """How to run this socksifyd: `python -m socksify.service`; on Windows with this
    package's directory put first on the path, since an embeddable Python ignores
    PYTHONPATH and must still find the same socksify as the command starting it."""
    if sys.platform != "win32":
        return [sys.executable, "-m", "socksify.service"]
    from pathlib import Path
    top = str(Path(__file__).resolve().parent.parent)
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {top!r}); "
            "from socksify.service import main; sys.exit(main())"]


def tail(path: Path, lines: int = 5) -> str:
    try:
        return "\n".join(printable(line) for line in
                         path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"

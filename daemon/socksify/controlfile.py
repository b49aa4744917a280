"""The control file of the loopback TCP control listener (listeners/tcpcontrol.py):
where programs that cannot reach the Unix control socket -- Windows programs (the
injected DLL and the Windows launcher), natively or under Wine (docs/windows.md) --
find the daemon. Written by the daemon, read by the command line tools (client.py).

The listener is on 127.0.0.1 (kernel-chosen port) and is guarded by a per-daemon
random key: the port and the key are written to `control.tcp` in the runtime
directory (mode 0600, inside the 0700 directory), one line:

    tcp 127.0.0.1:PORT KEYHEX

Enabled when the daemon runs on Windows, or when SOCKSIFY_TCP_CONTROL=1 (a Linux
daemon serving Windows programs under Wine). The file is written once every listener
is up, and removed at shutdown and when the start fails.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from .paths import Paths
from .protocol import tcpauth

log = logging.getLogger("socksify.tcpcontrol")

FILE_NAME = "control.tcp"
SECRET_SIZE = tcpauth.KEY_SIZE
PROOF_TIMEOUT = 5.0        # hello to proof, both ways


def wanted(env: dict[str, str] | None = None) -> bool:
    env = dict(os.environ) if env is None else env
    return sys.platform == "win32" or env.get("SOCKSIFY_TCP_CONTROL", "") == "1"


def file_path(paths: Paths) -> Path:
    """control.tcp beside the control socket."""
    return paths.socket.with_name(FILE_NAME)


def format_line(port: int, secret: bytes) -> str:
    return f"tcp 127.0.0.1:{port} {secret.hex()}\n"


def parse_line(text: str) -> tuple[int, bytes]:
    """(port, secret) from a control file's line; ValueError if it is not one."""
    parts = text.split()
    if len(parts) != 3 or parts[0] != "tcp" or not parts[1].startswith("127.0.0.1:"):
        raise ValueError(f"not a socksify control file line: {text[:80]!r}")
    port = int(parts[1].split(":", 1)[1])
    secret = bytes.fromhex(parts[2])
    if not 0 < port < 65536 or len(secret) != SECRET_SIZE:
        raise ValueError(f"bad port or secret in control file line: {text[:80]!r}")
    return port, secret


def publish(paths: Paths, port: int, secret: bytes) -> None:
    """Write control.tcp (0600, through a temporary file and a rename) naming the
    listener's port and its key. On Windows the file and its directory first get an
    ACL for the user only (winacl.py)."""
    path = file_path(paths)
    tmp = path.with_name(f".{FILE_NAME}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if sys.platform == "win32":   # modes mean nothing there: an owner-only ACL
            from . import winacl
            winacl.restrict_to_owner(path.parent)
            winacl.restrict_to_owner(tmp)
        os.write(fd, format_line(port, secret).encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
    log.info("TCP control on 127.0.0.1:%d (key in %s)", port, path)


def forget(paths: Paths) -> None:
    """Remove control.tcp and our temporary copy (shutdown, a failed start): a client
    then fails closed at once. Called only by the daemon holding the pidfile lock, so
    never on another live daemon's file."""
    for p in (file_path(paths), file_path(paths).with_name(f".{FILE_NAME}.{os.getpid()}")):
        try:
            p.unlink()
        except FileNotFoundError:
            pass

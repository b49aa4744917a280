"""Who is asking: the process behind a control connection, from the kernel's word
(SO_PEERCRED), described with psutil."""

from __future__ import annotations

import socket
import struct

import psutil

_UCRED = struct.Struct("iII")  # pid, uid, gid


def peer_credentials(sock: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a Unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, _gid = _UCRED.unpack(raw)
    return pid, uid


def app_name(pid: int) -> str:
    """'name[pid]' for logs and -v lines; the pid alone if the process is gone."""
    try:
        return f"{psutil.Process(pid).name()}[{pid}]"
    except (psutil.Error, OSError):
        return f"pid {pid}"

"""The kernel's word on who is at the other end of a Unix socket (SO_PEERCRED). Kept
apart from procinfo.py (which describes processes with psutil) so that the command
line's way to the daemon imports neither psutil nor ctypes."""

from __future__ import annotations

import socket
import struct

_UCRED = struct.Struct("iII")  # pid, uid, gid


def peer_credentials(sock: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a Unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, _gid = _UCRED.unpack(raw)
    return pid, uid

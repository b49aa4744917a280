"""The kernel's word on who is at the other end of a Unix socket (SO_PEERCRED). Kept
apart from procinfo.py (which describes processes with psutil) so that the command
line's way to the daemon imports neither psutil nor ctypes."""

from __future__ import annotations

import _socket   # not socket, which brings enum (`socksify CMD` start-up)
import struct

_UCRED = struct.Struct("iII")  # pid, uid, gid


def peer_credentials(sock: _socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a Unix socket (a socket.socket or
    the bare _socket.socket the command uses)."""
    raw = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, _UCRED.size)
    pid, uid, _gid = _UCRED.unpack(raw)
    return pid, uid

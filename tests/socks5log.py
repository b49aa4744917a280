"""A SOCKS5 hop for the lab's proxy zone that logs the user name and password of each
tunnel (what Tor's IsolateSOCKSAuth keys circuits on), then relays the bytes."""

from __future__ import annotations

import socket
import struct
import threading

import lab as lablib
from lab import recv_exact, recv_socks5_greeting, recv_socks5_request


class UserLoggingSocks5(lablib._Server):
    """A SOCKS5 hop (CONNECT to IPv4 only) that takes user/password when offered,
    records (user, password, target) per tunnel and relays the bytes."""

    def __init__(self, the_lab: lablib.Lab) -> None:
        self.lab = the_lab
        self.tunnels: list[tuple[str, str, str]] = []
        super().__init__(lablib.listener_in(the_lab.proxy_ns), "userlog-socks5")

    @property
    def url(self) -> str:
        return f"socks5://{lablib.PROXY_NEAR_IP}:{self.port}"

    def users(self) -> list[str]:
        with self._lock:
            return [u for u, _, _ in self.tunnels]

    def handle(self, conn: socket.socket, addr: tuple[str, int]) -> None:
        conn.settimeout(30)
        greeting = recv_socks5_greeting(conn)
        user = password = ""
        if 2 in greeting[2:]:
            conn.sendall(b"\x05\x02")
            head = recv_exact(conn, 2)
            user = recv_exact(conn, head[1]).decode()
            password = recv_exact(conn, recv_exact(conn, 1)[0]).decode()
            conn.sendall(b"\x01\x00")
        else:
            conn.sendall(b"\x05\x00")
        req = recv_socks5_request(conn)
        assert req[1] == 1 and req[3] == 1, req
        host = socket.inet_ntoa(req[4:8])
        port = struct.unpack("!H", req[8:10])[0]
        out = lablib.socket_in(self.lab.proxy_ns)
        out.settimeout(30)
        try:
            out.connect((host, port))
            with self._lock:
                self.tunnels.append((user, password, f"{host}:{port}"))
            conn.sendall(b"\x05\x00\x00\x01" + bytes(4) + bytes(2))
            pump = threading.Thread(target=_pump, args=(out, conn), daemon=True)
            pump.start()
            _pump(conn, out)
            pump.join(30)
        finally:
            out.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass

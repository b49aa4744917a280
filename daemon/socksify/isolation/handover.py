"""The launcher's side of the handover: the sockets through which the isolated
namespace reaches the daemon, bound inside the namespace by this process and passed,
as file descriptors (SCM_RIGHTS), to the daemon's relay.sock with a header saying
which is which (protocol/handover.py, docs/wire.md):

- the relay listeners, 127.0.0.1 and [::1] on the daemon's relay ports, where the
  shim (when it loads into the program) attaches relayed connections;
- the redirect listeners, 127.0.0.1 and [::1] on one port, where the nft rules send
  every other TCP connection;
- the DNS sockets, UDP and TCP on 127.0.0.1 and [::1] on one port, where the rules
  send port 53;
- a sock_diag netlink socket, made here so that it asks this namespace's socket
  table: the daemon finds a redirected connection's socket with one exact lookup;
- when the daemon carries UDP (udp = "chain" in a rule): the UDP carrier sockets,
  127.0.0.1 and [::1] on one port, where the rules send every other datagram, and a
  NETLINK_NETFILTER socket made here (with this process's capabilities in the
  namespace), on which the daemon asks conntrack where each flow was going.

This process keeps no copy: the daemon holds the only ones, so while no daemon serves
them nothing listens on those ports and the program's connections are refused. After
a daemon restart `hand_over()` binds them afresh (the same redirect and DNS ports,
the new daemon's relay ports) and passes them to the new daemon."""

from __future__ import annotations

import errno
import socket

from ..protocol import handover as wire
from ..protocol.control import SESSION_SIZE
from . import conntrack

HANDOVER_TIMEOUT = 10.0
CLOSE_WAIT = 2.0
NETLINK_SOCK_DIAG = 4


class Bridge:
    def __init__(self, session: str | None = None, udp: bool = False) -> None:
        self.session = bytes.fromhex(session) if session else bytes(SESSION_SIZE)
        self.redirect_port = 0
        self.dns_port = 0
        self.udp = udp           # carry UDP: bind a carrier port, pass conntrack
        self.udp_port = 0
        self._conn: socket.socket | None = None

    def bind_ports(self, taken: tuple[int, int]) -> None:
        """Choose the redirect and DNS ports (free ones, from the kernel, not the
        relay ports `taken`), before the rules that name them are loaded."""
        kinds = [wire.Kind.REDIRECT, wire.Kind.DNS_UDP]
        if self.udp:
            kinds.append(wire.Kind.UDP_CARRIER)
        for kind in kinds:
            held = []
            while True:
                sock = _bind(kind, socket.AF_INET, 0)
                port = int(sock.getsockname()[1])
                held.append(sock)
                if port not in taken and port not in (self.redirect_port,
                                                      self.dns_port):
                    break
            for sock in held:
                sock.close()
            if kind is wire.Kind.REDIRECT:
                self.redirect_port = port
            elif kind is wire.Kind.DNS_UDP:
                self.dns_port = port
            else:
                self.udp_port = port

    def hand_over(self, relay_socket: str, port4: int, port6: int) -> None:
        """Bind every socket and pass them to the daemon at relay_socket; wait for it
        to confirm it serves them. Raises OSError."""
        self.close()
        sockets: list[tuple[wire.Kind, socket.socket]] = []
        try:
            wanted = [(wire.Kind.RELAY, port4, port6),
                      (wire.Kind.REDIRECT, self.redirect_port, self.redirect_port),
                      (wire.Kind.DNS_UDP, self.dns_port, self.dns_port),
                      (wire.Kind.DNS_TCP, self.dns_port, self.dns_port),
                      (wire.Kind.UDP_CARRIER, self.udp_port, self.udp_port)]
            for kind, p4, p6 in wanted:
                if p4 == 0:
                    continue   # not chosen: no such sockets (the first form's bridge)
                sockets.append((kind, _bind(kind, socket.AF_INET, p4)))
                if p6:
                    try:
                        sockets.append((kind, _bind(kind, socket.AF_INET6, p6)))
                    except OSError:
                        pass   # no IPv6 loopback here: IPv6 connections fail, closed
            try:
                sockets.append((wire.Kind.SOCK_DIAG, socket.socket(
                    socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)))
            except OSError:
                pass   # the daemon reads /proc/PID/net/tcp instead
            if self.udp_port:
                # without it the daemon cannot tell where a datagram was going: it
                # drops them all (the carrier's port is redirected all the same)
                try:
                    sockets.append((wire.Kind.CONNTRACK, conntrack.open_socket()))
                except OSError:
                    pass
            header = wire.Header(self.session, tuple(k for k, _ in sockets))
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                conn.settimeout(HANDOVER_TIMEOUT)
                conn.connect(relay_socket)
                socket.send_fds(conn, [header.dumps()], [s.fileno() for _, s in sockets])
                if conn.recv(1) != wire.ACK:
                    raise OSError(errno.ECONNREFUSED, "the daemon refused the isolated "
                                  "namespace's sockets (see its log)")
                conn.settimeout(None)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        finally:
            for _, s in sockets:   # the daemon holds the only copies now
                s.close()

    def close(self) -> None:
        """The daemon closes the sockets when this connection ends (also when this
        process dies). It first carries the connections still waiting to be
        accepted, and closes its end when done: wait for that (briefly), so that the
        session they belong to is still open meanwhile."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.shutdown(socket.SHUT_WR)
            conn.settimeout(CLOSE_WAIT)
            while conn.recv(64):
                pass
        except OSError:
            pass
        finally:
            conn.close()


def _bind(kind: wire.Kind, family: int, port: int) -> socket.socket:
    udp = kind in (wire.Kind.DNS_UDP, wire.Kind.UDP_CARRIER)
    s = socket.socket(family, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    try:
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1" if family == socket.AF_INET else "::1", port))
        if not udp:
            s.listen(512)
    except OSError:
        s.close()
        raise
    return s

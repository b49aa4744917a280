"""The daemon's side of one redirected connection: a TCP connection the isolated
namespace's nft rules sent to a redirect listener. Its original destination comes
from conntrack (SO_ORIGINAL_DST, IP6T_SO_ORIGINAL_DST); its program from the
namespace's socket table (owners.py); then the router decides under the launcher's
session exactly as for a shim's CONNECT -- stand-in addresses mapped back to their
names, per-app rules, chains -- and the daemon builds the route and carries the bytes
with splice (the live table's data path "isolated"). A refusal (a block rule, a
failed chain, an IPv6 target on a SOCKS4 chain) closes the accepted socket with a
reset: the program, whose connect() already succeeded, sees ECONNRESET on its next
read or write (or EOF after a clean close)."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import struct
from dataclasses import dataclass

from ..core.records import Session
from ..core.router import Router
from ..errors import SocksifyError
from ..policy import Policy
from ..procinfo import AppInfo, uid_only
from . import owners

log = logging.getLogger("socksify.daemon")

SO_ORIGINAL_DST = 80          # linux/netfilter_ipv4.h
IP6T_SO_ORIGINAL_DST = 80     # linux/netfilter_ipv6/ip6_tables.h
_LINGER_RESET = struct.pack("ii", 1, 0)
IDENTIFY_TIMEOUT = 2.0


@dataclass(frozen=True)
class Namespace:
    """Whose namespace a redirect listener serves: the launcher's pid (its
    /proc/PID/net is that namespace's), uid and session; and a sock_diag socket made
    in it, if the launcher passed one."""
    pid: int
    uid: int
    session: bytes
    diag: socket.socket | None = None


def original_destination(sock: socket.socket) -> tuple[owners.IPAddress, int]:
    """Where the program connected to, before the redirect. Raises OSError."""
    if sock.family == socket.AF_INET6:
        raw = sock.getsockopt(socket.IPPROTO_IPV6, IP6T_SO_ORIGINAL_DST, 28)
        port = int.from_bytes(raw[2:4], "big")
        addr6 = ipaddress.IPv6Address(raw[8:24])
        return addr6.ipv4_mapped or addr6, port
    raw = sock.getsockopt(socket.IPPROTO_IP, SO_ORIGINAL_DST, 16)
    return ipaddress.IPv4Address(raw[4:8]), int.from_bytes(raw[2:4], "big")


def reset(sock: socket.socket) -> None:
    """Close with a TCP reset, so the program sees the refusal as one."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    except OSError:
        pass
    sock.close()


async def identify(router: Router, ns: Namespace, sock: socket.socket,
                   dst: tuple[owners.IPAddress, int]) -> AppInfo:
    """The program behind sock, or its uid alone when it cannot be seen."""
    try:
        peer = sock.getpeername()
        addr = ipaddress.ip_address(peer[0])
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        local = (addr, int(peer[1]))
        # the socket by one exact sock_diag lookup in the namespace (reading its
        # /proc/PID/net/tcp walks every socket of the machine: milliseconds); the
        # program's last pids first, here (a thread's hop costs more on a busy
        # machine than these few /proc reads); a scan of /proc in a thread
        inode = owners.diag_inode(ns.diag, local, dst) if ns.diag else None
        pid = owners.owner(ns.pid, local, dst, recent_only=True, inode=inode)
        if pid is None:
            pid = await asyncio.wait_for(asyncio.to_thread(
                owners.owner, ns.pid, local, dst, "tcp", False, inode),
                IDENTIFY_TIMEOUT)
    except (OSError, ValueError, asyncio.TimeoutError):
        pid = None
    if pid is None:
        return uid_only(ns.uid, f"program not found (isolated, uid {ns.uid})")
    return router.procs.identify(pid, ns.uid)


def start(router: Router, ns: Namespace, sock: socket.socket) -> "asyncio.Task[None]":
    """Carry a connection just accepted: its session is looked up now, so one accepted
    in the last moments of its launcher (drained, served.py) still finds it."""
    decided = router.sessions.policy_for(ns.session, ns.uid, router.policy)
    return asyncio.ensure_future(carry(router, ns, sock, decided))


async def carry(router: Router, ns: Namespace, sock: socket.socket,
                decided: tuple[Session | None, Policy | None, str]) -> None:
    """Decide, route and carry one redirected connection; reset it if refused."""
    try:
        dst, port = original_destination(sock)
    except OSError as exc:
        log.warning("isolated pid %d: a redirected connection without its original "
                    "destination (%s); reset", ns.pid, exc)
        reset(sock)
        return
    app = await identify(router, ns, sock, (dst, port))
    conn = router.new_connection(app, dst, port)
    conn.path = "isolated"
    session, policy, why = decided
    conn.session = session
    log.debug("[%s] redirected in the isolated namespace of pid %d: %s -> %s",
              conn.id, ns.pid, app, conn.target)
    try:
        if policy is None:
            raise SocksifyError(why, errno.EACCES)
        if router.fake.is_fake(dst):
            conn.stand_in = router.fake.use(dst, ns.uid)
            if conn.stand_in is None:
                raise SocksifyError("a stand-in address this daemon never handed out "
                                    "to this user (was it restarted?)",
                                    errno.EHOSTUNREACH)
            conn.host = conn.stand_in.name
        tunnel = await router.open_route(conn, policy, kernel_direct=False)
    except SocksifyError as exc:
        router.refused(conn, exc)
        conn.stand_in = None
        reset(sock)
        return
    assert tunnel is not None
    if conn.stand_in is not None:    # held until the connection ends
        router.fake.hold(conn.stand_in)
    await router.table.carry(conn, tunnel, app_sock=sock)

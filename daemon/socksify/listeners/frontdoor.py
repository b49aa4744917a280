"""The SOCKS front door: the daemon as a SOCKS4/4a/5 server on loopback, so programs
that already speak SOCKS (browsers, curl --socks5-hostname, git's proxy settings)
reach the same policy and chains without the shim.

Who is asking comes from the kernel's socket table: the uid owning the client's end
(socktable), and, for an allowed uid, the program behind it, so per-application rules
apply. A request from a uid that may not use this daemon, or whose uid cannot be found
(another network namespace), is decided by the `unidentified` action alone, before any
rule: a rule on ports or destinations only must never lend the owner's chains (and
the credentials in their hops) to another user. Until its request is read, a client
waits under the daemon's admission caps (admission.py)."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import socket
import sys
from typing import Awaitable, Callable

from ..core.records import UdpFlow
from ..core.router import Router
from ..errors import PolicyBlocked, SocksifyError
from ..policy import Policy
from ..procinfo import AppInfo, tcp_peer_owner, uid_only
from ..protocol import socks4, socks5, socks5udp
from . import socktable
from .admission import BurstLog, Gate, Ticket, peer_uid
from .udpdoor import UdpDoor, hold

log = logging.getLogger("socksify.frontdoor")

HANDSHAKE_TIMEOUT = 10.0
MAX_HANDSHAKE = 1024

# errno -> SOCKS5 reply code
_REPLY5 = {
    errno.EACCES: socks5.ReplyCode.NOT_ALLOWED,
    errno.ENETUNREACH: socks5.ReplyCode.NETWORK_UNREACHABLE,
    errno.EHOSTUNREACH: socks5.ReplyCode.HOST_UNREACHABLE,
    errno.ECONNREFUSED: socks5.ReplyCode.CONNECTION_REFUSED,
    errno.ETIMEDOUT: socks5.ReplyCode.TTL_EXPIRED,
    errno.EAFNOSUPPORT: socks5.ReplyCode.ADDRESS_TYPE_NOT_SUPPORTED,
}


Relay = Callable[[], Awaitable[None]]


class Refused(Exception):
    """A request this front door answers with a refusal (already logged)."""


class _Client:
    """One front-door connection: the handshake from a buffer, so that bytes a client
    sends right after its request (pipelined) stay in order for the target."""

    def __init__(self, door: FrontDoor, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, uid: int | None) -> None:
        self.door = door
        self.uid = uid                   # the kernel's word; None: not in its table
        self.ticket: Ticket | None = None
        self.reader = reader
        self.writer = writer
        self.buf = b""
        self.deadline = asyncio.get_running_loop().time() + HANDSHAKE_TIMEOUT
        self.peer = writer.get_extra_info("peername")
        self.label = f"{self.peer[0]}:{self.peer[1]}" if self.peer else "?"

    async def more(self) -> None:
        """Read more of the handshake; the whole request must arrive within
        HANDSHAKE_TIMEOUT of connecting (an idle or trickling client is dropped)."""
        left = self.deadline - asyncio.get_running_loop().time()
        try:
            data = await asyncio.wait_for(self.reader.read(4096), max(left, 0.01))
        except asyncio.TimeoutError:
            raise Refused(f"no complete request within {HANDSHAKE_TIMEOUT:g}s") from None
        if not data:
            raise Refused("closed during the handshake")
        self.buf += data
        if len(self.buf) > MAX_HANDSHAKE:
            raise Refused("handshake longer than any valid request")

    async def handshake(self) -> Relay:
        """Read and answer the request; return what carries the bytes afterwards."""
        while not self.buf:
            await self.more()
        if self.buf[0] == socks4.VERSION:
            return await self.socks4()
        if self.buf[0] == socks5.VERSION:
            return await self.socks5()
        else:
            raise Refused(f"first byte {self.buf[0]:#x} is neither SOCKS4 nor SOCKS5")

    async def socks4(self) -> Relay:
        while True:
            try:
                parsed = socks4.parse_request(self.buf)
            except socks4.ProtocolError as exc:
                self._reply4(socks4.ReplyCode.REJECTED)
                raise Refused(str(exc)) from None
            if parsed is not None:
                break
            await self.more()
        used, request = parsed
        self.buf = self.buf[used:]
        if isinstance(request, socks4.BindRequest):
            self._reply4(socks4.ReplyCode.REJECTED)
            raise Refused("BIND is not served, only CONNECT")
        if self.door.users:
            self._reply4(socks4.ReplyCode.REJECTED)
            raise Refused("SOCKS4 has no password; this front door requires SOCKS5 "
                          "user/password")
        try:
            relay = await self.door.connect(self, request.host, request.port)
        except SocksifyError:
            self._reply4(socks4.ReplyCode.REJECTED)
            raise
        self._reply4(socks4.ReplyCode.GRANTED)
        return relay

    def _reply4(self, code: int) -> None:
        self.writer.write(socks4.Reply(code, 0, ipaddress.IPv4Address(0)).dumps())

    async def socks5(self) -> Relay:
        while (greeting := socks5.parse_greeting(self.buf)) is None:
            await self.more()
        used, methods = greeting
        self.buf = self.buf[used:]
        want = socks5.METHOD_USERPASS if self.door.users else socks5.METHOD_NO_AUTH
        if want not in methods:
            self.writer.write(bytes([socks5.VERSION, socks5.METHOD_NONE_ACCEPTABLE]))
            raise Refused(f"offered methods {list(methods)}, this front door needs "
                          f"{want}")
        self.writer.write(bytes([socks5.VERSION, want]))
        if want == socks5.METHOD_USERPASS:
            while (auth := socks5.parse_userpass(self.buf)) is None:
                await self.more()
            used, creds = auth
            self.buf = self.buf[used:]
            ok = self.door.users.get(creds.user) == creds.password
            self.writer.write(bytes([socks5.AUTH_VERSION, 0 if ok else 1]))
            if not ok:
                raise Refused(f"wrong user or password for {creds.user!r}")
        while True:
            try:
                parsed = socks5.parse_request(self.buf)
            except socks5.UnsupportedAddress as exc:
                self._reply5(socks5.ReplyCode.ADDRESS_TYPE_NOT_SUPPORTED)
                raise Refused(str(exc)) from None
            if parsed is not None:
                break
            await self.more()
        used, command, host, port = parsed
        self.buf = self.buf[used:]
        if command == socks5udp.CMD_UDP_ASSOCIATE:
            try:
                return await self.door.associate(self, port)
            except SocksifyError as exc:
                self._reply5(_REPLY5.get(exc.errno or 0,
                                         socks5.ReplyCode.GENERAL_FAILURE))
                raise
        if command != socks5.CMD_CONNECT:
            self._reply5(socks5.ReplyCode.COMMAND_NOT_SUPPORTED)
            raise Refused(f"command {command} is not served, only CONNECT and UDP "
                          "ASSOCIATE")
        try:
            relay = await self.door.connect(self, host, port)
        except SocksifyError as exc:
            self._reply5(_REPLY5.get(exc.errno or 0, socks5.ReplyCode.GENERAL_FAILURE))
            raise
        self._reply5(socks5.ReplyCode.SUCCEEDED)
        return relay

    def _reply5(self, code: int) -> None:
        self.writer.write(socks5.Reply(code, "0.0.0.0", 0).dumps())


class FrontDoor:
    def __init__(self, router: Router, gate: Gate, burst: BurstLog, host: str,
                 port: int, users: dict[str, str] | None = None) -> None:
        self.router = router
        self.gate = gate
        self.burst = burst
        self.host = host
        self.requested_port = port
        self.port = port                  # the bound port, once started
        self.users = users or {}
        self.sock: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if not ipaddress.ip_address(self.host).is_loopback:
            raise ValueError(f"the SOCKS front door listens on loopback only, not "
                             f"{self.host}")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if sys.platform != "win32":   # there it would let others share the port
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(512)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self.port = sock.getsockname()[1]
        self._accepting = asyncio.ensure_future(self._accept(sock))
        log.info("SOCKS front door on %s:%d (SOCKS4, SOCKS4a, SOCKS5%s)", self.host,
                 self.port, ", user/password required" if self.users else "")

    def close(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            self._accepting = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    async def _accept(self, listener: socket.socket) -> None:
        """Accept clients one at a time, each admitted (or closed) under the daemon's
        caps before the next, so a flood never holds more descriptors than they
        allow."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(listener)
            except OSError as exc:     # EMFILE and friends: let the others finish
                self.burst.warn("frontdoor-accept", f"front door accept failed: {exc}")
                await asyncio.sleep(0.1)
                continue
            uid = peer_uid(conn)
            ticket = self.gate.admit(uid)
            if ticket is None:
                self.burst.warn(("frontdoor-cap", uid), f"front door: closed "
                                f"connections from uid {'?' if uid is None else uid}: "
                                f"too many waiting for their request "
                                f"({self.gate.total} waiting)")
                conn.close()
            else:
                asyncio.ensure_future(self._serve(conn, uid, ticket))
            await asyncio.sleep(0)     # a steady flood must not starve the others

    async def _serve(self, conn: socket.socket, uid: int | None, ticket: Ticket) -> None:
        try:
            reader, writer = await asyncio.open_connection(sock=conn, limit=1 << 18)
        except OSError:
            ticket.release()
            conn.close()
            return
        await self._handle(reader, writer, uid, ticket)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      uid: int | None, ticket: Ticket) -> None:
        client = _Client(self, reader, writer, uid)
        client.ticket = ticket
        try:
            relay = await client.handshake()
            await relay()
        except Refused as exc:
            log.warning("front door: %s refused: %s", client.label, exc)
        except SocksifyError:
            pass                                  # logged by the router's refusal
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            log.info("front door: %s went away: %r", client.label, exc)
        finally:
            ticket.release()
            if not writer.is_closing():
                writer.close()

    async def identify(self, client: _Client) -> AppInfo | None:
        """The program behind a front-door connection of an allowed uid; None for
        another uid's or one whose uid is unknown. A program of an allowed uid that
        cannot be seen (it is not dumpable, or already gone) is that uid with no
        program: rules on users match it, rules on programs do not."""
        uid = client.uid
        if uid is None or not self.router.allows(uid):
            return None
        ours = client.writer.get_extra_info("sockname")
        pid = None
        if client.peer and ours:
            pid = await asyncio.to_thread(tcp_peer_owner,
                                          (client.peer[0], client.peer[1]),
                                          (ours[0], ours[1]))
        if pid is not None:
            return self.router.procs.identify(pid, uid)
        if not socktable.supported():   # Windows: no uid of its own to go by
            return None
        return uid_only(uid, f"program not found ({client.label})")

    async def connect(self, client: _Client, host: str, port: int) -> Relay:
        """Open the route for a request; return a coroutine function that relays
        once the client has been told it succeeded. Raises SocksifyError."""
        if client.ticket is not None:    # the request is read: no longer waiting
            client.ticket.release()
        app = await self.identify(client)
        router = self.router
        try:
            addr = ipaddress.ip_address(host)
            name = None
        except ValueError:
            addr, name = None, host.rstrip(".").lower()
        conn = router.new_connection(app or _unknown(client), addr, port, name)
        policy = self._policy_for(app)
        try:
            if app is not None and app.pid == os.getpid():
                raise SocksifyError("a chain leads back into this daemon's own front "
                                    "door (a loop)", errno.ELOOP)
            if policy is None:
                raise PolicyBlocked("the daemon has no policy for its front door")
            tunnel = await router.open_route(conn, policy, kernel_direct=False)
        except SocksifyError as exc:
            router.refused(conn, exc)
            raise
        assert tunnel is not None
        if client.buf:                      # pipelined bytes go first, in order
            await asyncio.get_running_loop().sock_sendall(tunnel.sock, client.buf)
            client.buf = b""

        async def relay() -> None:
            await router.table.carry(conn, tunnel,
                                     app_streams=(client.reader, client.writer))
        return relay

    async def associate(self, client: _Client, port: int) -> Relay:
        """UDP ASSOCIATE (udpdoor.py): a UDP port here for the client's datagrams from
        its own address (and `port`, unless 0). Raises SocksifyError."""
        if client.ticket is not None:
            client.ticket.release()
        app = await self.identify(client)
        flow = self.router.new_connection(app or _unknown(client), None, 0, None, UdpFlow)
        assert isinstance(flow, UdpFlow)
        flow.path = "frontdoor"
        policy = self._policy_for(app)
        try:
            if app is not None and app.pid == os.getpid():
                raise SocksifyError("UDP ASSOCIATE from this daemon itself (a loop)",
                                    errno.ELOOP)
            if policy is None or not client.peer:
                raise PolicyBlocked("the daemon has no policy for its front door")
            door = UdpDoor(self.router, policy, flow, client.peer[0], port)
            bound = await door.open(self.host)
        except SocksifyError as exc:
            self.router.refused(flow, exc)
            raise
        except OSError as exc:
            raise SocksifyError(f"no UDP port for the client: {exc}", exc.errno) from None
        client.writer.write(socks5.Reply(socks5.ReplyCode.SUCCEEDED, *bound).dumps())
        log.info("[%s] %s UDP ASSOCIATE: relay %s:%d", flow.id, flow.app, *bound)

        async def relay() -> None:
            await hold(self.router, flow, door, client.reader)
        return relay

    def _policy_for(self, app: AppInfo | None) -> Policy | None:
        policy = self.router.policy
        if policy is None or app is not None:
            return policy
        return policy.for_unidentified()


def _unknown(client: _Client) -> AppInfo:
    """What a request of another uid, or of no uid found, is logged as."""
    if client.uid is None:
        return AppInfo(0, f"unidentified ({client.label})", "", -1, "?", ())
    return uid_only(client.uid, f"uid {client.uid} ({client.label})")

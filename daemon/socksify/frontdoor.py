"""The SOCKS front door: the daemon as a SOCKS4/4a/5 server on loopback, so programs
that already speak SOCKS (browsers, curl --socks5-hostname, git's proxy settings)
reach the same policy and chains without the shim. The program behind each request is
found in the kernel's socket table, so per-application rules apply; a request whose
owner cannot be identified falls to the `unidentified` action."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
from typing import TYPE_CHECKING, Awaitable, Callable

from .errors import PolicyBlocked, SocksifyError
from .procinfo import AppInfo, process_uid, tcp_peer_owner
from .protocol import socks4, socks5

if TYPE_CHECKING:
    from .daemon import Daemon
    from .policy import Policy

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
                 writer: asyncio.StreamWriter) -> None:
        self.door = door
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
        if command != socks5.CMD_CONNECT:
            self._reply5(socks5.ReplyCode.COMMAND_NOT_SUPPORTED)
            raise Refused(f"command {command} is not served, only CONNECT")
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
    def __init__(self, daemon: Daemon, host: str, port: int,
                 users: dict[str, str] | None = None) -> None:
        self.daemon = daemon
        self.host = host
        self.requested_port = port
        self.port = port                  # the bound port, once started
        self.users = users or {}
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        if not ipaddress.ip_address(self.host).is_loopback:
            raise ValueError(f"the SOCKS front door listens on loopback only, not "
                             f"{self.host}")
        self.server = await asyncio.start_server(self._handle, self.host, self.port,
                                                 limit=1 << 18)
        self.port = self.server.sockets[0].getsockname()[1]
        log.info("SOCKS front door on %s:%d (SOCKS4, SOCKS4a, SOCKS5%s)", self.host,
                 self.port, ", user/password required" if self.users else "")

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _handle(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        client = _Client(self, reader, writer)
        try:
            relay = await client.handshake()
            await relay()
        except Refused as exc:
            log.warning("front door: %s refused: %s", client.label, exc)
        except SocksifyError:
            pass                                  # logged by the daemon's refusal
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            log.info("front door: %s went away: %r", client.label, exc)
        finally:
            if not writer.is_closing():
                writer.close()

    async def identify(self, client: _Client) -> AppInfo | None:
        """The program behind a front-door connection, from the kernel's socket
        table; None if it cannot be seen."""
        ours = client.writer.get_extra_info("sockname")
        if not client.peer or not ours:
            return None
        pid = await asyncio.to_thread(tcp_peer_owner, (client.peer[0], client.peer[1]),
                                      (ours[0], ours[1]))
        if pid is None:
            return None
        uid = process_uid(pid)
        if uid is None:
            return None
        return self.daemon.procs.identify(pid, uid)

    async def connect(self, client: _Client, host: str, port: int) -> Relay:
        """Open the route for a request; return a coroutine function that relays
        once the client has been told it succeeded. Raises SocksifyError."""
        app = await self.identify(client)
        daemon = self.daemon
        try:
            addr = ipaddress.ip_address(host)
            name = None
        except ValueError:
            addr, name = None, host.rstrip(".").lower()
        conn = daemon.new_connection(app or _unknown(client.label), addr, port, name)
        policy = self._policy_for(app)
        try:
            if app is not None and app.pid == os.getpid():
                raise SocksifyError("a chain leads back into this daemon's own front "
                                    "door (a loop)", errno.ELOOP)
            if app is not None and not daemon.allows(app.uid):
                raise PolicyBlocked(f"uid {app.uid} may not use this daemon")
            if policy is None:
                raise PolicyBlocked("the daemon has no policy for its front door")
            tunnel = await daemon.open_route(conn, policy, kernel_direct=False)
        except SocksifyError as exc:
            daemon.refused(conn, exc)
            raise
        assert tunnel is not None
        if client.buf:                      # pipelined bytes go first, in order
            await asyncio.get_running_loop().sock_sendall(tunnel.sock, client.buf)
            client.buf = b""

        async def relay() -> None:
            await daemon.serve_relay(conn, tunnel,
                                     app_streams=(client.reader, client.writer))
        return relay

    def _policy_for(self, app: AppInfo | None) -> Policy | None:
        policy = self.daemon.policy
        if policy is None or app is not None:
            return policy
        return policy.for_unidentified()


def _unknown(label: str) -> AppInfo:
    return AppInfo(0, f"unidentified ({label})", "", -1, "?", ())

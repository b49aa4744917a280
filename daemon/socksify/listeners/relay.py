"""The relay listeners: loopback TCP listeners (IPv4, IPv6) where a program whose
connection is relayed attaches with its token, and relay.sock, where `socksify
--isolate` hands over the listeners it bound inside the program's network namespace,
served the same way. A connection is admitted under the caps (admission.py), sends
exactly its token, and is then carried by the connection table (core/table.py)."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import os
import socket
from pathlib import Path
from typing import Callable, Protocol

from ..core.records import endpoint
from ..core.table import ConnectionTable, peer_of
from ..isolation.redirect import Namespace
from ..isolation.served import Handed
from ..procinfo import peer_credentials
from ..protocol import control as wire
from ..protocol import handover
from ..sockstream import recv_exactly, within
from .admission import BurstLog, Gate, Ticket, peer_uid
from .fdpass import recv_with_fds

log = logging.getLogger("socksify.daemon")

NETLINK_SOCK_DIAG = 4
NETLINK_NETFILTER = 12
TOKEN_WAIT = 3.0         # seconds a relay connection may take to send its token
HANDOFF_TIMEOUT = 10.0   # for socksify --isolate to pass its relay listeners
ACCEPT_ERRORS = BurstLog(log)   # EMFILE on accept: one line per burst, not per retry


class Closer(Protocol):
    def drain(self) -> None: ...

    def close(self) -> None: ...


class RelayListener:
    """A listening TCP socket whose connections are handed, raw, to `accepted` (the
    relay: it reads exactly the token, so nothing the program sent is buffered here),
    one at a time: `accepted` decides on each before the next is accepted."""

    def __init__(self, sock: socket.socket,
                 accepted: Callable[[socket.socket], None]) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.port = int(sock.getsockname()[1])
        self._accepted = accepted
        self._task = asyncio.ensure_future(self._accept())

    @classmethod
    def bind(cls, family: int, host: str,
             accepted: Callable[[socket.socket], None]) -> RelayListener:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.bind((host, 0))
            sock.listen(512)
        except OSError:
            sock.close()
            raise
        return cls(sock, accepted)

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(self.sock)
            except OSError as exc:     # EMFILE and friends: let the others finish
                ACCEPT_ERRORS.warn("relay", f"relay accept failed: {exc}")
                await asyncio.sleep(0.1)
                continue
            conn.setblocking(False)
            self._accepted(conn)
            await asyncio.sleep(0)     # a steady flood must not starve the others

    def close(self) -> None:
        """Stop accepting; the socket is closed once the accept has ended, so the
        event loop never watches a closed descriptor (whose number a new socket may
        get)."""
        self._task.cancel()
        self._task.add_done_callback(lambda _: self.sock.close())


class Relays:
    """Every relay listener of the daemon; the program's uid is checked with
    `allows` (the router's)."""

    def __init__(self, table: ConnectionTable, allows: Callable[[int], bool],
                 gate: Gate, burst: BurstLog,
                 isolated: Callable[[Handed], Closer] | None = None) -> None:
        self.table = table
        self.isolated = isolated   # serves the isolation path's redirect/DNS sockets
        self.allows = allows
        self.gate = gate
        self.burst = burst
        self.port4 = 0
        self.port6 = 0
        self.unix: socket.socket | None = None   # relay.sock (--isolate)
        self._listeners: list[RelayListener] = []
        self._handoffs: set[asyncio.Task[None]] = set()

    def listen_loopback(self) -> None:
        relay4 = RelayListener.bind(socket.AF_INET, "127.0.0.1", self._accepted)
        self._listeners.append(relay4)
        self.port4 = relay4.port
        try:
            relay6 = RelayListener.bind(socket.AF_INET6, "::1", self._accepted)
        except OSError:
            log.info("no IPv6 loopback: IPv6 sockets relay through ::ffff:127.0.0.1")
        else:
            self._listeners.append(relay6)
            self.port6 = relay6.port

    def listen_unix(self, path: Path) -> None:
        """relay.sock beside the control socket, for `socksify --isolate`: the
        program's network namespace cannot reach the loopback listeners above, so
        socksify binds the same relay ports inside it and hands the listening sockets
        over here; they are served like our own until socksify closes this
        connection."""
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
        sock.listen(64)
        sock.setblocking(False)
        self.unix = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._unix_ready)

    def close_loopback(self) -> None:
        for listener in self._listeners:
            listener.close()
        self._listeners.clear()

    def close_unix(self) -> None:
        """relay.sock, and the listeners isolated programs passed on it."""
        if self.unix is not None:
            asyncio.get_running_loop().remove_reader(self.unix.fileno())
            self.unix.close()
            self.unix = None
        for task in list(self._handoffs):
            task.cancel()

    def _unix_ready(self) -> None:
        assert self.unix is not None
        while True:
            try:
                conn, _ = self.unix.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("relay socket accept failed: %s", exc)
                return
            task = asyncio.ensure_future(self._isolated_listeners(conn))
            self._handoffs.add(task)
            task.add_done_callback(self._handoffs.discard)

    async def _isolated_listeners(self, conn: socket.socket) -> None:
        """Serve the sockets a socksify launcher of an allowed uid passed on conn
        (protocol/handover.py: relay listeners, and for the isolation path redirect
        listeners and DNS sockets), until conn ends."""
        loop = asyncio.get_running_loop()
        servers: list[RelayListener] = []
        served: Closer | None = None
        handed: list[socket.socket] = []
        try:
            conn.setblocking(False)
            pid, uid = peer_credentials(conn)
            if not self.allows(uid):
                log.warning("relay socket: refused uid %d (pid %d)", uid, pid)
                return
            data, fds = await recv_with_fds(conn, handover.MAX_SIZE, handover.MAX_FDS,
                                            HANDOFF_TIMEOUT)
            handed = _sockets(fds)
            header = handover.loads(data, len(handed))
            for s, kind in zip(handed, header.kinds):
                if not _fits(s, kind):
                    log.warning("relay socket: pid %d passed something else than %s; "
                                "refused", pid, kind.name.lower())
                    return
            what = ", ".join(f"{kind.name.lower()} {_where(s)}"
                             for s, kind in zip(handed, header.kinds))
            by_kind = {k: [s for s, sk in zip(handed, header.kinds) if sk is k]
                       for k in handover.Kind}
            for s in by_kind[handover.Kind.RELAY]:
                # connections there come from the isolated program's own
                # network namespace: they count as the uid that passed it
                servers.append(RelayListener(s, functools.partial(
                    self._accepted, owner=uid)))
            others = [s for s in handed if s not in by_kind[handover.Kind.RELAY]]
            if others:
                if self.isolated is None:
                    log.warning("relay socket: pid %d passed isolation sockets this "
                                "daemon does not serve; refused", pid)
                    return
                diag = by_kind[handover.Kind.SOCK_DIAG]
                ct = by_kind[handover.Kind.CONNTRACK]
                served = self.isolated(Handed(
                    Namespace(pid, uid, header.session, diag[0] if diag else None),
                    by_kind[handover.Kind.REDIRECT], by_kind[handover.Kind.DNS_UDP],
                    by_kind[handover.Kind.DNS_TCP], by_kind[handover.Kind.UDP_CARRIER],
                    ct[0] if ct else None))
                for extra in diag[1:] + ct[1:]:
                    extra.close()
            handed = []   # served now: closed by their servers
            log.info("isolated pid %d (uid %d) handed over: %s", pid, uid, what)
            await loop.sock_sendall(conn, handover.ACK)
            while await loop.sock_recv(conn, 64):
                pass   # socksify says nothing more; EOF: its command has ended
            if served is not None:
                served.drain()
        except (OSError, asyncio.TimeoutError, ValueError) as exc:
            log.debug("relay socket: %r", exc)
        finally:
            for s in handed:
                s.close()
            for server in servers:
                server.close()
            if served is not None:
                served.close()
            conn.close()

    def _accepted(self, sock: socket.socket, owner: int | None = None) -> None:
        """A new connection to a relay listener, decided before the next is accepted
        (so a flood never holds more than the caps allow). Tokens go to the programs
        of allowed uids only: another uid's connection is closed at once; the others
        wait for their token under the gate's caps."""
        uid = owner if owner is not None else peer_uid(sock)
        if uid is not None and not self.allows(uid):
            self.burst.warn(("relay-foreign", uid), f"relay: closed connections from "
                            f"uid {uid}, which may not use this daemon")
            sock.close()
            return
        ticket = self.gate.admit(uid)
        if ticket is None:
            self.burst.warn(("relay-cap", uid), f"relay: closed connections from uid "
                            f"{'?' if uid is None else uid}: too many waiting for their "
                            f"token ({self.gate.total} waiting)")
            sock.close()
            return
        asyncio.ensure_future(self._attach(sock, ticket))

    async def _attach(self, sock: socket.socket, ticket: Ticket) -> None:
        """An admitted relay connection: exactly 16 token bytes within TOKEN_WAIT,
        then, for a known unexpired token, its tunnel's bytes."""
        try:
            token = await within(recv_exactly(sock, wire.TOKEN_SIZE), TOKEN_WAIT)
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, OSError):
            sock.close()
            return
        finally:
            ticket.release()
        entry = self.table.claim(token)
        if entry is None:
            log.warning("relay connection from %s with an unknown token; closed",
                        peer_of(sock))
            sock.close()
            return
        conn, tunnel = entry
        await self.table.carry(conn, tunnel, app_sock=sock)


def _fits(s: socket.socket, kind: handover.Kind) -> bool:
    """Is s what the header says: a listening TCP socket, or (DNS_UDP) a UDP one?"""
    if kind in (handover.Kind.SOCK_DIAG, handover.Kind.CONNTRACK):
        want = NETLINK_SOCK_DIAG if kind is handover.Kind.SOCK_DIAG \
            else NETLINK_NETFILTER
        return s.family == socket.AF_NETLINK and \
            s.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL) == want
    if s.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    if kind in (handover.Kind.DNS_UDP, handover.Kind.UDP_CARRIER):
        return s.type == socket.SOCK_DGRAM
    return s.type == socket.SOCK_STREAM and \
        bool(s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))


def _where(s: socket.socket) -> str:
    if s.family == socket.AF_NETLINK:
        return "netlink"
    try:
        host, port = s.getsockname()[:2]
        return endpoint(ipaddress.ip_address(host), port)
    except (OSError, ValueError):
        return "?"


def _sockets(fds: list[int]) -> list[socket.socket]:
    """Socket objects for received descriptors; all closed if one is not a socket."""
    out: list[socket.socket] = []
    try:
        for fd in fds:
            out.append(socket.socket(fileno=fd))
    except OSError:
        for s in out:
            s.close()
        for fd in fds[len(out):]:
            os.close(fd)
        raise
    return out

"""What the daemon serves for one isolated namespace, from the handover on relay.sock
until the launcher's connection ends: the redirect listeners (each accepted
connection carried by redirect.py), the DNS sockets (the namespace's port 53) and the
UDP carrier sockets (every other datagram, carried through chains by datagrams.py).

The DNS hook: `serve_dns` runs the in-namespace name server on the passed sockets
(isolation/nameserver.py, with the daemon's answers, isolation/answers.py): a DNS
query from the namespace is answered there, never sent anywhere."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..core.router import Router
from ..listeners.admission import BurstLog
from ..procinfo import AppInfo, uid_only
from . import owners, redirect
from .datagrams import Datagrams
from .redirect import Namespace

if TYPE_CHECKING:
    from .nameserver import Peer

log = logging.getLogger("socksify.daemon")
ACCEPT_ERRORS = BurstLog(log)


@dataclass
class Handed:
    """The sockets one launcher handed over, sorted by kind (protocol/handover.py)."""
    ns: Namespace
    redirect: list[socket.socket] = field(default_factory=list)
    dns_udp: list[socket.socket] = field(default_factory=list)
    dns_tcp: list[socket.socket] = field(default_factory=list)
    udp: list[socket.socket] = field(default_factory=list)
    conntrack: socket.socket | None = None


class Served:
    """The tasks serving one namespace's sockets; close() ends them and the sockets.
    Connections already carried go on until they end (the live table holds them)."""

    def __init__(self, router: Router, handed: Handed) -> None:
        self.router = router
        self.handed = handed
        self.listening: list[asyncio.Task[None]] = []
        self.carried: set[asyncio.Task[None]] = set()
        for sock in handed.redirect:
            sock.setblocking(False)
            self.listening.append(asyncio.ensure_future(self._accept(sock)))
        self.listening.append(asyncio.ensure_future(serve_dns(router, handed)))
        if handed.udp:
            self.listening.append(asyncio.ensure_future(
                Datagrams(router, handed.ns, handed.conntrack).serve(handed.udp)))

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(listener)
            except OSError as exc:
                ACCEPT_ERRORS.warn("redirect", f"redirect accept failed: {exc}")
                await asyncio.sleep(0.1)
                continue
            self._carry(conn)
            await asyncio.sleep(0)   # a steady flood must not starve the others

    def _carry(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        task = redirect.start(self.router, self.handed.ns, conn)
        self.carried.add(task)
        task.add_done_callback(self.carried.discard)

    def drain(self) -> None:
        """The launcher is ending (its program has exited): carry the connections
        still waiting to be accepted, under its session, which it keeps open until
        this is done (a program may connect and exit at once)."""
        for listener in self.handed.redirect:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    break
                self._carry(conn)

    def close(self) -> None:
        """Stop serving; the sockets are closed once the tasks watching them have
        ended (closing a descriptor the event loop still watches would leave its
        number registered there, and a new socket given the same number would then
        never be seen as ready)."""
        for task in self.listening:
            task.cancel()
        closing = asyncio.ensure_future(self._close_sockets())
        _closing.add(closing)
        closing.add_done_callback(_closing.discard)

    async def _close_sockets(self) -> None:
        await asyncio.gather(*self.listening, return_exceptions=True)
        h = self.handed
        for sock in (*h.redirect, *h.dns_udp, *h.dns_tcp, *h.udp):
            sock.close()
        if h.ns.diag is not None:
            h.ns.diag.close()
        if h.conntrack is not None:
            h.conntrack.close()


_closing: set[asyncio.Task[None]] = set()   # held until done (asyncio keeps weak refs)


async def serve_dns(router: Router, handed: Handed) -> None:
    """THE DNS HOOK: serve the namespace's port-53 sockets with the in-namespace name
    server (nameserver.py) and the daemon's answers under the launcher's session and
    user (answers.py), until cancelled (Served.close)."""
    if not handed.dns_udp and not handed.dns_tcp:
        return
    # imported here: dnspython costs the daemon's start some 50 ms
    from .answers import PolicyAnswerer
    from .nameserver import serve_tcp, serve_udp
    ns = handed.ns

    async def querier(peer: Peer) -> AppInfo:
        return await identify_querier(router, ns, peer)

    answerer = PolicyAnswerer(router, ns.session, ns.uid, querier)
    await asyncio.gather(*(serve_udp(s, answerer) for s in handed.dns_udp),
                         *(serve_tcp(s, answerer) for s in handed.dns_tcp))


async def identify_querier(router: Router, ns: Namespace, peer: Peer) -> AppInfo:
    """The program that sent a DNS query (its socket, bound to the query's source
    address, in the namespace's UDP or TCP table), or its uid alone when unseen."""
    try:
        local = (ipaddress.ip_address(peer.host), peer.port)
        pid = await asyncio.wait_for(asyncio.to_thread(
            owners.owner, ns.pid, local, None, peer.transport), redirect.IDENTIFY_TIMEOUT)
    except (OSError, ValueError, asyncio.TimeoutError):
        pid = None
    if pid is None:
        return uid_only(ns.uid, f"program not found (isolated, uid {ns.uid})")
    return router.procs.identify(pid, ns.uid)

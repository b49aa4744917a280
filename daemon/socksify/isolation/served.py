"""What the daemon serves for one isolated namespace, from the handover on relay.sock
until the launcher's connection ends: the redirect listeners (each accepted
connection carried by redirect.py) and the DNS sockets (the namespace's port 53).

The DNS hook: `serve_dns` runs the in-namespace name server on the passed sockets
(isolation/nameserver.py, with the daemon's answers, isolation/answers.py). Until
that server exists the sockets are closed, so a DNS query from the namespace is
refused (ECONNREFUSED), never sent anywhere."""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field

from ..core.router import Router
from ..listeners.admission import BurstLog
from . import redirect
from .redirect import Namespace

log = logging.getLogger("socksify.daemon")
ACCEPT_ERRORS = BurstLog(log)


@dataclass
class Handed:
    """The sockets one launcher handed over, sorted by kind (protocol/handover.py)."""
    ns: Namespace
    redirect: list[socket.socket] = field(default_factory=list)
    dns_udp: list[socket.socket] = field(default_factory=list)
    dns_tcp: list[socket.socket] = field(default_factory=list)


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

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(listener)
            except OSError as exc:
                ACCEPT_ERRORS.warn("redirect", f"redirect accept failed: {exc}")
                await asyncio.sleep(0.1)
                continue
            conn.setblocking(False)
            task = asyncio.ensure_future(redirect.carry(self.router, self.handed.ns,
                                                        conn))
            self.carried.add(task)
            task.add_done_callback(self.carried.discard)
            await asyncio.sleep(0)   # a steady flood must not starve the others

    def close(self) -> None:
        for task in self.listening:
            task.cancel()
        h = self.handed
        for sock in (*h.redirect, *h.dns_udp, *h.dns_tcp):
            sock.close()


async def serve_dns(router: Router, handed: Handed) -> None:
    """THE DNS HOOK: serve the namespace's port-53 sockets. Without the name server
    (isolation/nameserver.py) they are closed: queries are refused, not sent."""
    socks = [*handed.dns_udp, *handed.dns_tcp]
    if not socks:
        return
    log.info("isolated pid %d: no in-namespace name server in this build: its DNS "
             "queries are refused", handed.ns.pid)
    for sock in socks:
        sock.close()
    handed.dns_udp.clear()
    handed.dns_tcp.clear()

"""Handed-off connections in the live table. The daemon keeps no descriptor of them:
at handoff it notes the socket's 4-tuple (the program's local address and hop 1's)
and cookie, then follows it in the kernel through sock_diag (sockdiag.py): its state
and byte counts while it lives; it leaves the table (a close event) when the kernel
no longer has it for the program (gone, in TIME_WAIT, or orphaned by the program's
close). A socket whose hop 1 stops acknowledging (the kernel retransmits) or vanishes
without a close of the program's, when hop 1 then refuses a connection, counts
against that hop's health as a failed relay does; one last seen after the far end's
FIN (CLOSE_WAIT, LAST_ACK) ended by a normal close and is not suspected: hop 1 is not
probed for it. (A hop that dies also sends a FIN, and a program may linger in
CLOSE_WAIT: such a death is then learnt from the next connection through the hop.)

The kernel is asked only while someone watches (a connections request, an events
subscriber: every WATCH_EVERY seconds) or, for health, every HEALTH_EVERY seconds
while handed-off connections exist; never otherwise."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from dataclasses import dataclass
from typing import Callable

from .. import sockdiag
from ..chains import HopHealth
from ..chains.connect import open_socket
from ..proxies import Proxy
from .records import Connection

log = logging.getLogger("socksify.daemon")

WATCH_EVERY = 1.0       # seconds between kernel reads while someone watches
HEALTH_EVERY = 4.0      # ... while nobody watches but handed-off connections exist
STALLED = 3             # consecutive retransmits to hop 1: it stopped answering
PROBE_EVERY = 5.0       # seconds between probes of one hop
PROBE_TIMEOUT = 5.0
# TIME_WAIT is the program's close done (and can be thousands after a churn): left out
LIVE_STATES = sockdiag.ALL_BUT_LISTEN & ~(1 << sockdiag.TIME_WAIT)
# sock_diag is missing or forbidden here (a kernel without it, a seccomp filter)
_UNSUPPORTED = {errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT, errno.EPERM, errno.EACCES,
                errno.ENOENT, errno.EOPNOTSUPP}


@dataclass(eq=False)
class Handoff:
    conn: Connection
    key: sockdiag.FourTuple
    family: int
    cookie: int | None
    base: tuple[int, int]        # tcp_info bytes at handoff: the chain's negotiation
    hop: Proxy | None            # hop 1 (None: a direct connection)
    last_state: int = 0          # the kernel's TCP state at the last read


class HandedOff:
    def __init__(self, health: HopHealth,
                 closed: Callable[[Connection], None]) -> None:
        self.health = health
        self._closed = closed          # the connection left the table
        self.live: dict[sockdiag.FourTuple, Handoff] = {}
        self.watchers = 0              # requests and subscribers that want fresh rows
        self.last_read = 0.0
        self._wake = asyncio.Event()
        self._probed: dict[tuple[str, int], float] = {}
        self._broken = False

    def add(self, conn: Connection, sock: socket.socket, hop: Proxy | None) -> None:
        """Follow conn, whose socket the program now holds, in the kernel."""
        if not sockdiag.supported() or self._broken:
            return
        try:
            key = sockdiag.four_tuple(sock)
        except OSError:
            return                     # already closed or reset
        self.follow(conn, key, sock.family, sockdiag.cookie_of(sock),
                    sockdiag.bytes_of(sock), hop)

    def follow(self, conn: Connection, key: sockdiag.FourTuple, family: int,
               cookie: int | None, base: tuple[int, int], hop: Proxy | None) -> None:
        """add(), with the socket's 4-tuple, cookie and byte counts known (the lane
        read them before it let go of the socket)."""
        if not sockdiag.supported() or self._broken:
            return
        if not self.live:
            self._wake.set()           # the reader sleeps while there is none
        self.live[key] = Handoff(conn, key, family, cookie, base, hop)

    def connections(self) -> list[Connection]:
        return [h.conn for h in self.live.values()]

    def watch(self, on: bool) -> None:
        self.watchers += 1 if on else -1
        self._wake.set()

    def refresh(self) -> None:
        """Read the kernel now (a connections request: the rows are as of now)."""
        if self.live:
            self.read()

    def read(self) -> None:
        """One dump per address family in use: update each connection, drop those
        the kernel no longer has for the program."""
        self.last_read = time.monotonic()
        if not self.live:
            return
        seen: dict[sockdiag.FourTuple, sockdiag.KernelSocket] = {}
        try:
            for family in {h.family for h in self.live.values()}:
                for found in sockdiag.dump(family, self.live.__contains__, LIVE_STATES):
                    seen[found.key] = found
        except OSError as exc:
            if exc.errno not in _UNSUPPORTED:   # out of descriptors, memory, time
                log.debug("sock_diag read failed (%s): next time", exc)
                return
            self._broken = True
            log.warning("sock_diag cannot be read (%s): handed-off connections are "
                        "not listed from now on", exc)
            for handoff in list(self.live.values()):
                self._drop(handoff)
            return
        for handoff in list(self.live.values()):
            ks = seen.get(handoff.key)
            if ks is not None and handoff.cookie is not None \
                    and ks.cookie != handoff.cookie:
                ks = None              # the same 4-tuple, a later socket
            if ks is not None:
                self._update(handoff, ks)   # an orphan's bytes are its last ones
            if ks is None or ks.inode == 0:
                if ks is None and handoff.last_state not in sockdiag.PEER_CLOSED:
                    self._suspect(handoff)
                self._drop(handoff)

    def _update(self, handoff: Handoff, ks: sockdiag.KernelSocket) -> None:
        conn = handoff.conn
        conn.state = ks.state_name
        handoff.last_state = ks.state
        if ks.bytes_acked is not None and ks.bytes_received is not None:
            conn.counters.up = max(0, ks.bytes_acked - handoff.base[0])
            conn.counters.down = max(0, ks.bytes_received - handoff.base[1])
        stalled = ks.retransmits >= STALLED or (
            ks.timer == sockdiag.TIMER_RETRANSMIT and ks.retrans >= STALLED)
        hop = handoff.hop
        if stalled and hop is not None and not self.health.is_down(hop):
            self.health.mark_down(hop)
            log.warning("[%s] hop %s stopped answering the handed-off connection "
                        "(%d retransmits): marked down", conn.id, hop, ks.retransmits)

    def _drop(self, handoff: Handoff) -> None:
        self.live.pop(handoff.key, None)
        self._closed(handoff.conn)

    def _suspect(self, handoff: Handoff) -> None:
        """The socket vanished without the program's close (a reset, or a close
        after its peer's): if hop 1 now refuses connections, it is down."""
        hop = handoff.hop
        if hop is None or self.health.is_down(hop):
            return
        key = (hop.host, hop.port)
        now = time.monotonic()
        if now - self._probed.get(key, -PROBE_EVERY) < PROBE_EVERY:
            return
        self._probed[key] = now
        asyncio.ensure_future(self._probe(hop, handoff.conn.id))

    async def _probe(self, hop: Proxy, conn_id: str) -> None:
        try:
            sock = await open_socket(hop.host, hop.port, PROBE_TIMEOUT, str(hop))
        except Exception as exc:       # a SocksifyError, an OSError
            if not self.health.is_down(hop):
                self.health.mark_down(hop)
                log.warning("[%s] handed-off connection ended abruptly and hop %s "
                            "refuses connections (%s): marked down", conn_id, hop, exc)
        else:
            sock.close()

    async def run(self) -> None:
        """Read the kernel as often as someone needs it; sleep while nobody does."""
        while True:
            if self.watchers > 0:
                every = WATCH_EVERY
            elif self.live:
                every = HEALTH_EVERY
            else:
                self._wake.clear()
                await self._wake.wait()
                continue
            delay = self.last_read + every - time.monotonic()
            if delay > 0:
                self._wake.clear()     # a watcher that comes or goes changes the pace
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except asyncio.TimeoutError:
                    pass
                continue
            self.read()
            if len(self._probed) > 256:
                self._probed.clear()

    def close_all(self) -> None:
        """Shutdown: the programs keep their sockets; the table forgets them."""
        for handoff in list(self.live.values()):
            self._drop(handoff)

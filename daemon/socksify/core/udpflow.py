"""One UDP flow: one program socket's datagrams through one chain, over one SOCKS5 UDP
association (chains/udp.py). The three ways a program's datagrams reach the daemon
(docs/data-path.md) each keep their flows by their own key -- the carrier by the
program socket's address and chain (core/carried.py), the datagram handoff by the
socket's inode and chain (core/wrapped.py), the isolation path by the socket's
address in the namespace and chain (isolation/datagrams.py) -- and each holds a
ChainFlow for it, given the way back to its program:

- `reply(host, port, payload)`: a reply from host:port as the last hop saw it (an
  envelope to the carrier; a conntrack-rewritten sendto in the namespace; nothing for
  the handoff, whose program socket receives from hop 1's relay itself);
- `lost(errno, why)`: called once when the association cannot be opened (for
  datagrams queued by send()) or a hop's control connection ends; the flow is closed
  by then.

The association is opened once: concurrent first datagrams (send) and callers (open)
wait for the same opening. Counters are on the live table's record (UdpFlow), which
open_record() puts in the table and end_record() takes out, with the flow's summary."""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from typing import Callable

from ..chains import ChainSpec, Selector
from ..chains.udp import UdpAssociation, check_route, open_association
from ..errors import SocksifyError, Unsupported
from ..procinfo import AppInfo
from ..protocol import control as wire
from .records import UdpFlow
from .router import Router

log = logging.getLogger("socksify.udpflow")

QUEUE = 256            # datagrams waiting for the association to open
Reply = Callable[[str, int, bytes], None]      # a reply's source host, port; payload
Lost = Callable[[int, str], None]              # errno, why
Check = Callable[[UdpAssociation], None]       # raises SocksifyError: not usable
SelectorFor = Callable[[UdpFlow, ChainSpec], Selector]   # Sessions.selector


class ChainFlow:
    def __init__(self, record: UdpFlow, chain: ChainSpec, selector_for: SelectorFor,
                 reply: Reply, lost: Lost, client_port: int | None = None,
                 check: Check | None = None) -> None:
        self.record = record
        self.chain = chain
        self.selector_for = selector_for
        self.reply = reply
        self.lost = lost
        self.client_port = client_port     # a handoff's program socket port
        self.check = check
        self.assoc: UdpAssociation | None = None
        self.opening: asyncio.Task[UdpAssociation] | None = None
        self.queue: list[tuple[str, int, bytes]] = []
        self.last = time.monotonic()
        self.closed = False

    def idle(self, now: float, limit: float) -> bool:
        """Silent both ways for more than limit seconds?"""
        return now - self.last > limit

    # ----- the association ---------------------------------------------------------
    async def open(self) -> UdpAssociation:
        """The association, opened on the first call; later calls wait for the same
        opening. Raises SocksifyError if it cannot be opened (or the flow closed)."""
        if self.assoc is not None:
            return self.assoc
        if self.closed:
            raise Unsupported("the UDP flow is closed", errno.ECONNRESET)
        if self.opening is None:
            self.opening = asyncio.ensure_future(self._open())
        return await asyncio.shield(self.opening)

    async def _open(self) -> UdpAssociation:
        record, chain = self.record, self.chain
        route = self.selector_for(record, chain).next_route(set())
        if route is None:
            raise Unsupported(f"chain {chain.name}: no route to try", errno.ENETUNREACH)
        check_route(route)
        assoc = await open_association(route, chain, record.id,
                                       client_port=self.client_port)
        try:
            if self.closed:
                raise Unsupported("the UDP flow closed meanwhile", errno.ECONNRESET)
            if self.check is not None:
                self.check(assoc)
            await assoc.start(self._reply, lambda why: self._fail(errno.ECONNRESET, why))
            if self.closed:
                raise Unsupported("the UDP flow closed meanwhile", errno.ECONNRESET)
        except BaseException:
            assoc.close()
            raise
        # set once started: a datagram sent meanwhile waits in the queue (before it,
        # the association has no socket to send it from)
        self.assoc = assoc
        record.chain = record.chain or chain.name
        record.route = record.route or assoc.describe
        log.info("[%s] %s: UDP associated through chain %s via %s in %.0f ms (%s)",
                 record.id, record.app, chain.name, assoc.describe,
                 assoc.setup_seconds * 1000, record.path)
        queued, self.queue = self.queue, []
        for host, port, payload in queued:
            self._forward(assoc, host, port, payload)
        return assoc

    # ----- program -> chain --------------------------------------------------------
    def send(self, host: str, port: int, payload: bytes) -> None:
        """One datagram to host:port; before the association is open it waits
        (QUEUE at most, then dropped) and the opening starts."""
        self.last = time.monotonic()
        if self.closed:
            self.record.dropped += 1
            return
        if self.assoc is not None:
            self._forward(self.assoc, host, port, payload)
            return
        if len(self.queue) >= QUEUE:
            self.record.dropped += 1
            return
        self.queue.append((host, port, payload))
        if self.opening is None:
            self.opening = asyncio.ensure_future(self._open())
            self.opening.add_done_callback(self._opened)

    def _opened(self, task: asyncio.Task[UdpAssociation]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, SocksifyError):
            self._fail(exc.errno or errno.ECONNREFUSED,
                       f"UDP through chain {self.chain.name} refused: {exc}")
        elif exc is not None:
            log.error("[%s] UDP flow: opening failed", self.record.id, exc_info=exc)
            self._fail(errno.ECONNREFUSED, f"UDP through chain {self.chain.name} failed")

    def _forward(self, assoc: UdpAssociation, host: str, port: int,
                 payload: bytes) -> None:
        if assoc.send(host, port, payload):
            self.record.went_up(len(payload))
        else:
            self.record.dropped += 1

    # ----- chain -> program --------------------------------------------------------
    def _reply(self, host: str, port: int, payload: bytes) -> None:
        self.last = time.monotonic()
        self.reply(host, port, payload)

    # ----- the end -----------------------------------------------------------------
    def _fail(self, err: int, why: str) -> None:
        if self.closed:
            return
        self.close()
        self.lost(err, why)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.opening is not None and not self.opening.done():
            self.opening.cancel()
        if self.assoc is not None:
            self.record.dropped += self.assoc.counters.fragments + self.assoc.counters.bad
            self.assoc.close()
        self.queue.clear()


def open_record(router: Router, app: AppInfo, dst: wire.IPAddress | None, port: int,
                host: str | None, path: str) -> UdpFlow:
    """A new flow's record, in the live table (`socksifyd connections`)."""
    record = router.new_connection(app, dst, port, host, kind=UdpFlow)
    assert isinstance(record, UdpFlow)
    record.path = path
    router.table.live[record.id] = record
    return record


def end_record(router: Router, record: UdpFlow, why: str) -> None:
    """The flow's record out of the live table, its summary in the log."""
    if router.table.live.pop(record.id, None) is None:
        return
    log.info("[%s] %s: UDP flow closed (%s) after %.1fs: %d datagrams up (%d bytes), "
             "%d down (%d bytes), %d dropped; path %s", record.id, record.app, why,
             time.monotonic() - record.started, record.datagrams_up, record.counters.up,
             record.datagrams_down, record.counters.down, record.dropped, record.path)

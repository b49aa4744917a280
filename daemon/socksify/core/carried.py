"""One carried flow (docs/wire.md, "Carried datagrams"): the datagrams of one program
socket through one chain, over one UDP association (chains/udp.py), opened on the
first datagram and kept while datagrams flow and its control connections live.

Replies go back enveloped, with their source as the program knows it: a reply from
a destination the program reached by a stand-in address is reported from that
stand-in (the last hop names the resolved address, which the program never saw).
When the association cannot be opened or is lost, the program gets one ERROR
envelope and the flow ends; its next datagram starts a new one."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import time
from typing import Callable

from ..chains import ChainSpec, Selector
from ..chains.udp import UdpAssociation, check_route, open_association
from ..dns import StandIn
from ..errors import SocksifyError, Unsupported
from ..protocol import control as wire
from ..protocol.datagram import Envelope
from .grants import Grant
from .records import UdpFlow

log = logging.getLogger("socksify.carrier")

QUEUE = 256            # datagrams waiting for the association to open
SendBack = Callable[[bytes, tuple[str, int]], None]
SelectorFor = Callable[[UdpFlow, ChainSpec], Selector]   # Sessions.selector


class CarriedFlow:
    def __init__(self, record: UdpFlow, program: tuple[str, int], send_back: SendBack,
                 selector_for: SelectorFor, ended: Callable[[CarriedFlow], None]) -> None:
        self.record = record
        self.selector_for = selector_for
        self.program = program               # the program socket's address
        self.send_back = send_back
        self._ended = ended
        self.assoc: UdpAssociation | None = None
        self.opening: asyncio.Task[None] | None = None
        self.queue: list[tuple[Grant, bytes]] = []
        self.tokens: set[bytes] = set()      # grants seen on this flow (uid checked)
        self.held: list[StandIn] = []        # their stand-ins, held while it lives
        # (target host, port) as sent to the chain -> the grant it went under
        self.sent_to: dict[tuple[str, int], Grant] = {}
        self.last = time.monotonic()
        self.closed = False

    # ----- program -> chain ----------------------------------------------------------
    def send(self, grant: Grant, payload: bytes) -> None:
        self.last = time.monotonic()
        self.sent_to[(grant.target, grant.port)] = grant
        if self.assoc is not None:
            self._forward(grant, payload)
            return
        if len(self.queue) >= QUEUE:
            self.record.dropped += 1
            return
        self.queue.append((grant, payload))
        if self.opening is None:
            self.opening = asyncio.ensure_future(self._open(grant))

    def _forward(self, grant: Grant, payload: bytes) -> None:
        assert self.assoc is not None
        if self.assoc.send(grant.target, grant.port, payload):
            self.record.datagrams_up += 1
            self.record.counters.up += len(payload)
        else:
            self.record.dropped += 1

    async def _open(self, grant: Grant) -> None:
        record = self.record
        try:
            selector = self.selector_for(record, grant.chain)
            route = selector.next_route(set())
            if route is None:
                raise Unsupported(f"chain {grant.chain.name}: no route to try",
                                  errno.ENETUNREACH)
            check_route(route)
            assoc = await open_association(route, grant.chain, record.id)
        except SocksifyError as exc:
            self.fail(grant, exc.errno or errno.ECONNREFUSED,
                      f"UDP through chain {grant.chain.name} refused: {exc}")
            return
        except asyncio.CancelledError:
            raise
        if self.closed:
            assoc.close()
            return
        self.assoc = assoc
        record.route = assoc.describe
        await assoc.start(self._reply, lambda why: self.fail(grant, errno.ECONNRESET,
                                                              why))
        log.info("[%s] %s UDP carried through chain %s via %s (associated in %.0f ms)",
                 record.id, record.app, grant.chain.name, assoc.describe,
                 assoc.setup_seconds * 1000)
        queued, self.queue = self.queue, []
        for g, payload in queued:
            self._forward(g, payload)

    # ----- chain -> program ----------------------------------------------------------
    def _reply(self, host: str, port: int, payload: bytes) -> None:
        grant = self._source(host, port)
        if grant is None:
            self.record.dropped += 1
            return
        self.last = time.monotonic()
        src: wire.IPAddress
        if grant.host is not None or _addr(host) is None:
            src = grant.dst              # the stand-in the program sent to
        else:
            src = _addr(host) or grant.dst
        self.send_back(Envelope.data(src, port, grant.token).wrap(payload), self.program)
        self.record.datagrams_down += 1
        self.record.counters.down += len(payload)

    def _source(self, host: str, port: int) -> Grant | None:
        """The grant a reply from host:port answers: the one sent to it; else, for a
        reply from an address, the one sent to a name on that port (the last hop
        resolved it); else any sent to that port."""
        grant = self.sent_to.get((host, port))
        if grant is not None:
            return grant
        named = [g for (h, p), g in self.sent_to.items() if p == port and g.host]
        if named:
            return named[-1]
        if _addr(host) is not None:
            same_port = [g for (h, p), g in self.sent_to.items() if p == port]
            if same_port:
                return same_port[-1]
            return next(reversed(self.sent_to.values()), None)
        return None

    # ----- the end -------------------------------------------------------------------
    def fail(self, grant: Grant, err: int, why: str) -> None:
        """The association failed or was lost: one ERROR envelope, and the flow ends."""
        if self.closed:
            return
        log.warning("[%s] %s UDP to %s:%d through chain %s: %s", self.record.id,
                    self.record.app, grant.target, grant.port, grant.chain.name, why)
        code = wire.Code.from_errno(err)
        self.send_back(Envelope.error(grant.dst, grant.port, grant.token, code).dumps(),
                       self.program)
        self.close()

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
        self._ended(self)


def _addr(host: str) -> wire.IPAddress | None:
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return None
    if addr.version == 6 and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr

"""One carried flow (docs/wire.md, "Carried datagrams"): the datagrams of one program
socket through one chain, a ChainFlow (core/udpflow.py: the association, opened on
the first datagram and kept while datagrams flow and its control connections live)
given the carrier's way back to the program.

Replies go back enveloped, with their source as the program knows it: a reply from
a destination the program reached by a stand-in address is reported from that
stand-in (the last hop names the resolved address, which the program never saw).
When the association cannot be opened or is lost, the program gets one ERROR
envelope and the flow ends; its next datagram starts a new one."""

from __future__ import annotations

import ipaddress
import logging
from typing import Callable

from ..chains import ChainSpec
from ..dns import StandIn
from ..protocol import control as wire
from ..protocol.datagram import Envelope
from .grants import Grant
from .records import UdpFlow
from .udpflow import ChainFlow, SelectorFor

log = logging.getLogger("socksify.carrier")

BACK_CACHED = 256      # reply sources whose envelope is kept
SendBack = Callable[[bytes, tuple[str, int]], None]


class CarriedFlow:
    """A carrier flow: its ChainFlow (core/udpflow.py), and the way back to the
    program -- an envelope naming each reply's source, or one ERROR envelope."""

    def __init__(self, record: UdpFlow, chain: ChainSpec, program: tuple[str, int],
                 send_back: SendBack, selector_for: SelectorFor,
                 ended: Callable[[CarriedFlow, str], None]) -> None:
        self.record = record
        self.program = program               # the program socket's address
        self.send_back = send_back
        self._ended = ended
        self.udp = ChainFlow(record, chain, selector_for, self._reply, self._lost)
        self.tokens: set[bytes] = set()      # grants seen on this flow (uid checked)
        self.held: list[StandIn] = []        # their stand-ins, held while it lives
        # (target host, port) as sent to the chain -> the grant it went under
        self.sent_to: dict[tuple[str, int], Grant] = {}
        # a reply's source -> its grant and envelope, while sent_to stays the same
        self._back: dict[tuple[str, int], tuple[Grant, bytes]] = {}
        self.opener: Grant | None = None     # the grant whose datagram opened it

    @property
    def closed(self) -> bool:
        return self.udp.closed

    # ----- program -> chain ----------------------------------------------------------
    def send(self, grant: Grant, payload: bytes) -> None:
        to = (grant.target, grant.port)
        if self.sent_to.get(to) is not grant:
            self.sent_to[to] = grant
            self._back.clear()
        if self.opener is None:
            self.opener = grant
        self.udp.send(grant.target, grant.port, payload)

    # ----- chain -> program ----------------------------------------------------------
    def _reply(self, host: str, port: int, payload: bytes) -> None:
        known = self._back.get((host, port))
        if known is None:
            grant = self._source(host, port)
            if grant is None:
                self.record.dropped += 1
                return
            src: wire.IPAddress
            if grant.host is not None or _addr(host) is None:
                src = grant.dst              # the stand-in the program sent to
            else:
                src = _addr(host) or grant.dst
            known = (grant, Envelope.data(src, port, grant.token).dumps())
            if len(self._back) < BACK_CACHED:
                self._back[(host, port)] = known
        self.send_back(known[1] + payload, self.program)
        self.record.came_down(len(payload))

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
    def _lost(self, err: int, why: str) -> None:
        """The association failed or was lost: one ERROR envelope, and the flow ends."""
        grant = self.opener
        assert grant is not None
        log.warning("[%s] %s UDP to %s:%d through chain %s: %s", self.record.id,
                    self.record.app, grant.target, grant.port, grant.chain.name, why)
        code = wire.Code.from_errno(err)
        self.send_back(Envelope.error(grant.dst, grant.port, grant.token, code).dumps(),
                       self.program)
        self._ended(self, why)

    def close(self, why: str) -> None:
        if self.udp.closed:
            return
        self.udp.close()
        self._ended(self, why)


def _addr(host: str) -> wire.IPAddress | None:
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return None
    if addr.version == 6 and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr

"""Datagram handoff (docs/wire.md, "Datagram handoff: WRAP"): the daemon builds a
chain's UDP association for a program's own UDP socket and steps off the datagram
path; the shim sends each datagram from that socket straight to hop 1's relay with the
opaque send prefix before it, and strips the reply prefix from the answers.

One flow per (program socket inode, chain), a ChainFlow (core/udpflow.py) shared by
all its destinations (only the innermost header differs). Hop 1 is told the
datagrams come from (the local address of our control connection to hop 1, the
program socket's port). A flow lives while every
control connection lives and the program's socket exists: every SWEEP seconds one
sock_diag dump of the UDP sockets ends flows whose socket (port and inode) is gone.
When an association is lost, its control connections are closed (hop 1 closes its
relay, so a connected program socket gets ECONNREFUSED from the kernel) and the
carrier sends one ERROR envelope to the program socket with the latest grant's token.
The daemon sees none of the datagrams: these flows show no byte counts."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from typing import Callable

from ..chains import ChainSpec
from ..chains.connect import parse_address
from ..chains.udp import UdpAssociation, check_route, handoff_prefixes
from ..errors import SocksifyError, Unsupported
from ..protocol import control as wire
from ..protocol.datagram import Envelope, WrapReply
from .records import Connection, UdpFlow
from .router import Router
from .udpflow import ChainFlow, Lost, SelectorFor, end_record, open_record

log = logging.getLogger("socksify.wrapped")

SWEEP = 2.0            # seconds between looks for program sockets that are gone
MAX_FLOWS = 4096       # flows in all; past it WRAP is answered as CONNECT (CARRY)

Endpoint = tuple[str, int]
Grant = Callable[[Connection, ChainSpec], wire.Reply]          # Carrier.grant
# family, the program socket's address, the envelope: Carrier.send_to_program
SendError = Callable[[int, Endpoint, bytes], None]
Inodes = Callable[[], "set[tuple[int, int]]"]                  # (port, inode) alive


class WrappedFlow:
    """A handoff flow: its ChainFlow (core/udpflow.py; no datagram passes through it),
    the program socket it serves and hop 1's relay as that socket sends to it."""

    def __init__(self, record: UdpFlow, chain: ChainSpec, inode: int, family: int,
                 program: Endpoint, selector_for: SelectorFor, lost: Lost) -> None:
        self.udp = ChainFlow(record, chain, selector_for, _no_reply, lost,
                             client_port=program[1], check=self._check)
        self.record = record
        self.chain = chain
        self.inode = inode
        self.family = family
        self.program = program        # where an ERROR envelope goes
        self.relay: wire.IPAddress | None = None   # hop 1's relay, as the shim sends
        self.declared: wire.IPAddress | None = None  # where hop 1 was told they come from
        self.last: tuple[wire.IPAddress, int, bytes] | None = None  # dst, port, token
        self.closed = False

    def _check(self, assoc: UdpAssociation) -> None:
        self.relay = _relay_ip(assoc)
        if self.relay is None:
            raise Unsupported(f"hop 1's UDP relay {assoc.relays[0][0]} has no address",
                              errno.ENETUNREACH)
        self.declared = _declared(assoc)
        log.info("[%s] UDP handed off: socket port %d sends to hop 1's relay %s:%d "
                 "itself", self.record.id, self.port, self.relay, assoc.relays[0][1])

    @property
    def assoc(self) -> UdpAssociation:
        assert self.udp.assoc is not None
        return self.udp.assoc

    @property
    def port(self) -> int:
        return self.program[1]


def _no_reply(host: str, port: int, payload: bytes) -> None:
    """The program's socket receives from hop 1's relay itself: none come here."""


class Wrapped:
    def __init__(self, router: Router, grant: Grant, send_error: SendError,
                 inodes: Inodes) -> None:
        self.router = router
        self.grant = grant
        self.send_error = send_error
        self.inodes = inodes
        self.flows: dict[tuple[int, str], WrappedFlow] = {}
        self._sweeper: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._sweeper = asyncio.ensure_future(self._sweep())

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for flow in list(self.flows.values()):
            self._end(flow, "the daemon stops")

    # ----- the control side: WRAP ----------------------------------------------------
    async def wrap(self, conn: Connection, chain: ChainSpec, app_sock: socket.socket
                   ) -> WrapReply | None:
        """The WRAP answer for conn (decided: chain with udp = "chain", data path
        handoff), or None to answer as for CONNECT (CARRY). Raises SocksifyError when
        the chain cannot carry UDP or an association cannot be opened."""
        if conn.host is not None or conn.dst is None:
            return None                  # a stand-in: the replies' source is unknown
        family = app_sock.family
        if app_sock.type != socket.SOCK_DGRAM or family not in (
                socket.AF_INET, socket.AF_INET6) or app_sock.getsockopt(
                socket.SOL_SOCKET, socket.SO_PROTOCOL) != socket.IPPROTO_UDP:
            return None                  # (UDP-Lite: hop 1 relays UDP only)
        local = app_sock.getsockname()
        if not local[1]:
            return None                  # unbound: the shim binds before it asks
        bound = parse_address(str(local[0]))
        hop1 = parse_address(chain.hops[0].host) if chain.hops else None
        if bound is not None and bound.is_loopback and not (hop1 and hop1.is_loopback):
            return None                  # it cannot send to hop 1: the carrier can
        check_route(chain.hops)
        inode = os.fstat(app_sock.fileno()).st_ino
        v6only = family == socket.AF_INET6 and bool(
            app_sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))
        key = (inode, chain.name)
        flow = self.flows.get(key)
        if flow is not None and flow.chain != chain:
            # the policy was reloaded with another chain of that name: not through it
            self._end(flow, f"chain {chain.name} changed")
            flow = None
        if flow is None or flow.closed:
            if len(self.flows) >= MAX_FLOWS or not self._visible(int(local[1]), inode):
                return None
            flow = self._new(conn, chain, inode, family, (str(local[0]), int(local[1])))
        try:
            await flow.udp.open()          # once: a concurrent WRAP waits for it
        except SocksifyError as exc:
            self._end(flow, f"refused: {exc}")
            raise
        assert flow.relay is not None
        if (family == socket.AF_INET and flow.relay.version == 6) or (
                v6only and flow.relay.version == 4):
            return None                  # this socket cannot reach hop 1's relay
        if bound is not None and not bound.is_unspecified and _plain(bound) != \
                flow.declared:
            # bound to another address than the one hop 1 was told: it would drop them
            self._end(flow, "the program's socket is bound to another address")
            return None
        prefixes = handoff_prefixes(flow.assoc.relays, str(conn.dst), conn.port)
        if prefixes is None:
            return None
        carry = self.grant(conn, chain)
        flow.last = (conn.dst, conn.port, carry.carry_token)
        return WrapReply(flow.relay, flow.assoc.relays[0][1], carry.generation,
                         carry.carry_token, *prefixes, carry.relay_port4,
                         carry.relay_port6)

    def _new(self, conn: Connection, chain: ChainSpec, inode: int, family: int,
             local: Endpoint) -> WrappedFlow:
        record = open_record(self.router, conn.app, conn.dst, conn.port, None,
                             "handoff")
        record.rule, record.chain, record.session = conn.rule, chain.name, conn.session
        program = local
        bound = parse_address(local[0])
        if bound is None or bound.is_unspecified:     # the wildcard: reach it on loopback
            program = ("127.0.0.1" if family == socket.AF_INET else "::1", local[1])
        flow = WrappedFlow(record, chain, inode, family, program,
                           self.router.sessions.selector,
                           lambda err, why: self._lost(flow, err, why))
        self.flows[(inode, chain.name)] = flow
        return flow

    # ----- the end -------------------------------------------------------------------
    def _lost(self, flow: WrappedFlow, err: int, why: str) -> None:
        """A control connection ended: one ERROR envelope, and the flow ends (the
        association closed every control connection, so hop 1 closes its relay)."""
        if flow.last is not None:
            dst, port, token = flow.last
            code = wire.Code.from_errno(err)
            envelope = Envelope.error(dst, port, token, code).dumps()
            self.send_error(flow.family, flow.program, envelope)
        self._end(flow, why)

    def _end(self, flow: WrappedFlow, why: str) -> None:
        if flow.closed:
            return
        flow.closed = True
        flow.udp.close()
        for key, other in list(self.flows.items()):
            if other is flow:
                del self.flows[key]
        end_record(self.router, flow.record, why)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP)
            if self.flows:
                self.sweep()

    def sweep(self) -> None:
        """End the flows whose program socket is gone (one dump for all)."""
        try:
            alive = self.inodes()
        except OSError as exc:
            log.debug("handed-off UDP: no socket table (%s)", exc)
            return
        for flow in list(self.flows.values()):
            if (flow.port, flow.inode) not in alive:
                self._end(flow, "the program's socket is closed")

    def _visible(self, port: int, inode: int) -> bool:
        """Is the socket in this daemon's socket table? The sweep ends a flow whose
        socket it cannot see: one of another network namespace (or a host where
        sock_diag cannot be used) is carried instead."""
        try:
            return (port, inode) in self.inodes()
        except OSError as exc:
            log.debug("handed-off UDP: no socket table (%s): carried instead", exc)
            return False

    def status(self) -> dict[str, int]:
        return {"flows": len(self.flows)}


def _relay_ip(assoc: UdpAssociation) -> wire.IPAddress | None:
    """Hop 1's relay as an address: as the hop named it, or (a name: the hop's own)
    the address our control connection reached."""
    addr = parse_address(assoc.relays[0][0])
    if addr is None and assoc.controls:
        try:
            addr = parse_address(str(assoc.controls[0].sock.getpeername()[0]))
        except OSError:
            return None
    if addr is not None and addr.version == 6 and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _plain(addr: wire.IPAddress) -> wire.IPAddress:
    if addr.version == 6 and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _declared(assoc: UdpAssociation) -> wire.IPAddress | None:
    try:
        addr = parse_address(str(assoc.controls[0].sock.getsockname()[0]))
    except (OSError, IndexError):
        return None
    return None if addr is None else _plain(addr)

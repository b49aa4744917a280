"""Datagram handoff (docs/wire.md, "Datagram handoff: WRAP"): the daemon builds a
chain's UDP association for a program's own UDP socket and steps off the datagram
path; the shim sends each datagram from that socket straight to hop 1's relay with the
opaque send prefix before it, and strips the reply prefix from the answers.

One flow per (program socket inode, chain), a ChainFlow (core/udpflow.py) shared by all
its destinations (only the innermost header differs). Hop 1 is told the datagrams come from (the local address of
our control connection to hop 1, the program socket's port). The flow keeps a copy of
the program's socket (the one WRAP attached) for its whole life, so that the port stays
bound to that socket: no other socket (another user's) can bind it and send through
hop 1's relay while the association lives. A flow ends when a control connection is
lost, the chain changes, the daemon stops, the program closes the socket (UNWRAP from
the shim's close()) or the process that asked exits (pidwatch.py); only once hop 1 has
closed its end of the control connection (or RELEASE_WAIT passed) is the copy closed
and the port free. When an association is lost, its control connections are closed
(hop 1 closes its relay, so a connected program socket gets ECONNREFUSED from the
kernel) and the carrier sends one ERROR envelope to the program socket with the latest
grant's token. The daemon sees none of the datagrams: these flows show no byte
counts."""

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
from .pidwatch import PidWatch
from .records import Connection, UdpFlow
from .router import Router
from .udpflow import ChainFlow, Lost, SelectorFor, end_record, open_record

log = logging.getLogger("socksify.wrapped")

MAX_FLOWS = 4096       # flows in all; past it WRAP is answered as CONNECT (CARRY)
RELEASE_WAIT = 5.0     # seconds an ended flow waits for hop 1 to close before the port

Endpoint = tuple[str, int]
Grant = Callable[[Connection, ChainSpec], wire.Reply]          # Carrier.grant
# family, the program socket's address, the envelope: Carrier.send_to_program
SendError = Callable[[int, Endpoint, bytes], None]
Inodes = Callable[[], "set[tuple[int, int]]"]                  # (port, inode) alive


class WrappedFlow:
    """A handoff flow: its ChainFlow (core/udpflow.py; no datagram passes through it),
    the program socket it serves and hop 1's relay as that socket sends to it."""

    def __init__(self, record: UdpFlow, chain: ChainSpec, inode: int, family: int,
                 program: Endpoint, selector_for: SelectorFor, lost: Lost,
                 held: socket.socket, pid: int, uid: int) -> None:
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
        self.held = held              # our copy of the program's socket: holds the port
        self.pid = pid                # the process that asked (its exit ends the flow)
        self.uid = uid

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
        self._releasing: set[asyncio.Task[None]] = set()
        self._held: dict[int, WrappedFlow] = {}          # id(flow): ended, port held
        self.pids = PidWatch(self._exited)

    def close(self) -> None:
        for flow in list(self.flows.values()):
            self._end(flow, "the daemon stops")
        self.pids.close()

    async def drain(self, timeout: float = RELEASE_WAIT) -> None:
        """After close(): until every ended flow has let its port go (hop 1 closed its
        end), at most timeout; what is left is closed now."""
        if self._releasing:
            await asyncio.wait(set(self._releasing), timeout=timeout)
        for releasing in self._releasing:
            releasing.cancel()
        for flow in list(self._held.values()):
            flow.held.close()

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
        if app_sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR):
            return None                  # another user's socket could share its port
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
            if not self.pids.watch(conn.app.pid):
                return None              # an exit we could not see: carried instead
            flow = self._new(conn, chain, inode, family, (str(local[0]), int(local[1])),
                             _copy(app_sock))
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
             local: Endpoint, held: socket.socket) -> WrappedFlow:
        record = open_record(self.router, conn.app, conn.dst, conn.port, None,
                             "handoff")
        record.rule, record.chain, record.session = conn.rule, chain.name, conn.session
        program = local
        bound = parse_address(local[0])
        if bound is None or bound.is_unspecified:     # the wildcard: reach it on loopback
            program = ("127.0.0.1" if family == socket.AF_INET else "::1", local[1])
        flow = WrappedFlow(record, chain, inode, family, program,
                           self.router.sessions.selector,
                           lambda err, why: self._lost(flow, err, why), held,
                           conn.app.pid, conn.app.uid)
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
        # hop 1's control connection, kept open past the association's close by a copy,
        # to see hop 1 close it (its relay then is gone) before the port is let go
        assoc = flow.udp.assoc
        try:
            hop1 = assoc.controls[0].sock.dup() if assoc is not None else None
        except (OSError, IndexError):
            hop1 = None
        flow.udp.close()
        for key, other in list(self.flows.items()):
            if other is flow:
                del self.flows[key]
        self._forget_pid(flow.pid)
        end_record(self.router, flow.record, why)
        task = asyncio.ensure_future(self._release(flow, hop1))
        self._releasing.add(task)
        self._held[id(flow)] = flow
        task.add_done_callback(self._releasing.discard)

    async def _release(self, flow: WrappedFlow, hop1: socket.socket | None) -> None:
        """Close our copy of the program's socket (its port is free then) once hop 1
        has closed the control connection we ended, or after RELEASE_WAIT."""
        try:
            if hop1 is not None:
                hop1.shutdown(socket.SHUT_WR)     # our copy kept it open: now the FIN
                await asyncio.wait_for(_closed_by_peer(hop1), RELEASE_WAIT)
        except (asyncio.TimeoutError, OSError) as exc:
            log.debug("[%s] hop 1 did not close the association's control connection "
                      "(%r): the socket's port is let go anyway", flow.record.id, exc)
        finally:
            if hop1 is not None:
                hop1.close()
            flow.held.close()
            self._held.pop(id(flow), None)

    def unwrap(self, sock: socket.socket, pid: int, uid: int) -> int:
        """UNWRAP: the program closes sock (the shim's close()): end the flows that
        hold it for the process that asked (pid, uid; a forked child's close of its
        copy ends nothing). How many ended."""
        inode = os.fstat(sock.fileno()).st_ino
        ended = [f for (i, _), f in self.flows.items()
                 if i == inode and f.uid == uid and f.pid == pid]
        for flow in ended:
            self._end(flow, "the program closed its socket")
        return len(ended)

    def _exited(self, pid: int) -> None:
        for flow in [f for f in self.flows.values() if f.pid == pid]:
            self._end(flow, f"the program (pid {pid}) exited")

    def _forget_pid(self, pid: int) -> None:
        """Stop watching pid when none of its flows is left (an opening one is in
        flows too)."""
        if not any(f.pid == pid for f in self.flows.values()):
            self.pids.forget(pid)

    def _visible(self, port: int, inode: int) -> bool:
        """Is the socket in this daemon's socket table? One of another network
        namespace (or a host where sock_diag cannot be used) is carried instead: hop 1
        is told the datagrams come from this namespace's address."""
        try:
            return (port, inode) in self.inodes()
        except OSError as exc:
            log.debug("handed-off UDP: no socket table (%s): carried instead", exc)
            return False

    def status(self) -> dict[str, int]:
        return {"flows": len(self.flows)}


def _copy(sock: socket.socket) -> socket.socket:
    """Our own copy of the program's socket. Not sock.dup(): it sets the copy's
    timeout, which would change the blocking mode the program's descriptor shares."""
    return socket.socket(fileno=os.dup(sock.fileno()))


async def _closed_by_peer(sock: socket.socket) -> None:
    """Until sock's peer has closed (EOF or a reset); whatever it still sends is
    dropped."""
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    while True:
        try:
            if not await loop.sock_recv(sock, 4096):
                return
        except ConnectionError:
            return


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

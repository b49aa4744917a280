"""The isolated namespace's datagrams (other than port 53), carried through SOCKS5 UDP
chains. The namespace's nft rules redirect every such datagram to the carrier
sockets the launcher bound there (127.0.0.1 and [::1], ruleset.py); each arrives from
the program's socket address (or, for a second destination of the same socket, a
port the kernel's NAT chose). conntrack knows where it was going (conntrack.py, one
lookup per flow) and un-rewrites what the carrier sends back, so the program sees
the real remote as the source of each reply.

Per program socket (its address in the namespace): a UdpFlow in the live table (path
"isolated"), the program identified once (owners.py), and one SOCKS5 UDP association
per chain it uses (chains/udp.py), opened on its first datagram. Each destination is
decided by the policy under the launcher's session, as an isolated TCP connection
is: a stand-in address is mapped back to its name (the last hop gets ATYP 3); only a
chain rule with udp = "chain" carries it. Anything else -- block, direct (the
namespace has no way out), a chain without udp = "chain", a SOCKS4 or HTTP hop, a hop
refusing UDP ASSOCIATE -- drops the datagram (counted, logged once per rule and
destination): the program sees no answer, nothing leaves.

A reply is sent back through the flow (conntrack entry) whose destination it came
from; one from any other address or port cannot be given that source and is dropped
(counted). A lost association (a hop's control connection ends) drops the program's
datagrams to that chain for FAILED_HOLD seconds; the next one after that opens a new
association. A program socket the program has closed (sock_diag no longer finds its
inode) or silent both ways for FLOW_IDLE seconds is closed (its associations with
it)."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import time
from typing import Any, cast

from ..chains import ChainSpec
from ..core.records import UdpFlow
from ..core.router import Router
from ..core.udpflow import ChainFlow, end_record, open_record
from .. import sockdiag
from ..errors import SocksifyError, Unsupported
from ..procinfo import AppInfo, uid_only
from . import conntrack, owners
from .redirect import IDENTIFY_TIMEOUT, Namespace
from .udpflows import Path, Program

log = logging.getLogger("socksify.daemon")

PATH_IDLE = 20.0     # a flow's conntrack entry lives >= 30 s after its last datagram
FLOW_IDLE = 60.0     # a program socket silent both ways this long is closed
FAILED_HOLD = 5.0    # after a lost or refused association: dropped this long
SWEEP = 2.0
MAX_WARNED = 256
MAX_PROGRAMS = 256   # program sockets carried at once per namespace


class _Carrier(asyncio.DatagramProtocol):
    def __init__(self, owner: Datagrams) -> None:
        self.owner = owner
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        assert self.transport is not None
        self.owner.received(self.transport, data, addr)


class Datagrams:
    """Serves one namespace's carrier sockets until close()."""

    def __init__(self, router: Router, ns: Namespace, nl: socket.socket | None) -> None:
        self.router = router
        self.ns = ns
        self.nl = nl
        self.paths: dict[tuple[Any, ...], Path] = {}
        self.programs: dict[tuple[owners.IPAddress, int], Program] = {}
        self.transports: list[asyncio.DatagramTransport] = []
        self.unknown = 0         # dropped before any flow: conntrack did not know, cap
        self.closed = False

    async def serve(self, socks: list[socket.socket]) -> None:
        """Serve the carrier sockets until cancelled; then close everything."""
        loop = asyncio.get_running_loop()
        try:
            for sock in socks:
                sock.setblocking(False)
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Carrier(self), sock=sock)
                self.transports.append(transport)
            while True:
                await asyncio.sleep(SWEEP)
                self.sweep(time.monotonic())
        finally:
            self.close()

    # ----- from the program -------------------------------------------------------
    def received(self, carrier: asyncio.DatagramTransport, data: bytes,
                 peer: tuple[Any, ...]) -> None:
        now = time.monotonic()
        key = (id(carrier), *peer[:2])
        path = self.paths.get(key)
        if path is None or now - path.last > PATH_IDLE:
            if path is not None:
                self._forget(key, path)
            path = self._new_path(key, carrier, peer, now)
            if path is None:
                return
        path.last = path.program.last = now
        program, flow = path.program, path.program.flow
        if flow is not None and path.decided and program.queue.empty():
            # the common case, sent at once: decided, its association open (or
            # refused), nothing waiting before it
            chain = program.chains.get(path.chain.name) if path.chain else None
            if path.chain is None or chain is not None:
                self._send(flow, path, chain, data)
                return
        try:
            program.queue.put_nowait((path, data))
        except asyncio.QueueFull:
            if program.flow is not None:
                program.flow.dropped += 1
            else:
                program.dropped += 1
            return
        if program.pump is None:
            program.pump = asyncio.ensure_future(self._pump(program))

    def _new_path(self, key: tuple[Any, ...], carrier: asyncio.DatagramTransport,
                  peer: tuple[Any, ...], now: float) -> Path | None:
        """The flow a datagram from peer belongs to, from conntrack (None: unknown,
        dropped: without its destination nothing can be decided)."""
        orig = None
        if self.nl is not None:
            local = carrier.get_extra_info("sockname")
            try:
                reply = conntrack.Tuple(ipaddress.ip_address(local[0]), int(local[1]),
                                        ipaddress.ip_address(peer[0]), int(peer[1]))
            except ValueError:
                reply = None
            orig = conntrack.original(self.nl, reply) if reply is not None else None
            if orig is not None and reply is not None and \
                    (orig.dst, orig.dport) == (reply.src, reply.sport):
                orig = None    # sent to the carrier's own address: not redirected
        if orig is None:
            self.unknown += 1
            if self.unknown in (1, 100, 10000):
                log.warning("isolated pid %d: %d datagram(s) whose destination "
                            "conntrack did not know: dropped", self.ns.pid, self.unknown)
            return None
        src = orig.src.ipv4_mapped if isinstance(orig.src, ipaddress.IPv6Address) \
            and orig.src.ipv4_mapped else orig.src
        program = self.programs.get((src, orig.sport))
        if program is None and len(self.programs) >= MAX_PROGRAMS:
            self.unknown += 1       # each would hold associations: a cap, not a queue
            if self.unknown in (1, 100, 10000):
                log.warning("isolated pid %d: more than %d UDP sockets carried at once;"
                            " datagrams of new ones dropped", self.ns.pid, MAX_PROGRAMS)
            return None
        if program is None:
            program = self.programs[(src, orig.sport)] = Program(
                (src, orig.sport), now, (orig.dst, orig.dport))
        path = Path(carrier, peer, orig.dst, orig.dport, program, now)
        program.paths.append(path)
        self.paths[key] = path
        return path

    async def _pump(self, program: Program) -> None:
        """Identify the program once, then decide and send its datagrams in order."""
        try:
            flow = await self._open_flow(program)
            while True:
                path, payload = await program.queue.get()
                await self._forward(program, flow, path, payload)
        except Exception:             # a bug: never leave a flow that drops silently
            log.exception("isolated pid %d: UDP flow of %s failed", self.ns.pid,
                          program.key)
            program.pump = None
            self._close_program(program, "failed")

    async def _open_flow(self, program: Program) -> UdpFlow:
        router, ns = self.router, self.ns
        program.inode = self._inode(program.key, program.remote)
        app = await self._identify(program.key, program.inode)
        flow = open_record(router, app, None, 0, None, "isolated")
        flow.dropped = program.dropped
        session, policy, why = router.sessions.policy_for(ns.session, ns.uid,
                                                          router.policy)
        flow.session = session
        program.flow, program.policy = flow, policy
        if policy is None:
            log.warning("[%s] isolated %s: UDP refused: %s", flow.id, app, why)
        return flow

    def _inode(self, local: tuple[owners.IPAddress, int],
               remote: tuple[owners.IPAddress, int]) -> int | None:
        """The inode of the program's UDP socket at local (that sent to remote), by
        one exact sock_diag lookup in the namespace; None if not found (or no
        sock_diag socket was handed over)."""
        if self.ns.diag is None:
            return None
        try:
            found = sockdiag.lookup(socket.IPPROTO_UDP, local, remote, self.ns.diag, 0.5)
        except (OSError, ValueError):
            return None
        return found.inode if found is not None and found.inode else None

    async def _identify(self, local: tuple[owners.IPAddress, int],
                        inode: int | None) -> AppInfo:
        """The process holding the UDP socket at local (its inode, when known; else
        found in the namespace's /proc/PID/net/udp), the namespace's recent owners
        first."""
        ns = self.ns
        try:
            pid = owners.owner(ns.pid, local, None, "udp", True, inode) \
                if inode is not None else None
            if pid is None:
                pid = await asyncio.wait_for(asyncio.to_thread(
                    owners.owner, ns.pid, local, None, "udp", False, inode),
                    IDENTIFY_TIMEOUT)
        except (OSError, ValueError, asyncio.TimeoutError):
            pid = None
        if pid is None:
            return uid_only(ns.uid, f"program not found (isolated, uid {ns.uid})")
        return self.router.procs.identify(pid, ns.uid)

    async def _forward(self, program: Program, flow: UdpFlow, path: Path,
                       payload: bytes) -> None:
        if not path.decided:
            self._decide(program, flow, path)
        chain = await self._chain(program, flow, path.chain) \
            if path.chain is not None else None
        self._send(flow, path, chain, payload)

    @staticmethod
    def _send(flow: UdpFlow, path: Path, chain: ChainFlow | None,
              payload: bytes) -> None:
        if chain is not None:
            chain.send(path.target, path.port, payload)
        else:
            flow.dropped += 1

    def _decide(self, program: Program, flow: UdpFlow, path: Path) -> None:
        path.decided = True
        router, policy = self.router, program.policy
        if flow.dst is None and flow.host is None:      # the first, shown in the table
            flow.dst, flow.port = path.dst, path.port
        try:
            if policy is None:
                raise SocksifyError("no policy for this program's session",
                                    errno.EACCES)
            if router.fake.is_fake(path.dst):
                path.stand_in = router.fake.use(path.dst, self.ns.uid)
                if path.stand_in is None:
                    raise SocksifyError("a stand-in address this daemon never handed "
                                        "out to this user", errno.EHOSTUNREACH)
                router.fake.hold(path.stand_in)
                path.host = path.stand_in.name
                if flow.host is None and flow.dst == path.dst:
                    flow.host = path.host
            elif path.dst.is_multicast or path.dst.is_unspecified or \
                    path.dst == ipaddress.IPv4Address("255.255.255.255"):
                raise Unsupported("multicast and broadcast are not carried (they "
                                  "would reach the last hop's network)", errno.ENETUNREACH)
            decision = policy.decide(flow.app, None if path.host else path.dst,
                                     path.port, path.host)
            if not flow.rule:
                flow.rule = decision.rule
            action = decision.action
            if action.kind != "chain" or decision.udp != "chain":
                why = "a chain carries UDP only with udp = \"chain\" in its rule" \
                    if action.kind == "chain" else "blocked" \
                    if action.kind == "block" else \
                    "the isolated namespace sends no UDP directly"
                raise Unsupported(f"{action} [{decision.rule}]: {why}",
                                  errno.ENETUNREACH)
            assert action.chain is not None
            path.chain = action.chain
        except SocksifyError as exc:
            path.refused = str(exc)
            warned = (path.refused, f"{path.target}:{path.port}")
            if warned not in program.warned and len(program.warned) < MAX_WARNED:
                program.warned.add(warned)
                log.warning("[%s] isolated %s: UDP to %s:%d refused: %s", flow.id,
                            flow.app, path.target, path.port, exc)

    async def _chain(self, program: Program, flow: UdpFlow,
                     spec: ChainSpec) -> ChainFlow | None:
        """The program's open flow through spec (opened now if need be), or None:
        refused or lost less than FAILED_HOLD seconds ago."""
        chain = program.chains.get(spec.name)
        if chain is not None:
            return chain
        if time.monotonic() < program.failed.get(spec.name, 0.0):
            return None

        def deliver(host: str, port: int, payload: bytes) -> None:
            self._deliver(program, spec.name, host, port, payload)

        def lost(err: int, why: str) -> None:
            if program.chains.get(spec.name) is chain:
                del program.chains[spec.name]
                program.failed[spec.name] = time.monotonic() + FAILED_HOLD
                log.warning("[%s] isolated %s: UDP through chain %s lost: %s; its "
                            "datagrams are dropped for %.0f s", flow.id, flow.app,
                            spec.name, why, FAILED_HOLD)

        chain = ChainFlow(flow, spec, self.router.sessions.selector, deliver, lost)
        try:
            await chain.open()
        except SocksifyError as exc:
            program.failed[spec.name] = time.monotonic() + FAILED_HOLD
            log.warning("[%s] isolated %s: UDP through chain %s refused: %s", flow.id,
                        flow.app, spec.name, exc)
            return None
        if self.closed or program.flow is None or \
                self.programs.get(program.key) is not program:
            chain.close()                               # closed meanwhile
            return None
        program.chains[spec.name] = chain
        return chain

    # ----- to the program ---------------------------------------------------------
    def _deliver(self, program: Program, chain: str, host: str, port: int,
                 payload: bytes) -> None:
        """A reply from host:port (as the last hop saw it): back through the flow to
        that destination -- the one by that address, or one by a name (whose address
        only the last hop knows) with that port; of those, the last used -- else
        dropped."""
        flow = program.flow
        assert flow is not None
        try:
            addr: owners.IPAddress | None = ipaddress.ip_address(host)
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
                addr = addr.ipv4_mapped
        except ValueError:
            addr = None
        best = None
        for path in program.paths:
            if path.chain is None or path.chain.name != chain or path.port != port or \
                    (path.host is None and path.dst != addr):
                continue
            if best is None or path.last > best.last:
                best = path
        if best is None or best.carrier.is_closing():
            flow.dropped += 1
            return
        best.carrier.sendto(payload, best.peer)
        best.last = program.last = time.monotonic()
        flow.came_down(len(payload))

    # ----- ending -----------------------------------------------------------------
    def _forget(self, key: tuple[Any, ...], path: Path) -> None:
        self.paths.pop(key, None)
        try:
            path.program.paths.remove(path)
        except ValueError:
            pass
        if path.stand_in is not None:
            self.router.fake.release(path.stand_in)
            path.stand_in = None

    def sweep(self, now: float) -> None:
        for key, path in list(self.paths.items()):
            if now - path.last > PATH_IDLE:
                self._forget(key, path)
        for program in list(self.programs.values()):
            if now - program.last > FLOW_IDLE:
                self._close_program(program, "idle")
            elif program.inode is not None and now - program.last > SWEEP and \
                    self._inode(program.key, program.remote) != program.inode:
                # the program closed its socket (a resolver's socket per query):
                # its associations go now, not after FLOW_IDLE
                self._close_program(program, "socket closed")

    def _close_program(self, program: Program, why: str) -> None:
        self.programs.pop(program.key, None)
        for key, path in list(self.paths.items()):
            if path.program is program:
                self._forget(key, path)
        for chain in program.chains.values():
            chain.close()
        program.chains.clear()
        if program.pump is not None:
            program.pump.cancel()
        if program.flow is not None:
            end_record(self.router, program.flow, why)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for program in list(self.programs.values()):
            self._close_program(program, "namespace ended")
        for transport in self.transports:
            transport.close()

"""The carrier: the daemon's datagram port on 127.0.0.1 (and ::1), where the shim sends
the datagrams of programs whose destination the policy carries through a chain, each
behind a 36-byte envelope (docs/wire.md, "Carried datagrams").

grant() answers a shim's CONNECT for a datagram with CARRY and a fresh token. A
datagram is taken only with a known token of the current policy generation, to that
grant's destination, from a socket that the kernel's UDP table (sock_diag) shows owned
by the grant's uid; anything else is dropped and counted. Taken datagrams go to their
flow (core/carried.py): one per program socket address and chain, shown in
`socksifyd connections` with path "carried"; flows idle for IDLE seconds end."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections import Counter
from typing import Callable

from .. import sockdiag
from ..chains import ChainSpec
from ..chains.udp import check_route
from ..core.carried import CarriedFlow
from ..core.grants import Grant, Grants
from ..core.records import Connection
from ..core.router import Router
from ..core.udpflow import end_record, open_record
from ..errors import Unsupported
from ..protocol import control as wire
from ..protocol.datagram import ENVELOPE_SIZE, Envelope

log = logging.getLogger("socksify.carrier")

IDLE = 120.0           # seconds without a datagram either way before a flow ends
SWEEP = 10.0           # how often idle flows and stale grants are looked for
MAX_FLOWS = 4096       # flows in all; a new one beyond it is refused (ERROR)
_TOKEN_AT = ENVELOPE_SIZE - wire.CARRY_TOKEN_SIZE   # the token ends the envelope

Endpoint = tuple[str, int]
# the uid owning the UDP socket bound to `program` that sent to `carrier`, or None
OwnerOf = Callable[[Endpoint, Endpoint], "int | None"]


class Carrier:
    def __init__(self, router: Router, owner_of: OwnerOf) -> None:
        self.router = router
        self.owner_of = owner_of
        self.grants = Grants()
        self.flows: dict[tuple[Endpoint, str], CarriedFlow] = {}
        self.transports: dict[int, asyncio.DatagramTransport] = {}
        self.ports = (0, 0)
        self.dropped: Counter[str] = Counter()
        self._sweeper: asyncio.Task[None] | None = None

    # ----- listening -----------------------------------------------------------------
    async def start(self) -> tuple[int, int]:
        """Bind 127.0.0.1 and ::1 (if the host has IPv6 loopback): (port4, port6)."""
        loop = asyncio.get_running_loop()
        ports = [0, 0]
        for i, (family, host) in enumerate(((socket.AF_INET, "127.0.0.1"),
                                            (socket.AF_INET6, "::1"))):
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Port(self, family), local_addr=(host, 0), family=family)
            except OSError as exc:
                if family == socket.AF_INET:
                    raise
                log.info("no carrier on [::1] (%s): IPv6 sockets use 127.0.0.1", exc)
                continue
            self.transports[family] = transport
            ports[i] = int(transport.get_extra_info("sockname")[1])
        self.ports = (ports[0], ports[1])
        self._sweeper = asyncio.ensure_future(self._sweep())
        return self.ports

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for flow in list(self.flows.values()):
            flow.close("the daemon stops")
        for transport in self.transports.values():
            transport.close()
        self.transports.clear()
        self.grants.clear()

    # ----- the control side: CONNECT for a datagram ----------------------------------
    def grant(self, conn: Connection, chain: ChainSpec) -> wire.Reply:
        """CARRY for conn (decided: chain with udp = "chain"), or raise Unsupported
        when the chain cannot carry UDP or there is no carrier."""
        if not self.transports:
            raise Unsupported("the daemon has no carrier port", errno.ENETUNREACH)
        check_route(chain.hops)
        assert conn.dst is not None
        generation = self.router.generation.value if self.router.generation else 0
        grant = self.grants.add(conn.app, conn.dst, conn.port, conn.host, conn.rule,
                                chain, conn.session, generation, conn.stand_in)
        return wire.Reply.carry(self.ports[0], self.ports[1], generation, grant.token)

    def send_to_program(self, family: int, to: Endpoint, data: bytes) -> None:
        """One datagram (an ERROR envelope) from the carrier to a program's socket
        (a datagram handoff's, core/wrapped.py); an IPv6 socket is reached from
        127.0.0.1 when there is no carrier on ::1."""
        transport = self.transports.get(family) or self.transports.get(socket.AF_INET)
        if transport is None or transport.is_closing():
            return
        if transport is not self.transports.get(family) and ":" in to[0]:
            to = ("127.0.0.1", to[1])
        transport.sendto(data, to)

    # ----- the datagram side ---------------------------------------------------------
    def received(self, family: int, data: bytes, addr: Endpoint) -> None:
        program = (str(addr[0]), int(addr[1]))
        generation = self.router.generation.value if self.router.generation else 0
        # the usual case, without parsing: the token's grant, and the envelope exactly
        # as the shim writes it for that grant (its destination, code 0, zero padding)
        grant = self.grants.get(data[_TOKEN_AT:ENVELOPE_SIZE], generation)
        if grant is not None and data.startswith(grant.head):
            payload = data[ENVELOPE_SIZE:]
        else:
            try:
                env, payload = Envelope.loads(data)
            except wire.WireError:
                return self._drop("malformed", program)
            grant = self.grants.get(env.token, generation)
            if grant is None:
                return self._drop("unknown token", program)
            if env.addr != grant.dst or env.port != grant.port:
                return self._drop("another destination than the grant's", program)
        key = (program, grant.chain.name)
        flow = self.flows.get(key)
        if flow is None or grant.token not in flow.tokens:
            if not self._owned(family, program, grant):
                return self._drop("a socket of another user", program)
            if flow is None:
                if len(self.flows) >= MAX_FLOWS:
                    return self._drop("too many flows", program)
                flow = self._new_flow(family, program, grant)
            flow.tokens.add(grant.token)
            if grant.stand_in is not None:     # not given to another name meanwhile
                self.router.fake.hold(grant.stand_in)
                flow.held.append(grant.stand_in)
        flow.send(grant, payload)

    def _owned(self, family: int, program: Endpoint, grant: Grant) -> bool:
        transport = self.transports.get(family)
        if transport is None:
            return False
        ours = transport.get_extra_info("sockname")
        uid = self.owner_of(program, (str(ours[0]), int(ours[1])))
        if uid == grant.app.uid:
            return True
        log.warning("carrier: a datagram from %s:%d with %s's grant comes from a socket "
                    "of uid %s, not %d: dropped", program[0], program[1], grant.app,
                    uid, grant.app.uid)
        return False

    def _new_flow(self, family: int, program: Endpoint, grant: Grant) -> CarriedFlow:
        router = self.router
        record = open_record(router, grant.app, grant.dst, grant.port, grant.host,
                             "carried")
        record.rule, record.chain = grant.rule, grant.chain.name
        record.session = grant.session
        transport = self.transports[family]

        def send_back(data: bytes, to: Endpoint) -> None:
            if not transport.is_closing():
                transport.sendto(data, to)

        flow = CarriedFlow(record, grant.chain, program, send_back,
                           router.sessions.selector, self._ended)
        self.flows[(program, grant.chain.name)] = flow
        return flow

    def _ended(self, flow: CarriedFlow, why: str) -> None:
        for key, other in list(self.flows.items()):
            if other is flow:
                del self.flows[key]
        for stand_in in flow.held:
            self.router.fake.release(stand_in)
        flow.held.clear()
        end_record(self.router, flow.record, why)

    def _drop(self, why: str, program: Endpoint) -> None:
        self.dropped[why] += 1
        if self.dropped[why] & (self.dropped[why] - 1) == 0:     # 1, 2, 4, 8, ...
            log.warning("carrier: datagram from %s:%d dropped: %s (%d so far)",
                        program[0], program[1], why, self.dropped[why])

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP)
            now = time.monotonic()
            for flow in list(self.flows.values()):
                if flow.udp.idle(now, IDLE):
                    flow.close("idle")
            in_use = {t for flow in self.flows.values() for t in flow.tokens}
            generation = self.router.generation.value if self.router.generation else 0
            self.grants.prune(generation, in_use)

    def status(self) -> dict[str, object]:
        return {"port4": self.ports[0], "port6": self.ports[1],
                "flows": len(self.flows), "grants": len(self.grants),
                "dropped": dict(self.dropped)}


def udp_owner(program: Endpoint, carrier: Endpoint) -> int | None:
    """The uid of the UDP socket bound to `program` that sent to `carrier`, from the
    kernel's socket table (one sock_diag lookup; /proc/net/udp where netlink cannot be
    used), None if it is not there."""
    try:
        owner = sockdiag.lookup(socket.IPPROTO_UDP, program, carrier)
    except OSError:
        try:
            owner = sockdiag.proc_lookup(socket.IPPROTO_UDP, program, carrier)
        except OSError:
            return None
    return None if owner is None else owner.uid


class _Port(asyncio.DatagramProtocol):
    def __init__(self, carrier: Carrier, family: int) -> None:
        self.carrier = carrier
        self.family = family

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.carrier.received(self.family, data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("carrier: %s", exc)    # a program's socket closed: ICMP unreachable

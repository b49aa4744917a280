"""The router: every connection's decision and route. A listener hands it a
request (a shim's CONNECT, HANDOFF, RESOLVE, NAMEOF or PEERNAME, a front-door
client's target); it applies the policy of the request's session (or the daemon's),
picks or refuses, and opens the route through chains/ -- then the listener answers.
It knows nothing of sockets it did not get, of listeners or of the process."""

from __future__ import annotations

import errno
import itertools
import logging
import os
import socket
import sys
import time
from typing import Any, Awaitable, Callable

from ..chains import (ChainSpec, Handed, HandoffImpossible, HopHealth,
                      Tunnel, TunnelPool, hand_direct, hand_tunnel, open_direct,
                      open_tunnel)
from ..dns import Exhausted, FakeNames, hosts_file_names, normalize
from ..errors import PolicyBlocked, SocksifyError
from ..generation import GenerationFile
from ..policy import Action, Policy
from ..procinfo import AppInfo, ProcessTable, own_uid
from ..protocol import control as wire
from ..protocol.datagram import WrapReply
from ..proxies import Proxy, route_text
from . import connlog
from .eager import in_task
from .events import Events
from .handed import HandedOff
from .records import Connection, Lookup
from .sessions import Sessions
from .streams import stream_auth
from .table import ConnectionTable

log = logging.getLogger("socksify.daemon")


class Router:
    def __init__(self, generation: GenerationFile | None = None) -> None:
        self.policy: Policy | None = None     # the daemon's; sessions may have their own
        self.health = HopHealth()
        self.procs = ProcessTable()
        self.fake = FakeNames()
        self.hosts_names = hosts_file_names()
        self.sessions = Sessions(self.health)
        self.events = Events()
        self.table = ConnectionTable(lambda stand_in: self.fake.release(stand_in),
                                     self.events)
        self.handed = HandedOff(self.health, self._handed_closed)  # followed in the kernel
        self.generation = generation   # DIRECT answers may be cached while it holds
        self.relay_ports = (0, 0)      # loopback relay listeners: IPv4, IPv6 (0: none)
        # udp = "chain": CARRY (listeners/carrier.py), WRAP, UNWRAP (core/wrapped.py)
        self.carry: Callable[[Connection, ChainSpec], wire.Reply] | None = None
        self.wrap: Callable[[Connection, ChainSpec, socket.socket],
                            Awaitable[WrapReply | None]] | None = None
        self.unwrap: Callable[[socket.socket, int, int], int] | None = None  # sock pid uid
        # the lane (listeners/lane.py): offered each chain handed off to a program
        # (with the pool whose tunnel the program's socket could take), told when the
        # routes it was offered may no longer hold
        self.lane_offer: Callable[[Connection, bytes, ChainSpec, tuple[Proxy, ...],
                                   socket.socket, TunnelPool | None],
                                  None] | None = None
        self.lane_forget: Callable[[], None] | None = None
        self.connections_total = 0
        self.handed_off = 0            # connections carried by the kernel (handoff)
        self._ids = itertools.count(1)

    # ----- the policy --------------------------------------------------------------
    def set_policy(self, policy: Policy | None) -> None:
        """A new daemon policy (start, reload): new connections follow it, live ones
        go on; its chains' selectors start afresh."""
        self.policy = policy
        self.sessions.forget_policy_selectors()
        if self.lane_forget is not None:
            self.lane_forget()
        self._dns_ranges()
        self.hosts_names = hosts_file_names()

    def _dns_ranges(self) -> None:
        """Stand-in addresses come from the daemon policy's [dns] ranges; a change of
        ranges starts a new table, a change of max_names or min_age applies to the
        table in place."""
        if self.policy is None:
            return
        p = self.policy
        if (str(self.fake.nets[4]), str(self.fake.nets[6])) != (p.dns_range4,
                                                                p.dns_range6):
            self.fake = FakeNames(p.dns_range4, p.dns_range6, p.dns_max_names,
                                  p.dns_min_age)
        else:
            self.fake.configure(p.dns_max_names, p.dns_min_age)

    def allows(self, uid: int) -> bool:
        """May a process of this uid use the daemon? Its own user always; others only
        for a root daemon whose policy names them in [daemon] allow_users."""
        if uid == own_uid():
            return True
        if own_uid() != 0 or self.policy is None or sys.platform == "win32":
            return False   # (Windows: own_uid() is 0 for the daemon's user alone)
        allowed = self.policy.allow_users
        if uid in allowed:
            return True
        try:
            import pwd
            return pwd.getpwuid(uid).pw_name in allowed
        except KeyError:
            return False

    def sees_all(self, uid: int | None) -> bool:
        """Does this uid see every user's sessions and connections (own user, root)?"""
        return uid is None or uid in (own_uid(), 0)

    # ----- the shim's questions ----------------------------------------------------
    def resolve(self, request: wire.ResolveRequest, pid: int, uid: int,
                app: AppInfo | None = None) -> bytes:
        """RESOLVE: may the program look this name up itself, or does it get a
        stand-in address so that the last hop resolves it? (`app`: if known.)"""
        found = self.lookup(app or self.procs.identify(pid, uid), request.name,
                            request.session, uid, 6 if request.family == 6 else 4)
        if found.verdict == "local":
            return wire.Reply(wire.Verdict.DIRECT).dumps()
        if found.verdict == "stand-in":
            assert found.addr is not None
            return wire.PeerReply(found.addr, 0).dumps()
        if found.verdict == "busy":
            return wire.Reply.fail(errno.ETIMEDOUT).dumps()   # EAI_AGAIN: try later
        return wire.Reply.fail(errno.EACCES).dumps()

    def lookup(self, app: AppInfo, name: str, session_id: bytes, uid: int,
               family: int | None) -> Lookup:
        """How uid's lookup of name is answered (the shim's RESOLVE, the isolated
        program's DNS query): "local" (resolved here or by the program), "stand-in"
        (addr, of `family`; with family None the decision alone, nothing reserved),
        "blocked", "refused" (no policy) or "busy" (no stand-in free)."""
        name = normalize(name)
        session, policy, why = self.sessions.policy_for(session_id, uid, self.policy)
        if policy is None:
            log.info("%s: lookup of %s refused: %s", app, name, why)
            return Lookup("refused", "", why)
        if name in self.hosts_names:
            return Lookup("local", "hosts file")
        decision = policy.decide_name(app, name)
        if decision.verdict == "local":
            log.debug("%s: lookup of %s resolves locally [%s]", app, name, decision.rule)
            return Lookup("local", decision.rule)
        if decision.verdict == "block":
            text = f"{app} lookup of {name} refused: {decision.why}"
            log.warning("%s [%s]", text, decision.rule)
            connlog.notify(session, {"event": "lookup", "ok": False, "text": text})
            return Lookup("blocked", decision.rule, decision.why)
        if family is None:
            return Lookup("stand-in", decision.rule)
        try:
            addr = self.fake.address_for(name, family, uid)
        except Exhausted as exc:
            text = f"{app} lookup of {name} refused: {exc}"
            log.warning("%s", text)
            connlog.notify(session, {"event": "lookup", "ok": False, "text": text})
            return Lookup("busy", decision.rule, str(exc))
        log.debug("%s: lookup of %s -> stand-in %s [%s]", app, name, addr, decision.rule)
        return Lookup("stand-in", decision.rule, "", addr)

    def name_of(self, request: wire.ConnectRequest, pid: int, uid: int,
                app: AppInfo | None = None) -> bytes:
        """NAMEOF: a stand-in's name; DIRECT for loopback or an address the policy
        sends direct on every port; else FAIL (a reverse query would name the
        destination to the local resolver: the program gets the numeric form)."""
        addr = request.addr
        if self.fake.is_fake(addr):
            name = self.fake.name_for(addr, uid)
            if name is not None:
                return wire.NameReply(name).dumps()
            log.debug("reverse lookup of %s refused: a stand-in address this daemon "
                      "never handed out to uid %d", addr, uid)
            return wire.Reply(wire.Verdict.FAIL).dumps()
        if addr.is_loopback:
            return wire.Reply(wire.Verdict.DIRECT).dumps()
        app = app or self.procs.identify(pid, uid)
        _, policy, why = self.sessions.policy_for(request.session, uid, self.policy)
        if policy is None:
            log.debug("%s: reverse lookup of %s refused: %s", app, addr, why)
            return wire.Reply(wire.Verdict.FAIL).dumps()
        decision = policy.decide_address(app, addr)
        if decision.action.kind == "direct":
            log.debug("%s: reverse lookup of %s resolves locally [%s]", app, addr,
                      decision.rule)
            return wire.Reply(wire.Verdict.DIRECT).dumps()
        log.debug("%s: reverse lookup of %s refused: %s [%s]", app, addr,
                  decision.action, decision.rule)
        return wire.Reply(wire.Verdict.FAIL).dumps()

    async def peername(self, request: wire.ConnectRequest, uid: int) -> bytes:
        """PEERNAME: the destination of uid's relayed connection whose app end is
        request's address, so getpeername() reports what the program asked for;
        another user's connection is answered as an unknown one (FAIL)."""
        conn = await self.table.by_app_address(request.addr, request.port)
        if conn is None or conn.dst is None or conn.app.uid != uid:
            return wire.Reply(wire.Verdict.FAIL).dumps()
        return wire.PeerReply(conn.dst, conn.port).dumps()

    async def connect(self, request: wire.ConnectRequest, pid: int, uid: int,
                      app_sock: socket.socket | None = None,
                      app: AppInfo | None = None,
                      after: list[Callable[[], None]] | None = None
                      ) -> tuple[wire.Reply | WrapReply, socket.socket | None]:
        """A shim's CONNECT, HANDOFF or WRAP: decide how the connection leaves and, for a
        chain, build it now. With the program's socket (HANDOFF, `app_sock`), the
        chain is built on it (READY) or a pre-built tunnel is finished and returned to
        be put in its place (SWAP, the socket to send back); else, or when the chain
        says relay, the program attaches to the relay with the token (RELAY).
        `after`: where its log line waits for the reply to be sent (None: written at
        once). It runs eagerly (core/eager.py) until it first waits: a decision
        never does; a chain usually first waits for hop 1's reply."""
        conn = self.new_connection(app or self.procs.identify(pid, uid), request.addr,
                                   request.port)
        conn.log_later = after
        try:
            return await self._connect(conn, request, uid, app_sock)
        finally:
            conn.log_later = None     # later lines are written at once

    async def _connect(self, conn: Connection, request: wire.ConnectRequest, uid: int,
                       app_sock: socket.socket | None
                       ) -> tuple[wire.Reply | WrapReply, socket.socket | None]:
        session, policy, why = self.sessions.policy_for(request.session, uid,
                                                        self.policy)
        conn.session = session
        if policy is None:
            return self._refuse(conn, errno.EACCES, why), None
        if self.fake.is_fake(request.addr):
            conn.stand_in = self.fake.use(request.addr, uid)
            if conn.stand_in is None:
                return self._refuse(conn, errno.EHOSTUNREACH, "a stand-in address this "
                                    "daemon never handed out to this user (was it "
                                    "restarted?)"), None
            conn.host = conn.stand_in.name
        if request.socktype is wire.SockType.DGRAM:
            decision = policy.decide(conn.app, request.addr, request.port, conn.host)
            conn.rule = decision.rule
            if decision.udp_direct and conn.host is None:
                self._event(conn, "UDP direct", ok=True)
                return self._direct(), None
            chain = decision.action.chain
            if chain is not None and decision.udp == "chain" and self.carry is not None:
                conn.chain = chain.name
                try:
                    if app_sock is not None and self.wrap is not None and not (
                            session and session.isolated) and chain.data_path == "handoff":
                        await in_task()
                        wrapped = await self.wrap(conn, chain, app_sock)
                        if wrapped is not None:
                            self._event(conn, "UDP handed off", ok=True)
                            return wrapped, None
                    reply = self.carry(conn, chain)      # listeners/carrier.py
                except SocksifyError as exc:
                    return self._refuse(conn, exc.errno or errno.ENETUNREACH,
                                        f"UDP refused: {exc}"), None
                self._event(conn, "UDP carried", ok=True)
                return reply, None
            return self._refuse(conn, errno.EACCES, f"UDP refused ({decision.action}: "
                                "a SOCKS chain carries UDP only with udp = \"chain\" "
                                "in its rule; udp = \"direct\" lets it out)"), None
        # an isolated program cannot connect directly: the daemon does it for it; and
        # its sockets live in its own network namespace, so only the relay reaches it
        isolated = session is not None and session.isolated
        try:
            action = self._decide(conn, policy)
            if action.kind == "direct" and not isolated and conn.host is None:
                self._event(conn, "direct", ok=True)
                return self._direct(), None
            if app_sock is not None and not isolated and (
                    action.chain is None or action.chain.data_path == "handoff"):
                try:
                    handed, pool = await self._hand_route(conn, action, app_sock)
                except HandoffImpossible as exc:
                    log.debug("[%s] no handoff (%s): relay", conn.id, exc)
                    conn.path = "relay"
                else:
                    self.handed_off += 1
                    self.handed.add(conn, handed.swap or app_sock,
                                    handed.route[0] if handed.route else None)
                    self.events.emit("connect", conn)
                    if self.lane_offer is not None and action.chain is not None \
                            and not handed.skipped:
                        self.lane_offer(conn, request.session, action.chain,
                                        handed.route, app_sock, pool)
                    if handed.swap is not None:
                        return wire.Reply(wire.Verdict.SWAP), handed.swap
                    return wire.Reply(wire.Verdict.READY), None
            tunnel = await self._open_route(conn, action)
        except SocksifyError as exc:
            return self._refuse(conn, exc.errno or errno.ECONNREFUSED, str(exc)), None
        token = self.table.park(conn, tunnel)
        if conn.stand_in is not None:    # held until the relayed connection ends
            self.fake.hold(conn.stand_in)
        return wire.Reply(wire.Verdict.RELAY, wire.Code.NONE, self.relay_ports[0],
                          self.relay_ports[1], token), None

    def _direct(self) -> wire.Reply:
        """DIRECT for a real address: the shim may cache it while the policy holds."""
        if self.generation is not None and self.generation.value:
            return wire.Reply.cached_direct(self.generation.value)
        return wire.Reply(wire.Verdict.DIRECT)

    # ----- routes (the shim's CONNECT and the front door) ----------------------------
    def new_connection(self, app: AppInfo, addr: wire.IPAddress | None, port: int,
                       host: str | None = None,
                       kind: type[Connection] = Connection) -> Connection:
        self.connections_total += 1
        return kind(f"c{next(self._ids)}", app, addr, port, time.monotonic(), host)

    async def open_route(self, conn: Connection, policy: Policy,
                         kernel_direct: bool) -> Tunnel | None:
        """Apply the policy to conn and open what it says: a tunnel through a chain,
        or a direct connection. None means "direct, and the caller can connect by
        itself" (only when kernel_direct and the real address is known). Raises a
        SocksifyError (PolicyBlocked for a block) and logs the outcome either way."""
        action = self._decide(conn, policy)
        if action.kind == "direct" and kernel_direct and conn.host is None:
            self._event(conn, "direct", ok=True)
            return None
        return await self._open_route(conn, action)

    def _decide(self, conn: Connection, policy: Policy) -> Action:
        decision = policy.decide(conn.app, conn.dst, conn.port, conn.host)
        conn.rule = decision.rule
        if decision.action.kind == "block":
            raise PolicyBlocked("blocked")
        if decision.action.chain is not None:
            conn.chain = decision.action.chain.name
        return decision.action

    async def _open_route(self, conn: Connection, action: Action) -> Tunnel:
        target = conn.host or str(conn.dst)
        if action.chain is None:
            tunnel = await open_direct(target, conn.port)
        else:
            tunnel = await open_tunnel(self.sessions.selector(conn, action.chain),
                                       target, conn.port, conn.id, action.dns,
                                       stream_auth(conn, action.chain))
        self._connected(conn, tunnel.route, tunnel.skipped, tunnel.setup_seconds,
                        " (pre-built)" if tunnel.prebuilt else "")
        return tunnel

    async def _hand_route(self, conn: Connection, action: Action,
                          app_sock: socket.socket) -> tuple[Handed, TunnelPool | None]:
        """The connection handed off, and the pool whose tunnel app_sock could take
        (None: no pool, or app_sock is bound or of another family)."""
        target = conn.host or str(conn.dst)
        conn.path = "handoff"
        pool: TunnelPool | None = None
        if action.chain is None:
            handed = await hand_direct(app_sock, target, conn.port)
        else:
            selector = self.sessions.selector(conn, action.chain)
            if selector.pool is not None and selector.pool.fits(app_sock):
                pool = selector.pool
            handed = await hand_tunnel(
                selector, target, conn.port, app_sock, conn.id, action.dns,
                swappable=pool is not None, auth=stream_auth(conn, action.chain))
            if handed.swap is not None:
                conn.path = "prebuilt"
        self._connected(conn, handed.route, handed.skipped, handed.setup_seconds,
                        ", handed off" + (" (pre-built)" if handed.swap else ""))
        return handed, pool

    def lane_outcome(self, conn: Connection, route: tuple[Proxy, ...], seconds: float,
                     kernel: tuple[Any, int, int | None, tuple[int, int]] | None,
                     refused: tuple[int, str, Proxy | None] | None,
                     prebuilt: bool = False) -> None:
        """A connect the lane (listeners/lane.py) built, or finished on a pre-built
        tunnel: logged, counted and followed in the kernel (kernel: its 4-tuple,
        family, cookie, bytes) as one built here; or refused (errno, why, the hop to
        mark down)."""
        conn.path = "prebuilt" if prebuilt else "handoff"
        if refused is not None:
            if refused[2] is not None:
                self.health.mark_down(refused[2])
            self._refuse(conn, refused[0], refused[1])
            return
        self.handed_off += 1
        self._connected(conn, route, (), seconds, ", handed off by the lane"
                        + (" (pre-built)" if prebuilt else ""))
        if kernel is not None:
            self.handed.follow(conn, *kernel, route[0])
        self.events.emit("connect", conn)

    def _connected(self, conn: Connection, route: tuple[Proxy, ...],
                   skipped: tuple[Proxy, ...], seconds: float, how: str) -> None:
        conn.route, conn.hops = route_text(route)
        note = f" (skipped {', '.join(map(str, skipped))})" if skipped else ""
        self._event(conn, f"connected in {seconds * 1000:.0f} ms{how}{note}", ok=True)

    def refused(self, conn: Connection, exc: SocksifyError) -> None:
        """Log and report a connection that open_route refused."""
        self._event(conn, f"{os.strerror(exc.errno or errno.ECONNREFUSED)}: {exc}",
                    ok=False)

    def _refuse(self, conn: Connection, err: int, why: str) -> wire.Reply:
        self._event(conn, f"{os.strerror(err)}: {why}", ok=False)
        return wire.Reply.fail(err)

    # ----- reporting ---------------------------------------------------------------
    def _event(self, conn: Connection, result: str, ok: bool) -> None:
        """One line per connection decision: app, target, rule, chain and route, result
        and how long it took. Nothing is formatted that nobody reads (the level off,
        no session asking)."""
        level = logging.INFO if ok else logging.WARNING
        tell = connlog.tells(conn.session, ok)
        if not ok:      # events: built only when someone follows them
            self.events.emit("refuse", conn, error=result)
        elif result.endswith("direct"):          # the program connects by itself
            self.events.emit("direct", conn, path="direct")
        if not tell and not log.isEnabledFor(level):
            return
        elapsed = time.monotonic() - conn.started
        if conn.log_later is not None:      # once the program has its answer
            conn.log_later.append(lambda: connlog.write(conn, result, ok, level,
                                                        tell, elapsed))
            return
        connlog.write(conn, result, ok, level, tell, elapsed)

    def connections(self, uid: int | None = None, app: str | None = None,
                    chain: str | None = None) -> list[dict[str, Any]]:
        """The live connections uid may see (all for the daemon's own user and root,
        else that user's own), relayed and handed off, of app and chain if given."""
        self.handed.refresh()
        return [conn.describe() for conn in
                (*self.table.live.values(), *self.handed.connections())
                if (self.sees_all(uid) or conn.app.uid == uid)
                and (app is None or conn.app.name == app)
                and (chain is None or conn.chain == chain)]

    def _handed_closed(self, conn: Connection) -> None:
        """A handed-off connection is gone from the kernel (or the daemon stops)."""
        log.info("[%s] %s closed after %.1fs: %d bytes up, %d down (handed off)",
                 conn.id, conn.app, time.monotonic() - conn.started, conn.counters.up,
                 conn.counters.down)
        self.events.emit("close", conn)


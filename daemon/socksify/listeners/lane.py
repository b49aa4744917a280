"""The lane (lane/lane.c through lanelib.py): the daemon's compiled connect path,
and what the Python side does for it.

Between requests a shim's control connection is watched by the lane's own thread,
not by the event loop. The lane answers a HANDOFF itself when the daemon has left it
a route for that process, destination and session: a chain the daemon built the
same way moments before (chains/laneplan.py). It connects the program's socket to
hop 1, writes every request at once, checks the replies and answers, with no Python
on the way. On a chain with pre-built tunnels (kept in the lane: LaneTunnels) it
finishes the oldest with the last hop's request and answers SWAP, as the engine
would. Anything else goes back to the loop (shimconn.py), which then hands the
connection back.

What the lane did comes back as records, read here off the critical path. Each one
becomes the connection's log line, its row in the live table and its events, as for
a connect the loop built. A connect the lane could not build drops the process's
routes, so its next connect goes through the chain engine, with its retries, health
and messages (a pre-built tunnel that failed unanswered goes there itself). Routes
are dropped too when the policy or the sessions change (forget_all).

The lane is optional. Without its library (not built, not Linux) or with
SOCKSIFY_LANE=0, every request is served by the loop."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import itertools
import logging
import os
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..chains.earlydata import EARLY_DATA
from ..chains.laneplan import plan, tunnel_plan
from ..chains.pool import Told, TunnelPool
from ..chains.spec import ChainSpec
from ..errors import HopUnreachable
from ..lanelib import LaneLib, Route, address_of, sockaddr_of
from ..proxies import Proxy
from ..protocol import control as wire
from ..sockdiag import plain
from .lanetunnels import LaneTunnels

if TYPE_CHECKING:
    from ..core.records import Connection
    from ..lanelib import Done as LaneDone
    from ..procinfo import AppInfo
    from .shimconn import ShimConnection

log = logging.getLogger("socksify.daemon")

MAX_ROUTES = 16384      # routes before all are dropped (the lane's cap is higher)
_BATCH = 64


def library_path() -> Path:
    return Path(__file__).resolve().parent.parent / "_lane" / "libsocksifylane.so"


class Reports(Protocol):
    """Where the lane's records go (the router)."""

    def new_connection(self, app: AppInfo, addr: Any, port: int) -> Connection: ...

    def lane_outcome(self, conn: Connection, route: tuple[Proxy, ...], seconds: float,
                     kernel: tuple[Any, int, int | None, tuple[int, int]] | None,
                     refused: tuple[int, str, Proxy | None] | None,
                     prebuilt: bool = False) -> None: ...


@dataclass(frozen=True)
class RouteInfo:
    """What the loop knows of a route it left the lane: for the records' log lines."""

    app: AppInfo
    session: Any
    rule: str
    chain: str
    route: tuple[Proxy, ...]
    pool: TunnelPool | None = None     # a pool route's: told of each take


class Lane:
    """The lane's Python side: started with the daemon's loop, stopped before the
    control connections close."""

    def __init__(self, lib: LaneLib, loop: asyncio.AbstractEventLoop,
                 reports: Reports) -> None:
        self.lib = lib
        self.loop = loop
        self.reports = reports
        self.notify = lib.start()
        self.watched: dict[int, ShimConnection] = {}
        self._keys: dict[AppInfo, list[int]] = {}      # app: [its number, connections]
        self._by_key: dict[int, list[int]] = {}         # its number: its routes' ids
        self._routes: dict[int, RouteInfo] = {}
        self._ids = itertools.count(1)
        self._key_ids = itertools.count(1)
        self._pool_ids = itertools.count(1)
        self._builds: dict[int, tuple[asyncio.Future[None], tuple[Proxy, ...]]] = {}
        self._refilled: dict[int, tuple[int, Told]] = {}      # pool: its route id, told
        self._refills: dict[int, tuple[Told, tuple[Proxy, ...]]] = {}   # by route id
        self.served = 0            # connects the lane answered (READY or FAIL)
        self.tunnels_built = 0     # pre-built tunnels it built for the pools
        loop.add_reader(self.notify, self._drain)

    @classmethod
    def start(cls, loop: asyncio.AbstractEventLoop, reports: Reports) -> Lane | None:
        """The lane, or None where it cannot run (then the loop serves everything)."""
        if os.environ.get("SOCKSIFY_LANE", "1") == "0":
            return None
        path = library_path()
        if not path.is_file():
            return None
        try:
            return cls(LaneLib(path), loop, reports)
        except (OSError, ImportError) as exc:
            log.warning("the lane (%s) cannot start: %s; every connect is served in "
                        "Python", path, exc)
            return None

    # ----- control connections -----------------------------------------------------
    def attach(self, app: AppInfo) -> int:
        """A control connection of app's: the lane's number for app (a process has
        up to four; its routes live as long as one of them)."""
        entry = self._keys.get(app)
        if entry is None:
            entry = self._keys[app] = [next(self._key_ids), 0]
        entry[1] += 1
        return entry[0]

    def detach(self, app: AppInfo) -> None:
        """One of app's control connections closed: with the last, its routes go (a
        process that connects once leaves nothing behind)."""
        entry = self._keys.get(app)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            self.flush()           # its last connects' records name its routes
            del self._keys[app]
            self.lib.forget(entry[0])
            for route_id in self._by_key.pop(entry[0], ()):
                self._routes.pop(route_id, None)

    def watch(self, shim: ShimConnection, key: int) -> bool:
        """Let the lane read shim's next request; False if it cannot."""
        try:
            self.lib.watch(shim.fd, key)
        except OSError as exc:
            log.debug("the lane cannot watch a control connection: %s", exc)
            return False
        self.watched[shim.fd] = shim
        return True

    def release(self, shim: ShimConnection, idle: float) -> int:
        """Take shim back from the lane if nothing came for `idle` seconds: 1 taken,
        0 busy or used since, -1 not the lane's (given back already)."""
        try:
            taken = self.lib.release(shim.fd, int(idle * 1000))
        except OSError:
            return -1
        if taken:
            self.watched.pop(shim.fd, None)
        return 1 if taken else 0

    def status(self) -> dict[str, int]:
        """For `socksifyd status`: connects the lane answered, its routes and the
        processes they are for, and the pre-built tunnels it built."""
        return {"served": self.served, "routes": len(self._routes),
                "processes": len(self._by_key), "tunnels": self.tunnels_built}

    # ----- routes -------------------------------------------------------------------
    def tunnels(self, spec: ChainSpec) -> LaneTunnels:
        """Where a new pool of spec's keeps its ready tunnels (Sessions.tunnel_store)."""
        return LaneTunnels(self, next(self._pool_ids), spec)

    def build(self, pool_id: int, spec: ChainSpec) -> asyncio.Future[None] | None:
        """A tunnel for the pool pool_id, built by the lane (lane_pool_build): done
        once it waits in the pool, or with the ChainError of the failure. None if the
        lane cannot build spec's tunnels (the engine then does)."""
        build_id = next(self._ids)
        route = self._tunnel_route(spec, build_id)
        if route is None:
            return None
        expires = time.monotonic() + spec.prebuilt_max_age
        try:
            self.lib.pool_build(pool_id, route, int(expires * 1e9), spec.prebuilt // 2)
        except OSError as exc:
            log.debug("the lane cannot build a tunnel: %s", exc)
            return None
        future: asyncio.Future[None] = self.loop.create_future()
        self._builds[build_id] = (future, spec.hops)
        return future

    def refill(self, pool_id: int, spec: ChainSpec, quiet: float, told: Told) -> bool:
        """Let the lane keep the pool pool_id full by itself (lane_pool_refill), as
        chains/pool.py would, each build told (None, or the ChainError after which
        it stops). Again: what expired is replaced. False: spec's tunnels are not
        the lane's to build (then it does not refill them)."""
        entry = self._refilled.get(pool_id)
        route_id = entry[0] if entry is not None else next(self._ids)
        route = self._tunnel_route(spec, route_id)   # None since, e.g. a hop found
        try:                                         # to need one step at a time
            if route is None:
                self.lib.pool_refill(pool_id, None, 0, 0, 0, 0)
                return False
            self.lib.pool_refill(pool_id, route, spec.prebuilt, spec.prebuilt // 2,
                                 int(quiet * 1000), int(spec.prebuilt_max_age * 1e9))
        except OSError as exc:
            log.debug("the lane cannot refill a pool: %s", exc)
            return False
        self._refilled[pool_id] = (route_id, told)
        self._refills[route_id] = (told, spec.hops)
        return True

    def unrefill(self, pool_id: int) -> None:
        """The pool pool_id is closed: its refill's builds are told no more."""
        entry = self._refilled.pop(pool_id, None)
        if entry is not None:
            self._refills.pop(entry[0], None)

    def _tunnel_route(self, spec: ChainSpec, route_id: int) -> Route | None:
        """How the lane builds one of spec's pre-built tunnels, None if it cannot."""
        made = tunnel_plan(spec, EARLY_DATA)
        if made is None:
            return None
        first = spec.hops[0]
        try:
            hop1 = sockaddr_of(first.host, first.port)     # a name: the engine's
        except (OSError, ValueError):
            return None
        return Route(proc=0, family=4, addr=bytes(16), port=0, hop1=hop1,
                     timeout_ms=int(made.timeout * 1000), requests=made.requests,
                     replies=tuple(made.replies), route=route_id)

    def offer(self, conn: Connection, session: bytes, spec: ChainSpec,
              route: tuple[Proxy, ...], app_sock: socket.socket,
              pool: TunnelPool | None = None) -> None:
        """A chain the loop just handed off to app_sock for conn (pool: the pool whose
        tunnel app_sock could take): leave the lane a route for the same process,
        session and destination, if it can build it alike."""
        if conn.dst is None or conn.host is not None or conn.stand_in is not None:
            return
        store = pool.store if pool is not None else None
        if pool is not None and not isinstance(store, LaneTunnels):
            return
        made = plan(spec, route, str(conn.dst), conn.port, EARLY_DATA,
                    prebuilt=pool is not None)
        if made is None:
            return
        hop1 = b""
        if not isinstance(store, LaneTunnels):     # built on the program's socket
            try:
                peer = app_sock.getpeername()
            except OSError:
                return
            hop1 = sockaddr_of(peer[0].partition("%")[0], peer[1])
        entry = self._keys.get(conn.app)
        if entry is None:           # not a shim's connection (never expected)
            return
        if len(self._routes) >= MAX_ROUTES:
            self.forget_all()
        route_id = next(self._ids)
        self._routes[route_id] = RouteInfo(conn.app, conn.session, conn.rule,
                                           conn.chain, route, pool)
        self._by_key.setdefault(entry[0], []).append(route_id)
        self.lib.add(Route(proc=entry[0], family=conn.dst.version,
                           addr=conn.dst.packed, port=conn.port, session=session,
                           hop1=hop1, timeout_ms=int(made.timeout * 1000),
                           requests=made.requests, replies=tuple(made.replies),
                           route=route_id,
                           pool=store.id if isinstance(store, LaneTunnels) else 0))

    def forget_all(self) -> None:
        """Drop every route (a reload, a session's end): the loop decides again."""
        self.flush()               # what was built on them is reported first
        self.lib.forget(0)
        self._routes.clear()
        self._by_key.clear()

    # ----- records ------------------------------------------------------------------
    def flush(self) -> None:
        """Report what the lane answered now (a command line tool asks for the log,
        the live table or the status: answered connects are announced to the loop
        every 100 ms). Callable from a Task: given-back requests, which are
        answered outside any Task (core/eager.py), wait for the notify callback."""
        while self._records():
            pass

    def _drain(self) -> None:
        """The notify callback: the given-back connections, then the records."""
        try:
            os.read(self.notify, 8)
        except BlockingIOError:
            pass
        while True:
            full = self._records()         # first: an end of file below detaches
            given = self.lib.take(_BATCH)
            for g in given:
                shim = self.watched.pop(g.fd, None)
                if shim is None:           # not ours to serve: never expected
                    for fd in g.fds:
                        os.close(fd)
                    continue
                shim.given(g.data, list(g.fds))
            if not full and len(given) < _BATCH:
                return

    def _records(self) -> bool:
        """Report a batch of answered connects; whether it was a full one."""
        done = self.lib.done(_BATCH)
        for d in done:
            if d.proc == 0:                # a pool's tunnel, built
                self._built(d)
                continue
            self.served += 1
            info = self._routes.get(d.route)
            if info is not None:           # else forgotten since: nothing to report
                self._report(info, d)
        return len(done) == _BATCH

    def _built(self, d: LaneDone) -> None:
        refill = self._refills.get(d.route)
        if refill is not None:                     # the lane's own refill's
            told, route = refill
        else:
            future, route = self._builds.pop(d.route, (None, ()))
            if future is None or future.done():    # its pool gave up on it
                return
            told = _settle(future)
        if d.code == 0:
            self.tunnels_built += 1
            told(None)
            return
        err, why, blame = describe_failure(d, route)
        told(HopUnreachable(f"pre-building a tunnel: {why}",
                            hop=blame if blame is not None else 0, err=err))

    def _report(self, info: RouteInfo, d: LaneDone) -> None:
        conn = self.reports.new_connection(
            info.app, ipaddress.ip_address(d.addr[:4] if d.family == 4 else d.addr),
            d.port)
        conn.session, conn.rule, conn.chain = info.session, info.rule, info.chain
        seconds = (d.answered_ns - d.started_ns) / 1e9
        # started as long before now as the connect took (its log line's "(N ms)"),
        # not when it was reported (up to 100 ms later)
        conn.started = time.monotonic() - seconds
        prebuilt = info.pool is not None
        if info.pool is not None:
            info.pool.taken_elsewhere()
        if d.code != 0:     # (a pool route's: a refusal its last hop answered, or the stop)
            err, why, blame = describe_failure(
                d, info.route, len(info.route) - 1 if prebuilt else 0)
            if d.err == errno.ECANCELED:
                err, why, blame = errno.ETIMEDOUT, "the daemon stopped meanwhile", None
            self.reports.lane_outcome(conn, info.route, seconds, None, (
                err, why, None if blame is None else info.route[blame]), prebuilt)
            return
        local, peer = _endpoint(d.local), _endpoint(d.peer)
        self.reports.lane_outcome(
            conn, info.route, seconds,
            ((local[0], local[1], peer[0], peer[1]), struct.unpack_from("=H", d.local)[0],
             d.cookie or None, (d.bytes_acked, d.bytes_received)), None, prebuilt)

    def stop(self) -> None:
        """At the daemon's stop (from its Task): the thread ends, answering FAIL to
        the connects in flight; every connection it watched or gave back is closed,
        unanswered (as the loop closes the idle ones), and its records reported."""
        self.loop.remove_reader(self.notify)
        self.lib.stop()
        while given := self.lib.take(_BATCH):
            for g in given:
                for fd in g.fds:
                    os.close(fd)
                shim = self.watched.pop(g.fd, None)
                if shim is not None:
                    shim.close()
        self.flush()


def _settle(future: asyncio.Future[None]) -> Told:
    """A build's outcome into the future its pool awaits."""
    def told(failure: BaseException | None) -> None:
        if failure is None:
            future.set_result(None)
        else:
            future.set_exception(failure)
    return told


def _endpoint(raw: bytes) -> tuple[str, int]:
    """(address, port) of a raw sockaddr, as sockdiag keys them (IPv4-mapped as
    IPv4)."""
    host, port = address_of(raw)
    return plain(host), port


def describe_failure(d: LaneDone, route: tuple[Proxy, ...], first: int = 0
                     ) -> tuple[int, str, int | None]:
    """(errno, why, the hop to blame or None: the target) for a connect the lane
    refused, worded and blamed as the chain engine does (chains/steps.py): a refused
    or unanswered CONNECT blames the hop asked for, a broken reply or a refused
    greeting the hop that sent it. `first`: the hop of reply 0 (a pre-built tunnel's
    take reads only the last hop's)."""
    try:
        err = wire.Code(d.code).to_errno()
    except ValueError:
        err = errno.EPROTO
    if d.failed == 255:               # hop 1's TCP connect
        return err, f"hop 1 {route[0]}: {os.strerror(d.err or err)}", 0
    index, greeting = _hop_of_reply(route[first:], d.failed)
    index += first
    me = f"hop {index + 1} {route[index]}"
    if greeting:
        return err, (f"{me}: accepts none of our authentication methods (reply "
                     f"{bytes(d.reply[:d.got]).hex() or 'none'})"), index
    asked = (f"hop {index + 2} {route[index + 1].host}:{route[index + 1].port}"
             if index + 1 < len(route) else "the target")
    blame: int | None = index if d.err == errno.EPROTO else index + 1
    if blame is not None and blame >= len(route):
        blame = None
    if d.code == wire.Code.TIMEDOUT:
        return err, f"{me}: no reply in time to CONNECT {asked}", blame
    return err, (f"{me}: CONNECT {asked} refused (reply "
                 f"{bytes(d.reply[:d.got]).hex() or 'none'})"), blame


def _hop_of_reply(route: tuple[Proxy, ...], reply: int) -> tuple[int, bool]:
    """The hop that sent reply number `reply`, and whether it was a SOCKS5
    greeting's reply (a SOCKS5 hop sends two: the greeting's, the CONNECT's)."""
    n = 0
    for i, hop in enumerate(route):
        if hop.protocol == "socks5":
            if reply == n:
                return i, True
            n += 2
        else:
            n += 1
        if reply < n:
            return i, False
    return len(route) - 1, False

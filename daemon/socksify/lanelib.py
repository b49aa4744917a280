"""The lane (lane/lane.h, libsocksifylane.so) through cffi, in ABI mode: one method per
C function, with Python types in and out. The lane serves the daemon's cached HANDOFF
requests in C; what it decides nothing about, this module decides nothing about either.

A negative -errno from the library is raised as OSError (its subclass for that errno,
e.g. FileNotFoundError for ENOENT)."""

from __future__ import annotations

import errno
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

REPLY_SOCKS4 = 1         # LANE_REPLY_SOCKS4: 8 bytes, VN=0 CD=90
REPLY_SOCKS5_METHOD = 2  # LANE_REPLY_SOCKS5_METHOD: 2 bytes, VER=5 METHOD=0
REPLY_SOCKS5 = 3         # LANE_REPLY_SOCKS5: VER REP RSV ATYP BND.ADDR BND.PORT
MAX_REPLIES = 16
MAX_REQUESTS = 1024
MAX_REQUEST = 48
SOCKADDR_SIZE = 28
FAILED_CONNECT = 255     # Done.failed: the connect to hop 1 failed
GIVEN_STOPPED = errno.ESHUTDOWN  # Given.err: lane_stop gave it back unread

# lane/lane.h's cffi block, verbatim but for comments (tests/unit/test_lane.py checks)
CDEF = """
struct lane_route {
    uint64_t proc;
    uint8_t  family;
    uint8_t  addr[16];
    uint16_t port;
    uint8_t  session[8];
    uint8_t  hop1[28];
    uint32_t hop1_len;
    uint32_t timeout_ms;
    uint32_t requests_len;
    uint8_t  requests[1024];
    uint32_t n_replies;
    uint8_t  replies[16];
    uint32_t route;
    uint32_t pool;
};

struct lane_pool_state {
    uint32_t ready;
    uint32_t low;
    uint64_t oldest_expires_ns;
    uint64_t taken;
    uint64_t discarded;
    int32_t  family;
    uint32_t building;
    uint32_t target;
};

struct lane_given {
    int32_t  fd;
    int32_t  nfds;
    int32_t  fds[2];
    int32_t  err;
    uint32_t len;
    uint8_t  data[48];
};

struct lane_done {
    uint64_t proc;
    uint32_t route;
    int32_t  fd;
    uint8_t  family;
    uint8_t  addr[16];
    uint16_t port;
    uint8_t  code;
    uint8_t  failed;
    uint8_t  got;
    uint8_t  reply[2];
    int32_t  err;
    uint64_t started_ns;
    uint64_t answered_ns;
    uint8_t  local[28];
    uint32_t local_len;
    uint8_t  peer[28];
    uint32_t peer_len;
    uint64_t cookie;
    uint64_t bytes_acked;
    uint64_t bytes_received;
};

int lane_start(void);
void lane_stop(void);
int lane_watch(int fd, uint64_t proc);
int lane_release(int fd, uint32_t idle_ms);
int lane_add(const struct lane_route *route);
void lane_forget(uint64_t proc);
int lane_take(struct lane_given *out, int max);
int lane_done(struct lane_done *out, int max);
int lane_pool_put(uint32_t pool, int fd, uint64_t expires_ns, uint32_t low);
int lane_pool_build(uint32_t pool, const struct lane_route *route, uint64_t expires_ns,
                    uint32_t low);
int lane_pool_refill(uint32_t pool, const struct lane_route *route, uint32_t target,
                     uint32_t low, uint32_t quiet_ms, uint64_t max_age_ns);
int lane_pool_take(uint32_t pool);
int lane_pool_state(uint32_t pool, struct lane_pool_state *out);
void lane_pool_close(uint32_t pool);
"""


@dataclass(frozen=True)
class Route:
    """One cached decision (struct lane_route): how `proc`'s connects to addr:port
    leave. addr is the request's addr field (IPv4 in the first 4 bytes; padded to 16
    here); hop1 a raw struct sockaddr_in/sockaddr_in6 (sockaddr_of); replies the
    REPLY_* kinds expected, in order; session the request's session field (a request
    with another is not the route's). pool, if not 0, is the pool of pre-built
    tunnels the route finishes (requests and replies: the last hop's; hop1 may be
    empty)."""

    proc: int
    family: int
    addr: bytes
    port: int
    hop1: bytes
    timeout_ms: int
    requests: bytes
    replies: tuple[int, ...]
    route: int
    session: bytes = bytes(8)
    pool: int = 0


@dataclass(frozen=True)
class PoolState:
    """A pool of pre-built tunnels (struct lane_pool_state): how many wait, the
    CLOCK_MONOTONIC expiry of the oldest (0: none), how many were taken and
    discarded since it began, the waiting tunnels' address family (0: none), the
    builds under way and what the pool refills itself to (0: it does not)."""

    ready: int
    low: int
    oldest_expires_ns: int
    taken: int
    discarded: int
    family: int
    building: int = 0
    target: int = 0


@dataclass(frozen=True)
class Given:
    """A control connection the lane gave back (struct lane_given): the request's bytes
    and descriptors as read (the daemon's to close), or, with no bytes, err: 0 for EOF,
    GIVEN_STOPPED, else the errno of the failed read or answer."""

    fd: int
    fds: tuple[int, ...]
    err: int
    data: bytes


@dataclass(frozen=True)
class Done:
    """A connect the lane answered (struct lane_done). code 0 is READY; failed is the
    index of the reply that failed (len(replies): none, FAILED_CONNECT: the connect);
    reply holds the first bytes (up to 2) of that reply; local and peer are raw
    sockaddrs (address_of), empty unless READY."""

    proc: int
    route: int
    fd: int
    family: int
    addr: bytes
    port: int
    code: int
    failed: int
    got: int
    reply: bytes
    err: int
    started_ns: int
    answered_ns: int
    local: bytes
    peer: bytes
    cookie: int
    bytes_acked: int
    bytes_received: int


def _check(rc: int, what: str) -> int:
    if rc < 0:
        raise OSError(-rc, f"{what}: {os.strerror(-rc)}")
    return rc


class LaneLib:
    """libsocksifylane.so, loaded from `path`. The lane is one per process: two LaneLib
    of the same file share it."""

    def __init__(self, path: Path | str) -> None:
        import cffi  # type: ignore[import-untyped,unused-ignore]

        self.path = Path(path)
        self._ffi: Any = cffi.FFI()
        self._ffi.cdef(CDEF)
        self._lib: Any = self._ffi.dlopen(str(self.path))

    def start(self) -> int:
        """Start the lane thread; the notify fd (the same on a second call)."""
        return _check(int(self._lib.lane_start()), "lane_start")

    def stop(self) -> None:
        self._lib.lane_stop()

    def watch(self, fd: int, proc: int) -> None:
        _check(int(self._lib.lane_watch(fd, proc)), "lane_watch")

    def release(self, fd: int, idle_ms: int) -> bool:
        """True: fd is no longer watched; False: a request is in flight or came within
        idle_ms. FileNotFoundError if fd is not watched."""
        return _check(int(self._lib.lane_release(fd, idle_ms)), "lane_release") == 1

    def add(self, route: Route) -> None:
        _check(int(self._lib.lane_add(self._route(route))), "lane_add")

    def _route(self, route: Route) -> Any:
        if len(route.addr) > 16 or len(route.hop1) > SOCKADDR_SIZE \
                or len(route.requests) > MAX_REQUESTS or len(route.replies) > MAX_REPLIES:
            raise ValueError("addr, hop1, requests or replies too long for a lane route")
        r = self._ffi.new("struct lane_route *")
        r.proc = route.proc
        r.family = route.family
        self._ffi.memmove(r.addr, route.addr, len(route.addr))
        r.port = route.port
        self._ffi.memmove(r.session, route.session, min(len(route.session), 8))
        self._ffi.memmove(r.hop1, route.hop1, len(route.hop1))
        r.hop1_len = len(route.hop1)
        r.timeout_ms = route.timeout_ms
        r.requests_len = len(route.requests)
        self._ffi.memmove(r.requests, route.requests, len(route.requests))
        r.n_replies = len(route.replies)
        for i, kind in enumerate(route.replies):
            r.replies[i] = kind
        r.route = route.route
        r.pool = route.pool
        return r

    def pool_build(self, pool: int, route: Route, expires_ns: int, low: int) -> None:
        """Build a tunnel for pool as route says (its hop1, requests, replies, timeout;
        route.route comes back in the Done, whose proc is 0)."""
        _check(int(self._lib.lane_pool_build(pool, self._route(route), expires_ns, low)),
               "lane_pool_build")

    def pool_refill(self, pool: int, route: Route | None, target: int, low: int,
                    quiet_ms: int, max_age_ns: int) -> None:
        """Let the lane keep pool at target tunnels by itself, built as route says
        (route.route comes back in each build's Done); target 0 (route None): stop."""
        r = self._route(route) if route is not None else self._ffi.NULL
        _check(int(self._lib.lane_pool_refill(pool, r, target, low, quiet_ms,
                                              max_age_ns)), "lane_pool_refill")

    def pool_put(self, pool: int, fd: int, expires_ns: int, low: int) -> None:
        """Leave the tunnel fd in pool: the lane's from then on (not on an error)."""
        _check(int(self._lib.lane_pool_put(pool, fd, expires_ns, low)), "lane_pool_put")

    def pool_take(self, pool: int) -> int | None:
        """The oldest usable tunnel's fd (the caller's), or None."""
        fd = int(self._lib.lane_pool_take(pool))
        if fd == -errno.ENOENT:
            return None
        return _check(fd, "lane_pool_take")

    def pool_state(self, pool: int) -> PoolState | None:
        """The pool, its unusable tunnels closed first; None if it has none."""
        out = self._ffi.new("struct lane_pool_state *")
        if int(self._lib.lane_pool_state(pool, out)) < 0:
            return None
        return PoolState(ready=int(out.ready), low=int(out.low),
                         oldest_expires_ns=int(out.oldest_expires_ns),
                         taken=int(out.taken), discarded=int(out.discarded),
                         family=int(out.family), building=int(out.building),
                         target=int(out.target))

    def pool_close(self, pool: int) -> None:
        """Close pool's tunnels and forget it; 0: every pool."""
        self._lib.lane_pool_close(pool)

    def forget(self, proc: int) -> None:
        """Drop proc's routes; 0: all."""
        self._lib.lane_forget(proc)

    def take(self, limit: int = 64) -> list[Given]:
        """Up to `limit` given-back connections, oldest first."""
        out = self._ffi.new("struct lane_given[]", limit)
        n = int(self._lib.lane_take(out, limit))
        return [Given(fd=int(g.fd), fds=tuple(int(g.fds[j]) for j in range(g.nfds)),
                      err=int(g.err), data=self._bytes(g.data, int(g.len)))
                for g in (out[i] for i in range(n))]

    def done(self, limit: int = 64) -> list[Done]:
        """Up to `limit` answered connects, oldest first."""
        out = self._ffi.new("struct lane_done[]", limit)
        n = int(self._lib.lane_done(out, limit))
        return [self._done(out[i]) for i in range(n)]

    def _bytes(self, field: Any, n: int) -> bytes:
        return cast(bytes, self._ffi.buffer(field, n)[:]) if n else b""

    def _done(self, d: Any) -> Done:
        return Done(proc=int(d.proc), route=int(d.route), fd=int(d.fd),
                    family=int(d.family), addr=self._bytes(d.addr, 16), port=int(d.port),
                    code=int(d.code), failed=int(d.failed), got=int(d.got),
                    reply=self._bytes(d.reply, min(int(d.got), 2)), err=int(d.err),
                    started_ns=int(d.started_ns), answered_ns=int(d.answered_ns),
                    local=self._bytes(d.local, int(d.local_len)),
                    peer=self._bytes(d.peer, int(d.peer_len)),
                    cookie=int(d.cookie), bytes_acked=int(d.bytes_acked),
                    bytes_received=int(d.bytes_received))


def sockaddr_of(host: str, port: int) -> bytes:
    """The raw struct sockaddr_in/sockaddr_in6 (Linux layout) of an IP address and port,
    for Route.hop1."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    packed = socket.inet_pton(family, host)
    head = int(family).to_bytes(2, sys.byteorder) + port.to_bytes(2, "big")
    if family == socket.AF_INET:
        return head + packed + bytes(8)
    return head + bytes(4) + packed + bytes(4)


def address_of(raw: bytes) -> tuple[str, int]:
    """(host, port) of a raw struct sockaddr_in/sockaddr_in6, as in Done.local/peer."""
    if len(raw) < 8:
        raise ValueError(f"not a sockaddr_in or sockaddr_in6: {len(raw)} bytes")
    family = int.from_bytes(raw[:2], sys.byteorder)
    port = int.from_bytes(raw[2:4], "big")
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), port
    if family == socket.AF_INET6 and len(raw) >= 24:
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port
    raise ValueError(f"not a sockaddr_in or sockaddr_in6: family {family}")

/* The lane (issue 16): the daemon's common connect, compiled.
 *
 * A thread of its own, with its own epoll, serves the HANDOFF requests (docs/wire.md)
 * that come on the control connections the daemon gives it, for the destinations whose
 * decision the daemon has cached in it (routes): it connects the program's socket to
 * hop 1, writes every hop's request at once, reads the replies exactly, and answers
 * READY or FAIL itself. A route of a chain with pre-built tunnels (lane_route.pool)
 * finishes one of the tunnels the daemon left in that pool instead (lane_pool_put,
 * lane_pool_build): the last hop's request on it, and SWAP with the tunnel attached;
 * the daemon may let the lane replace what it takes (lane_pool_refill). Any other request,
 * and every connection that breaks, goes back to the daemon unchanged (lane_take);
 * every connect it answered is reported (lane_done), for the daemon's log and live
 * table. The lane decides nothing.
 *
 * Threads: every function may be called from any thread (lane_start and lane_stop
 * are serialised with each other). The library keeps one lane per process.
 */
#ifndef SOCKSIFY_LANE_H
#define SOCKSIFY_LANE_H

#include <errno.h>
#include <stdint.h>

/* Kinds of reply expected from a hop, in order (lane_route.replies). */
#define LANE_REPLY_SOCKS4        1  /* 8 bytes: VN=0, CD=90 granted */
#define LANE_REPLY_SOCKS5_METHOD 2  /* 2 bytes: VER=5, METHOD=0 (no auth) */
#define LANE_REPLY_SOCKS5        3  /* VER=5 REP RSV ATYP BND.ADDR BND.PORT */
#define LANE_MAX_REPLIES   16
#define LANE_MAX_REQUESTS  1024     /* bytes of requests, all hops together */
#define LANE_MAX_REQUEST   48       /* what is read of a request: its header (a body
                                       stays in the socket for the daemon) */
#define LANE_SOCKADDR_SIZE 28       /* room for a struct sockaddr_in6 */

/* lane_done.failed when the connect to hop 1 failed (else: the reply's index). */
#define LANE_FAILED_CONNECT 255

/* lane_given.err of a connection lane_stop gave back unread: it is intact, and the
 * daemon serves it from then on (an EOF is err 0, a failed read its errno). */
#define LANE_GIVEN_STOPPED ESHUTDOWN

/* The cffi block: from here to "end of the cffi block", everything is plain C that
 * daemon/socksify/lanelib.py hands to cffi's cdef verbatim (comments aside). Array sizes
 * are numbers there: 16 is SOCKSIFY_ADDR_SIZE (and LANE_MAX_REPLIES in replies), 28
 * LANE_SOCKADDR_SIZE, 1024 LANE_MAX_REQUESTS, 48 LANE_MAX_REQUEST. The functions are
 * exported by their definitions in lane.c (visibility "default"). */

struct lane_route {            /* one cached decision: how (proc, destination) leaves */
    uint64_t proc;             /* the daemon's key for the process */
    uint8_t  family;           /* wire family of the destination: 4 or 6 */
    uint8_t  addr[16];         /* as in the request's addr field (all 16 bytes compared) */
    uint16_t port;             /* host order */
    uint8_t  session[8];       /* the request's session field: another is a miss */
    uint8_t  hop1[28];         /* struct sockaddr_in or sockaddr_in6 of hop 1 */
    uint32_t hop1_len;
    uint32_t timeout_ms;       /* deadline for the whole negotiation, from the request */
    uint32_t requests_len;
    uint8_t  requests[1024];   /* every hop's request bytes, in order, written at once */
    uint32_t n_replies;
    uint8_t  replies[16];      /* LANE_REPLY_* of each reply, in order */
    uint32_t route;            /* the daemon's id for this route, echoed in lane_done */
    uint32_t pool;             /* 0: build on the program's socket from hop 1; else the
                                  pool whose tunnels reach the last hop: requests and
                                  replies are the last hop's, hop1 may be empty, and the
                                  program's socket must be unbound */
};

struct lane_pool_state {       /* a pool of pre-built tunnels (lane_pool_state) */
    uint32_t ready;            /* tunnels waiting */
    uint32_t low;              /* as given to lane_pool_put */
    uint64_t oldest_expires_ns;/* CLOCK_MONOTONIC expiry of the oldest waiting, 0: none */
    uint64_t taken;            /* by the lane or lane_pool_take, since the pool began */
    uint64_t discarded;        /* expired, found readable or closed, or failed */
    int32_t  family;           /* AF_INET or AF_INET6 of the waiting tunnels, 0: none */
    uint32_t building;         /* its builds under way (lane_pool_build, its refill) */
    uint32_t target;           /* what it refills itself to (lane_pool_refill), 0: none */
};

struct lane_given {            /* a control connection the lane leaves to the daemon */
    int32_t  fd;               /* the control connection */
    int32_t  nfds;             /* descriptors that came with the request (0-2) */
    int32_t  fds[2];
    int32_t  err;              /* len 0: 0 for EOF, LANE_GIVEN_STOPPED, else the errno of
                                  the failed read (or of the failed answer) */
    uint32_t len;              /* bytes of the request in data; 0: see err */
    uint8_t  data[48];
};

struct lane_done {             /* a connect the lane answered itself */
    uint64_t proc;
    uint32_t route;
    int32_t  fd;               /* the control connection it came on */
    uint8_t  family;
    uint8_t  addr[16];
    uint16_t port;
    uint8_t  code;             /* the wire code answered: 0 = READY, else FAIL's code */
    uint8_t  failed;           /* index of the reply that failed; n_replies: none, 255: connect */
    uint8_t  got;              /* bytes of that reply read (0-2 kept in reply[]; 255 at most) */
    uint8_t  reply[2];         /* its first bytes (e.g. SOCKS4 VN, CD) */
    int32_t  err;              /* errno behind a failure (connect's, ETIMEDOUT, EPROTO...;
                                  ECANCELED: the lane stopped) */
    uint64_t started_ns;       /* CLOCK_MONOTONIC: request read */
    uint64_t answered_ns;      /*                  reply sent */
    uint8_t  local[28];        /* getsockname() of the program's socket (READY) */
    uint32_t local_len;
    uint8_t  peer[28];         /* getpeername() (READY) */
    uint32_t peer_len;
    uint64_t cookie;           /* SO_COOKIE, 0 if unknown */
    uint64_t bytes_acked;      /* tcp_info at the answer, 0 if unknown */
    uint64_t bytes_received;
};

/* Start the thread. Returns the notify fd (an eventfd, non-blocking, close-on-exec,
 * readable at once when lane_take has something, and 100 ms after lane_done first has
 * something (answered connects and the tunnels a pool's own refill built are announced
 * together; a failed one, a take that left its pool low (unless the pool refills
 * itself) and a lane_pool_build's tunnel at once): read it, then take both until
 * empty), or -errno. A second call returns the same fd. The notify fd outlives
 * lane_stop (what the stop reports is still to be taken) and a later lane_start
 * returns it again. */
int lane_start(void);

/* Stop and join the thread. In-flight connects are answered FAIL (TIMEDOUT) and
 * reported (lane_done); watched connections are given back unread (lane_take, len 0,
 * err LANE_GIVEN_STOPPED). The routes are forgotten; the pools stay until
 * lane_pool_close. A no-op when not started. */
void lane_stop(void);

/* Serve this control connection: the lane reads its next request. 0, or -errno:
 * -EBADF for a negative fd, -EEXIST if it is watched already, -ESRCH if the lane is
 * not running, -ENOMEM. fd stays the daemon's (the lane never closes a control
 * connection). */
int lane_watch(int fd, uint64_t proc);

/* The daemon wants fd back (to close an idle one, or at stop): 1 if it was watched and
 * nothing came on it for idle_ms (then it is no longer watched), 0 if a request is in
 * flight, one came sooner or one waits unread, -ENOENT if not watched (given back, or
 * never). */
int lane_release(int fd, uint32_t idle_ms);

/* Cache a route (the same key, (proc, family, addr, port): replaced). 0, or -EINVAL for
 * a family other than 4/6, a hop1 that is not a whole sockaddr_in/sockaddr_in6 (or
 * empty, for a pool route only), more
 * than 1024 bytes of requests or 16 replies, an unknown reply kind or a timeout of 0;
 * -ENOMEM. At most 65536 routes: adding one more clears the cache first. */
int lane_add(const struct lane_route *route);

/* Drop a process's routes; 0: all of them. */
void lane_forget(uint64_t proc);

/* Up to max given-back connections, oldest first; returns how many (0 for a NULL out
 * or max <= 0). The descriptors in them are the daemon's to close. */
int lane_take(struct lane_given *out, int max);

/* Up to max answered connects, oldest first; returns how many. A connect the lane
 * answered FAIL dropped its process's routes before the answer: that process's next
 * connect goes to the daemon. */
int lane_done(struct lane_done *out, int max);

/* Leave a pre-built tunnel in pool (an id of the daemon's, not 0): fd is connected
 * through every hop but the last, which waits for its request. The lane owns fd from
 * then on (on success; on an error the caller keeps it); it is closed once expires_ns
 * (CLOCK_MONOTONIC) has passed without a take, when found readable (the hop closed it,
 * reset it or sent something unasked), and by lane_pool_close. When a take leaves low
 * tunnels or fewer, the daemon is told at once (lane_done's notify) rather than with
 * the next announcement, unless the pool refills itself (lane_pool_refill). 0, or -EINVAL (pool 0, a negative fd, not a stream socket),
 * -ENOMEM. */
int lane_pool_put(uint32_t pool, int fd, uint64_t expires_ns, uint32_t low);

/* Build a tunnel for pool on a socket of the lane's: connect to route->hop1, write
 * route->requests (every hop's but the last's), read route->replies, exactly as for
 * a program's connect, within route->timeout_ms; then the tunnel waits in pool as if
 * given to lane_pool_put (expires_ns, low), unless the pool was closed meanwhile.
 * The outcome is reported by lane_done, at once, with proc 0, fd -1 and route
 * route->route (code 0: in the pool; else as for a connect). route->proc, addr, port
 * and session are not used. 0, or -EINVAL (pool 0, a route lane_add refuses, no hop1),
 * -ESRCH if the lane is not running, -ENOMEM, socket()'s -errno. */
int lane_pool_build(uint32_t pool, const struct lane_route *route, uint64_t expires_ns,
                    uint32_t low);

/* Let the lane keep pool at target tunnels by itself (0: stop): a tunnel taken is
 * replaced as lane_pool_build would build it with route (hop1, requests, replies,
 * timeout_ms; route->route comes back in each build's lane_done), expiring max_age_ns
 * after its build began. The missing ones are built at once while the pool holds low
 * tunnels or fewer, else once no take came for quiet_ms (a build beside a connection
 * slows it down). Expired and unusable tunnels go at this call, and are replaced.
 * A build that worked is announced with the answered connects; one that failed at
 * once, and the pool then refills no more by itself until called again. A call
 * replaces the pool's settings. 0, or -EINVAL (pool 0; with a target, a route
 * lane_add refuses, no hop1 or a max_age_ns of 0), -ESRCH if the lane is not running,
 * -ENOMEM. */
int lane_pool_refill(uint32_t pool, const struct lane_route *route, uint32_t target,
                     uint32_t low, uint32_t quiet_ms, uint64_t max_age_ns);

/* The oldest usable tunnel of pool, for the daemon's own use (its fd: the caller's to
 * close), or -ENOENT. Unusable ones met on the way are closed and counted discarded. */
int lane_pool_take(uint32_t pool);

/* The pool's state, once expired and unusable tunnels are closed (counted discarded).
 * 0, or -ENOENT for a pool never given a tunnel (or closed). */
int lane_pool_state(uint32_t pool, struct lane_pool_state *out);

/* Close pool's tunnels and forget it (0: every pool). */
void lane_pool_close(uint32_t pool);

/* end of the cffi block */

#endif

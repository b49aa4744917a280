/* The lane (lane.h): the daemon's cached HANDOFF requests, served in C on a thread of
 * its own with its own epoll.
 *
 * Who owns what. One mutex (L.mu) guards the routes, the watch table, both queues,
 * the pools of pre-built tunnels and the builds not yet started, and every epoll_ctl
 * on a control connection (so that a re-arm cannot overwrite the registration of a
 * newer watch of the same fd number). The lane thread alone owns the connects and
 * builds in flight (struct conn, on L.live) and the epoll registrations of their
 * sockets; it never holds the mutex across a call that can block (recvmsg, connect,
 * send and recv are all non-blocking here, and none runs under the mutex; a waiting
 * tunnel's check is a poll() with no timeout).
 *
 * Stale events. Every registration carries a generation in its epoll data: a control
 * connection's is its watch's, a program socket's or tunnel's is its connect's (keyed
 * by its control connection), a build's its own (keyed by its socket). An event whose
 * generation is not the current one of that fd is from a registration since dropped
 * (a connection released and its fd number watched again, a connect finished earlier in
 * the same batch) and is ignored.
 *
 * Nothing is dropped for want of memory once accepted: a given-back connection travels
 * in its own watch record, an answered connect in its own conn record (both allocated
 * before they are needed), so the queues are intrusive lists that grow without
 * allocating.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/tcp.h>     /* struct tcp_info with tcpi_bytes_acked (glibc's lacks it) */
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "socksify_wire.h"
#include "lane.h"

#define LANE_EXPORT __attribute__((visibility("default")))

#ifndef SO_COOKIE
#define SO_COOKIE 57       /* Linux 4.12; older headers lack the name, not the option */
#endif

#define MAX_ROUTES     65536
#define SOCKS4_REPLY   8
#define SOCKS5_METHOD  2
#define SOCKS5_HEAD    5    /* VER REP RSV ATYP and the address's first byte */
#define SOCKS5_LONGEST (SOCKS5_HEAD + 255 + 2)   /* ATYP 3 with a 255-byte name */
#define EVENTS_PER_WAIT 64
/* Answered connects are announced to the daemon this long after the first of them,
 * together: a wake-up of the daemon's Python per connect, beside the program's next
 * one on a small machine, would cost the program more than the lane saves it, and
 * each wake-up has a price of its own (a cold interpreter: at 20 ms the daemon's
 * Python spent 1.6 to 2.3 times as much per connect as at 100 ms,
 * docs/performance.md).
 * A given-back request is announced at once (a shim waits for its answer), and so
 * is a failed connect (its log line and the hop's health), a take that left a
 * pool low (its refill, where the daemon refills it) and a build the daemon waits
 * for (lane_pool_build's); a pool's own refill is announced with the connects. */
#define DONE_NOTICE_NS (100 * 1000000ull)

/* epoll data: the fd in bits 0-30, the kind in bit 31, the generation above. */
#define KIND_CONTROL 0u
#define KIND_APP     1u
#define WAKE_KEY     UINT64_MAX
#define KICK_KEY     (UINT64_MAX - 1)

_Static_assert(sizeof(struct sockaddr_in6) <= LANE_SOCKADDR_SIZE, "hop1 holds an IPv6 address");
_Static_assert(SOCKS5_LONGEST <= 262, "a SOCKS5 reply fits its buffer");

enum watch_state {
    W_IDLE,      /* armed: the next readable event is the lane's to read */
    W_READING,   /* the lane thread is reading a request (without the mutex) */
    W_BUSY,      /* a connect is in flight for it */
};

struct conn;

/* A watched control connection; once given back, the record of that in the given
 * queue. */
struct watch {
    struct watch *next;        /* the given queue */
    int fd;
    uint32_t gen;
    uint64_t proc;
    enum watch_state state;
    uint64_t last_ns;          /* watched, or a request came or was answered */
    struct conn *conn;         /* W_BUSY: its connect */
    struct lane_given given;
};

enum phase { P_CONNECTING, P_WRITING, P_READING };

/* A pre-built tunnel waiting in its pool. */
struct tunnel {
    struct tunnel *next;
    int fd;
    int family;
    uint64_t expires_ns;
};

struct pool {
    struct pool *next;
    uint32_t id;
    uint32_t ready, low;
    struct tunnel *head, *tail;    /* oldest first */
    uint64_t taken, discarded;
    uint64_t last_take_ns;         /* CLOCK_MONOTONIC of the latest take, 0: none */
    uint32_t building;             /* its builds under way (lane_pool_build, refills) */
    /* the lane's own refill (lane_pool_refill), off while target is 0 */
    uint32_t target;
    uint64_t quiet_ns, max_age_ns;
    struct lane_route plan;        /* how one of its tunnels is built */
};

/* A connect in flight (lane thread only); once answered, the record of that in the done
 * queue. */
struct conn {
    struct conn *prev, *next;  /* L.live */
    struct conn *next_done;
    struct watch *w;           /* W_BUSY until answered: cannot go away meanwhile */
    int app;                   /* the lane's copy of the program's socket */
    int tun;                   /* a pool route's tunnel, else -1 */
    int sock;                  /* what is negotiated on: app, or tun */
    int urgent;                /* its take left the pool low: tell the daemon at once */
    int answered;              /* a hop's reply refused: its word, not a dead tunnel */
    int build;                 /* a tunnel built for route.pool (no watch, no program) */
    int refill;                /* that build is the lane's own refill's */
    uint64_t expires_ns;       /* a build's: lane_pool_put's */
    uint32_t low;
    struct conn *next_build;   /* lane_pool_build's queue, until the lane thread starts it */
    uint32_t gen;
    uint32_t events;           /* what app is registered for */
    enum phase phase;
    uint32_t sent;             /* bytes of route.requests written */
    uint32_t reply;            /* index of the reply being read */
    uint32_t got, want;        /* of that reply */
    int lowat;                 /* the program's SO_RCVLOWAT to put back, -1: none */
    uint64_t deadline_ns;
    uint8_t buf[262];          /* the reply being read */
    uint8_t request[LANE_MAX_REQUEST];   /* as read: a failed tunnel gives it back */
    struct lane_route route;
    struct lane_done done;
};

struct route_node {
    struct route_node *next;
    uint64_t hash;
    struct lane_route r;
};

static struct {
    pthread_mutex_t mu;
    /* under mu */
    struct route_node **buckets;
    size_t n_buckets, n_routes;
    struct watch **watches;    /* by fd */
    int n_slots;
    uint32_t gen;
    struct watch *given_head, *given_tail;
    struct conn *done_head, *done_tail;
    struct pool *pools;
    struct conn *builds;       /* queued by lane_pool_build for the lane thread */
    int running;
    int ep;                    /* -1 while not running */
    /* lane_start/lane_stop (under life) */
    pthread_mutex_t life;
    int started;
    int notify;
    int wake;
    int kick;                  /* builds are queued */
    pthread_t thread;
    /* the lane thread's */
    struct conn *live;
    int stopping;              /* shut_down: a failed tunnel's request is not given back */
    uint64_t done_due;         /* when the answered connects queued since the daemon
                                  was last told are announced (0: none waits) */
    int refill_poke;           /* a take or lane_pool_refill: see to the refills */
    uint64_t refill_due;       /* when a pool that waits for a pause refills (0: none) */
} L = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .life = PTHREAD_MUTEX_INITIALIZER,
    .ep = -1,
    .notify = -1,
    .wake = -1,
    .kick = -1,
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t event_key(int fd, uint32_t gen, unsigned kind)
{
    return (uint64_t)gen << 32 | (uint64_t)kind << 31 | (uint32_t)fd;
}

static uint32_t next_gen_locked(void)
{
    if (++L.gen == 0)          /* 0 is never a live generation */
        ++L.gen;
    return L.gen;
}

static void notify(void)
{
    uint64_t one = 1;
    /* can only fail when the counter is near 2^64: it is readable then anyway */
    if (write(L.notify, &one, sizeof one) < 0)
        return;
}

/* ---- routes ------------------------------------------------------------------------ */

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t route_hash(uint64_t proc, uint8_t family, const uint8_t addr[16],
                           uint16_t port)
{
    uint64_t h = 0xcbf29ce484222325ull;
    h = fnv(h, &proc, sizeof proc);
    h = fnv(h, &family, 1);
    h = fnv(h, addr, 16);
    return fnv(h, &port, sizeof port);
}

static int same_key(const struct lane_route *r, uint64_t proc, uint8_t family,
                    const uint8_t addr[16], uint16_t port)
{
    return r->proc == proc && r->family == family && r->port == port
           && memcmp(r->addr, addr, 16) == 0;
}

static struct route_node *route_find_locked(uint64_t proc, uint8_t family,
                                            const uint8_t addr[16], uint16_t port)
{
    if (!L.n_buckets)
        return NULL;
    uint64_t h = route_hash(proc, family, addr, port);
    for (struct route_node *n = L.buckets[h & (L.n_buckets - 1)]; n; n = n->next)
        if (n->hash == h && same_key(&n->r, proc, family, addr, port))
            return n;
    return NULL;
}

/* Drop the routes of proc (0: all). */
static void routes_drop_locked(uint64_t proc)
{
    for (size_t i = 0; i < L.n_buckets; i++) {
        struct route_node **link = &L.buckets[i];
        while (*link) {
            struct route_node *n = *link;
            if (proc == 0 || n->r.proc == proc) {
                *link = n->next;
                free(n);
                L.n_routes--;
            } else {
                link = &n->next;
            }
        }
    }
}

/* Room for one more route: twice the buckets when they are as many as the routes.
 * Without memory for that, the chains just get longer. */
static int routes_grow_locked(void)
{
    if (L.n_buckets && L.n_routes < L.n_buckets)
        return 0;
    size_t n = L.n_buckets ? L.n_buckets * 2 : 64;
    struct route_node **b = calloc(n, sizeof *b);
    if (!b)
        return L.n_buckets ? 0 : -ENOMEM;
    for (size_t i = 0; i < L.n_buckets; i++) {
        while (L.buckets[i]) {
            struct route_node *node = L.buckets[i];
            L.buckets[i] = node->next;
            node->next = b[node->hash & (n - 1)];
            b[node->hash & (n - 1)] = node;
        }
    }
    free(L.buckets);
    L.buckets = b;
    L.n_buckets = n;
    return 0;
}

static int route_valid(const struct lane_route *r)
{
    if (r->family != SOCKSIFY_FAMILY_INET && r->family != SOCKSIFY_FAMILY_INET6)
        return 0;
    sa_family_t af;
    memcpy(&af, r->hop1, sizeof af);
    if (!((af == AF_INET && r->hop1_len == sizeof(struct sockaddr_in))
          || (af == AF_INET6 && r->hop1_len == sizeof(struct sockaddr_in6))
          || (r->pool && r->hop1_len == 0)))    /* a pool route connects nothing */
        return 0;
    if (r->requests_len > LANE_MAX_REQUESTS || r->n_replies > LANE_MAX_REPLIES
        || r->timeout_ms == 0)
        return 0;
    for (uint32_t i = 0; i < r->n_replies; i++)
        if (r->replies[i] < LANE_REPLY_SOCKS4 || r->replies[i] > LANE_REPLY_SOCKS5)
            return 0;
    return 1;
}

LANE_EXPORT int lane_add(const struct lane_route *route)
{
    if (!route || !route_valid(route))
        return -EINVAL;
    struct route_node *node = malloc(sizeof *node);
    if (!node)
        return -ENOMEM;
    node->r = *route;
    node->hash = route_hash(route->proc, route->family, route->addr, route->port);
    pthread_mutex_lock(&L.mu);
    struct route_node *old = route_find_locked(route->proc, route->family, route->addr,
                                               route->port);
    if (old) {
        old->r = *route;
        pthread_mutex_unlock(&L.mu);
        free(node);
        return 0;
    }
    if (L.n_routes >= MAX_ROUTES)
        routes_drop_locked(0);
    int rc = routes_grow_locked();
    if (rc == 0) {
        size_t i = node->hash & (L.n_buckets - 1);
        node->next = L.buckets[i];
        L.buckets[i] = node;
        L.n_routes++;
    }
    pthread_mutex_unlock(&L.mu);
    if (rc)
        free(node);
    return rc;
}

LANE_EXPORT void lane_forget(uint64_t proc)
{
    pthread_mutex_lock(&L.mu);
    routes_drop_locked(proc);
    pthread_mutex_unlock(&L.mu);
}

/* ---- pools of pre-built tunnels ---------------------------------------------------- */

static struct pool *pool_find_locked(uint32_t id)
{
    for (struct pool *p = L.pools; p; p = p->next)
        if (p->id == id)
            return p;
    return NULL;
}

/* A waiting tunnel must be in time and have nothing to read: readable means the hop
 * closed it, reset it or sent something unasked (as chains/pool.py's usable). A poll
 * with no timeout: it never blocks, so it may run under the mutex. */
static int tunnel_usable(const struct tunnel *t, uint64_t now)
{
    if (t->expires_ns <= now)
        return 0;
    struct pollfd pfd = {.fd = t->fd, .events = POLLIN | POLLPRI};
    return poll(&pfd, 1, 0) == 0;
}

static void tunnels_close(struct tunnel *t)
{
    while (t) {
        struct tunnel *next = t->next;
        close(t->fd);
        free(t);
        t = next;
    }
}

/* Out of p: every tunnel that is no longer usable (returned as a list, to be closed
 * once the mutex is released). */
static struct tunnel *pool_prune_locked(struct pool *p, uint64_t now)
{
    struct tunnel *dead = NULL, *last = NULL;
    struct tunnel **link = &p->head;
    while (*link) {
        struct tunnel *t = *link;
        if (tunnel_usable(t, now)) {
            last = t;
            link = &t->next;
            continue;
        }
        *link = t->next;
        t->next = dead;
        dead = t;
        p->ready--;
        p->discarded++;
    }
    p->tail = last;
    return dead;
}

/* The oldest usable tunnel of pool id, of family, out of the pool: its fd, or -ENOENT.
 * *low is set when the take left the pool at its low mark or below. */
static int pool_take(uint32_t id, int family, int *low)
{
    struct tunnel *dead = NULL;
    int fd = -ENOENT;
    uint64_t now = now_ns();
    pthread_mutex_lock(&L.mu);
    struct pool *p = pool_find_locked(id);
    while (p && p->head && p->head->family == family) {
        struct tunnel *t = p->head;
        p->head = t->next;
        if (!p->head)
            p->tail = NULL;
        p->ready--;
        if (!tunnel_usable(t, now)) {
            p->discarded++;
            t->next = dead;
            dead = t;
            continue;
        }
        fd = t->fd;
        free(t);
        p->taken++;
        p->last_take_ns = now;
        if (low)               /* a pool the lane refills itself tells nobody */
            *low = !p->target && p->ready <= p->low;
        break;
    }
    pthread_mutex_unlock(&L.mu);
    tunnels_close(dead);
    return fd;
}

/* Pool id, made if new (NULL: no memory). */
static struct pool *pool_get_locked(uint32_t id)
{
    struct pool *p = pool_find_locked(id);
    if (!p && (p = calloc(1, sizeof *p)) != NULL) {
        p->id = id;
        p->next = L.pools;
        L.pools = p;
    }
    return p;
}

/* t at the end of pool id (made if new, unless `existing`). 0, -ENOMEM, or -ENOENT
 * (t is the caller's then). */
static int pool_append_locked(uint32_t id, struct tunnel *t, uint32_t low, int existing)
{
    struct pool *p = existing ? pool_find_locked(id) : pool_get_locked(id);
    if (!p)
        return existing ? -ENOENT : -ENOMEM;
    p->low = low;
    t->next = NULL;
    if (p->tail)
        p->tail->next = t;
    else
        p->head = t;
    p->tail = t;
    p->ready++;
    return 0;
}

LANE_EXPORT int lane_pool_put(uint32_t pool, int fd, uint64_t expires_ns, uint32_t low)
{
    int type = 0, family = 0;
    socklen_t len = sizeof type;
    if (pool == 0 || fd < 0
        || getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM)
        return -EINVAL;
    len = sizeof family;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &family, &len) < 0)
        return -EINVAL;
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || (!(flags & O_NONBLOCK) && fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0))
        return -errno;
    struct tunnel *t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    t->fd = fd;
    t->family = family;
    t->expires_ns = expires_ns;
    pthread_mutex_lock(&L.mu);
    int rc = pool_append_locked(pool, t, low, 0);
    pthread_mutex_unlock(&L.mu);
    if (rc)
        free(t);
    return rc;
}

/* A build of one of pool's tunnels as route says, not started: a conn of its own on
 * a new socket of the lane's (non-blocking; TCP_NODELAY as the daemon's own sockets,
 * chains/connect.py). NULL with the -errno of calloc or socket in *err. */
static struct conn *build_new(uint32_t pool, const struct lane_route *route,
                              uint64_t expires_ns, uint32_t low, int *err)
{
    sa_family_t af;
    memcpy(&af, route->hop1, sizeof af);
    struct conn *c = calloc(1, sizeof *c);
    if (!c) {
        *err = -ENOMEM;
        return NULL;
    }
    int s = socket(af, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0) {
        *err = -errno;
        free(c);
        return NULL;
    }
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->route = *route;
    c->route.pool = pool;
    c->build = 1;
    c->sock = s;
    c->app = c->tun = -1;
    c->expires_ns = expires_ns;
    c->low = low;
    c->done.route = route->route;
    c->done.fd = -1;
    c->done.family = route->family;
    return c;
}

LANE_EXPORT int lane_pool_build(uint32_t pool, const struct lane_route *route,
                                uint64_t expires_ns, uint32_t low)
{
    if (pool == 0 || !route || !route_valid(route) || route->hop1_len == 0)
        return -EINVAL;
    int rc = 0;
    struct conn *c = build_new(pool, route, expires_ns, low, &rc);
    if (!c)
        return rc;
    struct pool *p;
    pthread_mutex_lock(&L.mu);
    if (!L.running) {
        rc = -ESRCH;
    } else if (!(p = pool_get_locked(pool))) {   /* its tunnel goes there, if still open */
        rc = -ENOMEM;
    } else {
        p->building++;
        c->next_build = L.builds;
        L.builds = c;
        /* under the mutex: lane_stop closes L.kick under it. A write that fails can
         * only find the counter near 2^64, readable anyway */
        uint64_t n = 1;
        if (write(L.kick, &n, sizeof n) < 0)
            rc = 0;
    }
    pthread_mutex_unlock(&L.mu);
    if (rc) {
        close(c->sock);
        free(c);
    }
    return rc;
}

LANE_EXPORT int lane_pool_refill(uint32_t pool, const struct lane_route *route,
                                 uint32_t target, uint32_t low, uint32_t quiet_ms,
                                 uint64_t max_age_ns)
{
    if (pool == 0 || (target && (!route || !route_valid(route) || route->hop1_len == 0
                                 || max_age_ns == 0)))
        return -EINVAL;
    int rc = 0;
    struct tunnel *dead = NULL;
    struct pool *p;
    pthread_mutex_lock(&L.mu);
    if (!target && !pool_find_locked(pool)) {
        rc = 0;                /* nothing to turn off */
    } else if (!L.running) {
        rc = -ESRCH;
    } else if (!(p = pool_get_locked(pool))) {
        rc = -ENOMEM;
    } else {
        dead = pool_prune_locked(p, now_ns());    /* what expired is replaced too */
        p->target = target;
        p->low = low;
        p->quiet_ns = (uint64_t)quiet_ms * 1000000u;
        p->max_age_ns = max_age_ns;
        if (target) {
            p->plan = *route;
            p->plan.pool = pool;
        }
        uint64_t n = 1;        /* the lane thread looks at the refills */
        if (write(L.kick, &n, sizeof n) < 0)
            rc = 0;
    }
    pthread_mutex_unlock(&L.mu);
    tunnels_close(dead);
    return rc;
}

LANE_EXPORT int lane_pool_take(uint32_t pool)
{
    pthread_mutex_lock(&L.mu);
    struct pool *p = pool_find_locked(pool);
    int family = p && p->head ? p->head->family : 0;
    pthread_mutex_unlock(&L.mu);
    return family ? pool_take(pool, family, NULL) : -ENOENT;
}

LANE_EXPORT int lane_pool_state(uint32_t pool, struct lane_pool_state *out)
{
    if (!out)
        return -EINVAL;
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&L.mu);
    struct pool *p = pool_find_locked(pool);
    struct tunnel *dead = p ? pool_prune_locked(p, now_ns()) : NULL;
    if (p) {
        out->ready = p->ready;
        out->low = p->low;
        out->taken = p->taken;
        out->discarded = p->discarded;
        out->building = p->building;
        out->target = p->target;
        if (p->head) {
            out->oldest_expires_ns = p->head->expires_ns;
            out->family = p->head->family;
        }
    }
    pthread_mutex_unlock(&L.mu);
    tunnels_close(dead);
    return p ? 0 : -ENOENT;
}

LANE_EXPORT void lane_pool_close(uint32_t pool)
{
    struct tunnel *dead = NULL;
    pthread_mutex_lock(&L.mu);
    struct pool **link = &L.pools;
    while (*link) {
        struct pool *p = *link;
        if (pool != 0 && p->id != pool) {
            link = &p->next;
            continue;
        }
        *link = p->next;
        if (p->tail) {
            p->tail->next = dead;
            dead = p->head;
        }
        free(p);
    }
    pthread_mutex_unlock(&L.mu);
    tunnels_close(dead);
}

/* ---- watches and the given queue --------------------------------------------------- */

static struct watch *watch_at_locked(int fd)
{
    return fd >= 0 && fd < L.n_slots ? L.watches[fd] : NULL;
}

/* Read the next request when fd becomes readable (once: EPOLLONESHOT, so there is
 * never a second reader of a connection). */
static int arm_control_locked(struct watch *w, int op)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT,
                             .data.u64 = event_key(w->fd, w->gen, KIND_CONTROL)};
    return epoll_ctl(L.ep, op, w->fd, &ev) < 0 ? -errno : 0;
}

/* fd is no longer the lane's: out of the table and of the epoll set. */
static void detach_locked(struct watch *w)
{
    L.watches[w->fd] = NULL;
    epoll_ctl(L.ep, EPOLL_CTL_DEL, w->fd, NULL);
}

/* Detach w and queue it for lane_take with what was read (len 0: err says why). The
 * caller notifies once the mutex is released. */
static void give_back_locked(struct watch *w, const uint8_t *data, uint32_t len,
                             const int *fds, int nfds, int err)
{
    detach_locked(w);
    struct lane_given *g = &w->given;
    memset(g, 0, sizeof *g);
    g->fd = w->fd;
    g->nfds = nfds;
    for (int i = 0; i < nfds; i++)
        g->fds[i] = fds[i];
    g->err = err;
    g->len = len;
    if (len)
        memcpy(g->data, data, len);
    w->next = NULL;
    if (L.given_tail)
        L.given_tail->next = w;
    else
        L.given_head = w;
    L.given_tail = w;
}

static void give_back(struct watch *w, const uint8_t *data, uint32_t len,
                      const int *fds, int nfds, int err)
{
    pthread_mutex_lock(&L.mu);
    give_back_locked(w, data, len, fds, nfds, err);
    pthread_mutex_unlock(&L.mu);
    notify();
}

static int grow_slots_locked(int fd)
{
    if (fd < L.n_slots)
        return 0;
    int n = L.n_slots ? L.n_slots : 64;
    while (n <= fd)
        n = n > INT_MAX / 2 ? INT_MAX : n * 2;
    struct watch **t = realloc(L.watches, (size_t)n * sizeof *t);
    if (!t)
        return -ENOMEM;
    memset(t + L.n_slots, 0, (size_t)(n - L.n_slots) * sizeof *t);
    L.watches = t;
    L.n_slots = n;
    return 0;
}

LANE_EXPORT int lane_watch(int fd, uint64_t proc)
{
    if (fd < 0 || fd == INT_MAX)   /* INT_MAX: no table can have a slot for it */
        return -EBADF;
    struct watch *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->fd = fd;
    w->proc = proc;
    w->state = W_IDLE;
    w->last_ns = now_ns();
    int rc;
    pthread_mutex_lock(&L.mu);
    if (!L.running)
        rc = -ESRCH;
    else if (watch_at_locked(fd))
        rc = -EEXIST;
    else
        rc = grow_slots_locked(fd);
    if (rc == 0) {
        w->gen = next_gen_locked();
        rc = arm_control_locked(w, EPOLL_CTL_ADD);
        if (rc == -EEXIST)     /* this very file is registered still: take it over */
            rc = arm_control_locked(w, EPOLL_CTL_MOD);
    }
    if (rc == 0)
        L.watches[fd] = w;
    pthread_mutex_unlock(&L.mu);
    if (rc)
        free(w);
    return rc;
}

LANE_EXPORT int lane_release(int fd, uint32_t idle_ms)
{
    int rc;
    pthread_mutex_lock(&L.mu);
    struct watch *w = watch_at_locked(fd);
    if (!w) {
        rc = -ENOENT;
    } else if (w->state != W_IDLE
               || now_ns() - w->last_ns < (uint64_t)idle_ms * 1000000u) {
        rc = 0;
    } else {
        /* a request the lane has not read yet is not idle: it would be lost if the
         * daemon closed the connection now */
        char b;
        rc = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0 ? 0 : 1;
        if (rc == 1) {
            detach_locked(w);
            free(w);
        }
    }
    pthread_mutex_unlock(&L.mu);
    return rc;
}

/* Give (at most max) given-back connections, oldest first. */
LANE_EXPORT int lane_take(struct lane_given *out, int max)
{
    if (!out || max <= 0)
        return 0;
    int n = 0;
    pthread_mutex_lock(&L.mu);
    while (n < max && L.given_head) {
        struct watch *w = L.given_head;
        L.given_head = w->next;
        if (!L.given_head)
            L.given_tail = NULL;
        out[n++] = w->given;
        free(w);
    }
    int more = L.given_head || L.done_head;
    pthread_mutex_unlock(&L.mu);
    if (more)              /* the daemon may have read the eventfd already */
        notify();
    return n;
}

LANE_EXPORT int lane_done(struct lane_done *out, int max)
{
    if (!out || max <= 0)
        return 0;
    int n = 0;
    pthread_mutex_lock(&L.mu);
    while (n < max && L.done_head) {
        struct conn *c = L.done_head;
        L.done_head = c->next_done;
        if (!L.done_head)
            L.done_tail = NULL;
        out[n++] = c->done;
        free(c);
    }
    int more = L.given_head || L.done_head;
    pthread_mutex_unlock(&L.mu);
    if (more)
        notify();
    return n;
}

/* ---- a connect: answer ------------------------------------------------------------- */

static uint8_t code_of_connect(int err)
{
    switch (err) {
    case ENETUNREACH: return SOCKSIFY_CODE_NETUNREACH;
    case EHOSTUNREACH: return SOCKSIFY_CODE_HOSTUNREACH;
    case ETIMEDOUT: return SOCKSIFY_CODE_TIMEDOUT;
    default: return SOCKSIFY_CODE_CONNREFUSED;
    }
}

static void live_unlink(struct conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        L.live = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

/* What the daemon logs of a connected socket; each piece left 0 if not given. */
static void collect(struct conn *c)
{
    struct lane_done *d = &c->done;
    socklen_t len = sizeof d->local;
    if (getsockname(c->sock, (struct sockaddr *)d->local, &len) == 0)
        d->local_len = len < sizeof d->local ? len : sizeof d->local;
    len = sizeof d->peer;
    if (getpeername(c->sock, (struct sockaddr *)d->peer, &len) == 0)
        d->peer_len = len < sizeof d->peer ? len : sizeof d->peer;
    uint64_t cookie = 0;
    len = sizeof cookie;
    if (getsockopt(c->sock, SOL_SOCKET, SO_COOKIE, &cookie, &len) == 0 && len == sizeof cookie)
        d->cookie = cookie;
    struct tcp_info ti;
    memset(&ti, 0, sizeof ti);
    len = sizeof ti;
    if (getsockopt(c->sock, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0) {
        /* an older kernel gives a shorter struct: only what it filled counts */
        if (len >= offsetof(struct tcp_info, tcpi_bytes_acked) + sizeof ti.tcpi_bytes_acked)
            d->bytes_acked = ti.tcpi_bytes_acked;
        if (len >= offsetof(struct tcp_info, tcpi_bytes_received)
                   + sizeof ti.tcpi_bytes_received)
            d->bytes_received = ti.tcpi_bytes_received;
    }
}

/* A pre-built tunnel failed without the last hop's answer (closed, reset, a broken or
 * no reply): it may have died while it waited, so the tunnel goes (counted discarded)
 * and the request goes back to the daemon as it was read, with the program's socket,
 * untouched, for a fresh chain (chains/route.py). A refusal the hop answered is the
 * program's, as on any route: a fresh chain would only hear it again, and the target
 * would see a second attempt. The process's routes go too, as after any failure. c is
 * freed. */
static void give_back_failed(struct conn *c)
{
    struct watch *w = c->w;
    close(c->tun);
    live_unlink(c);
    pthread_mutex_lock(&L.mu);
    struct pool *p = pool_find_locked(c->route.pool);
    if (p)
        p->discarded++;
    routes_drop_locked(c->done.proc);
    w->conn = NULL;
    give_back_locked(w, c->request, SOCKSIFY_REQUEST_SIZE, &c->app, 1, 0);
    pthread_mutex_unlock(&L.mu);
    free(c);
    L.refill_poke = 1;         /* the tunnel's replacement */
    notify();
}

/* The done queue's end: c. */
static void queue_done_locked(struct conn *c)
{
    c->next_done = NULL;
    if (L.done_tail)
        L.done_tail->next_done = c;
    else
        L.done_head = c;
    L.done_tail = c;
}

/* What failed, for the record: the reply's index (255: the connect) and its first
 * bytes. */
static void note_failure(struct conn *c)
{
    struct lane_done *d = &c->done;
    d->failed = c->phase == P_CONNECTING ? LANE_FAILED_CONNECT : (uint8_t)c->reply;
    d->got = (uint8_t)(c->got < 255 ? c->got : 255);
    memcpy(d->reply, c->buf, c->got < 2 ? c->got : 2);
}

/* A build is over: its tunnel into its pool, or closed. One of lane_pool_build's is
 * reported at once either way (the daemon's pool waits for it); one of the lane's own
 * refill with the answered connects if it worked, else at once, and the pool then
 * refills no more by itself (the daemon decides when to try again). c is the done
 * queue's. */
static void finish_build(struct conn *c, uint8_t code, int err)
{
    struct lane_done *d = &c->done;
    live_unlink(c);
    struct tunnel *t = NULL;
    if (code == SOCKSIFY_CODE_NONE && !(t = calloc(1, sizeof *t))) {
        code = SOCKSIFY_CODE_CONNREFUSED;
        err = ENOMEM;
    }
    if (code == SOCKSIFY_CODE_NONE)
        d->failed = (uint8_t)c->route.n_replies;
    else
        note_failure(c);
    uint64_t answered = d->answered_ns = now_ns();
    pthread_mutex_lock(&L.mu);
    struct pool *p = pool_find_locked(c->route.pool);
    if (p && p->building)
        p->building--;
    if (p && c->refill && code != SOCKSIFY_CODE_NONE)
        p->target = 0;
    if (t) {
        sa_family_t af;
        memcpy(&af, c->route.hop1, sizeof af);
        t->fd = c->sock;
        t->family = af;
        t->expires_ns = c->expires_ns;
        /* a pool closed meanwhile (lane_pool_close) takes no more tunnels */
        int rc = pool_append_locked(c->route.pool, t, c->low, 1);
        if (rc < 0) {
            free(t);
            t = NULL;
            code = SOCKSIFY_CODE_CONNREFUSED;
            err = -rc;
        }
    }
    d->code = code;
    d->err = err;
    int quietly = c->refill && code == SOCKSIFY_CODE_NONE;
    queue_done_locked(c);
    pthread_mutex_unlock(&L.mu);
    if (!t)
        close(c->sock);
    /* c may be the daemon's already (lane_done): only the copies above are read */
    if (!quietly) {
        L.done_due = 0;
        notify();
    } else if (!L.done_due) {
        L.done_due = answered + DONE_NOTICE_NS;
    }
}

/* READY, FAIL or SWAP (with the tunnel attached) on the control connection fd: 0, or
 * the errno of a send that failed. */
static int answer(int fd, uint8_t verdict, uint8_t code, int attach)
{
    uint8_t reply[SOCKSIFY_REPLY_SIZE] = {0};
    memcpy(reply, SOCKSIFY_MAGIC, SOCKSIFY_MAGIC_SIZE);
    reply[SOCKSIFY_REP_OFF_VERSION] = SOCKSIFY_WIRE_VERSION;
    reply[SOCKSIFY_REP_OFF_VERDICT] = verdict;
    reply[SOCKSIFY_REP_OFF_CODE] = code;
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    struct iovec iov = {.iov_base = reply, .iov_len = sizeof reply};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (attach >= 0) {
        memset(&control, 0, sizeof control);
        msg.msg_control = control.buf;
        msg.msg_controllen = sizeof control.buf;
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &attach, sizeof attach);
    }
    ssize_t n;
    do
        n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    return n == (ssize_t)sizeof reply ? 0 : n < 0 ? errno : EIO;
}

/* Answer c (code 0: READY, or SWAP for a pool route; else FAIL with it), report it,
 * and give its control connection its next request, or back to the daemon if the
 * answer could not go. A pool route's failure goes back to the daemon instead
 * (give_back_failed), but a refusal the last hop answered and the lane's stop. c
 * belongs to the done queue afterwards: not to be touched. */
static void finish(struct conn *c, uint8_t code, int err)
{
    struct lane_done *d = &c->done;
    struct watch *w = c->w;
    if (c->events)
        epoll_ctl(L.ep, EPOLL_CTL_DEL, c->sock, NULL);
    if (c->build) {
        finish_build(c, code, err);
        return;
    }
    if (c->tun >= 0 && code != SOCKSIFY_CODE_NONE && !L.stopping && !c->answered) {
        give_back_failed(c);
        return;
    }
    d->code = code;
    d->err = err;
    int swap = code == SOCKSIFY_CODE_NONE && c->tun >= 0;
    if (code == SOCKSIFY_CODE_NONE) {
        d->failed = (uint8_t)c->route.n_replies;
        if (!swap)             /* a tunnel stays the lane's until after the answer */
            collect(c);
    } else {
        note_failure(c);
    }
    if (c->lowat >= 0)
        setsockopt(c->app, SOL_SOCKET, SO_RCVLOWAT, &c->lowat, sizeof c->lowat);
    if (code != SOCKSIFY_CODE_NONE && c->tun < 0) {
        /* dissolve whatever connection there is, so the program may connect again, as
         * after a connect() that failed on its own (a pool route's never was) */
        struct sockaddr unspec = {.sa_family = AF_UNSPEC};
        connect(c->app, &unspec, sizeof unspec);
    }
    /* the lane's copy goes before the answer (docs/wire.md): the program may close or
     * hand on its socket as soon as it reads READY */
    close(c->app);
    c->app = -1;
    if (code != SOCKSIFY_CODE_NONE) {
        /* before the answer too: the process's next connect goes to the daemon, whose
         * chain engine retries, blames and logs as it does for any connect */
        pthread_mutex_lock(&L.mu);
        routes_drop_locked(d->proc);
        pthread_mutex_unlock(&L.mu);
    }

    int send_err = answer(w->fd, code ? SOCKSIFY_VERDICT_FAIL
                                      : swap ? SOCKSIFY_VERDICT_SWAP : SOCKSIFY_VERDICT_READY,
                          code, swap ? c->tun : -1);
    if (c->tun >= 0) {         /* the program has its own copy now, if it was sent */
        if (swap)
            collect(c);
        close(c->tun);
        c->tun = -1;
    }
    uint64_t answered = d->answered_ns = now_ns();
    int urgent = c->urgent;
    if (c->route.pool)         /* the tunnel's replacement, once the program has its */
        L.refill_poke = 1;     /* answer (a build beside it would slow it down) */
    live_unlink(c);

    pthread_mutex_lock(&L.mu);
    queue_done_locked(c);
    w->conn = NULL;
    if (send_err) {
        give_back_locked(w, NULL, 0, NULL, 0, send_err);
    } else {
        w->state = W_IDLE;
        w->last_ns = d->answered_ns;
        arm_control_locked(w, EPOLL_CTL_MOD);
    }
    pthread_mutex_unlock(&L.mu);
    /* c may be the daemon's already (lane_done): only the copies above are read */
    if (send_err || urgent || code != SOCKSIFY_CODE_NONE) {
        L.done_due = 0;        /* whatever waits for the announcement goes with it */
        notify();
    } else if (!L.done_due) {
        L.done_due = answered + DONE_NOTICE_NS;
    }
}

/* ---- a connect: the negotiation ---------------------------------------------------- */

static int set_events(struct conn *c, uint32_t events)
{
    if (c->events == events)
        return 0;
    /* a program's socket is keyed by its control connection, a build's by its own */
    struct epoll_event ev = {.events = events,
                             .data.u64 = event_key(c->build ? c->sock : c->w->fd, c->gen,
                                                   KIND_APP)};
    if (epoll_ctl(L.ep, c->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->sock, &ev) < 0)
        return -errno;
    c->events = events;
    return 0;
}

/* Wait for events on c's socket, or fail c if they cannot be waited for. 1: waiting. */
static int wait_for(struct conn *c, uint32_t events)
{
    int rc = set_events(c, events);
    if (rc < 0) {
        finish(c, SOCKSIFY_CODE_CONNREFUSED, -rc);
        return 0;
    }
    return 1;
}

static uint32_t first_size(uint8_t kind)
{
    switch (kind) {
    case LANE_REPLY_SOCKS4: return SOCKS4_REPLY;
    case LANE_REPLY_SOCKS5_METHOD: return SOCKS5_METHOD;
    default: return SOCKS5_HEAD;
    }
}

static uint8_t code_of_socks5(uint8_t rep, int *err)
{
    switch (rep) {
    case 3: *err = ENETUNREACH; return SOCKSIFY_CODE_NETUNREACH;
    case 4: *err = EHOSTUNREACH; return SOCKSIFY_CODE_HOSTUNREACH;
    case 6: *err = ETIMEDOUT; return SOCKSIFY_CODE_TIMEDOUT;
    case 8: *err = EAFNOSUPPORT; return SOCKSIFY_CODE_AFNOSUPPORT;
    default: *err = ECONNREFUSED; return SOCKSIFY_CODE_CONNREFUSED;
    }
}

/* Judge the bytes of the current reply read so far (got == want). Returns 1 if it is
 * complete and good, 0 if more of it is to be read (want grew), -1 if c was failed. */
static int judge(struct conn *c)
{
    const uint8_t *b = c->buf;
    int err = 0;
    switch (c->route.replies[c->reply]) {
    case LANE_REPLY_SOCKS4:
        if (b[0] != 0 && b[0] != 4)    /* 0, or 4 as some servers send (as the engine) */
            err = EPROTO;
        else if (b[1] != 90)
            err = ECONNREFUSED;
        c->answered = err == ECONNREFUSED;
        break;
    case LANE_REPLY_SOCKS5_METHOD:
        if (b[0] != 5)
            err = EPROTO;
        else if (b[1] != 0)
            err = ECONNREFUSED;
        c->answered = err == ECONNREFUSED;
        break;
    default:
        if (c->want > SOCKS5_HEAD)
            return 1;          /* the address and port behind a granted head */
        if (b[0] != 5 || (b[1] == 0 && b[2] != 0)) {   /* a grant's RSV must be 0 */
            err = EPROTO;
        } else if (b[1] != 0) {
            /* refused: what follows the head is not read, the hop closes anyway */
            uint8_t code = code_of_socks5(b[1], &err);
            c->answered = 1;
            finish(c, code, err);
            return -1;
        } else if (b[3] == 1) {
            c->want = SOCKS5_HEAD + 5;
        } else if (b[3] == 4) {
            c->want = SOCKS5_HEAD + 17;
        } else if (b[3] == 3) {
            c->want = SOCKS5_HEAD + b[4] + 2u;
        } else {
            err = EPROTO;
        }
        if (!err)
            return 0;
    }
    if (err) {
        finish(c, SOCKSIFY_CODE_CONNREFUSED, err);
        return -1;
    }
    return 1;
}

/* Read the replies, each exactly: what follows the last one is the program's. */
static void read_replies(struct conn *c)
{
    while (c->reply < c->route.n_replies) {
        if (c->want == 0)
            c->want = first_size(c->route.replies[c->reply]);
        while (c->got < c->want) {
            ssize_t n = recv(c->sock, c->buf + c->got, c->want - c->got, 0);
            if (n > 0) {
                c->got += (uint32_t)n;
                continue;
            }
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && errno == EAGAIN) {
                wait_for(c, EPOLLIN);
                return;
            }
            finish(c, SOCKSIFY_CODE_CONNREFUSED, n == 0 ? 0 : errno);
            return;
        }
        int verdict = judge(c);
        if (verdict < 0)
            return;
        if (verdict == 1) {
            c->reply++;
            c->got = c->want = 0;
        }
    }
    finish(c, SOCKSIFY_CODE_NONE, 0);
}

/* Write every hop's request at once; then read. */
static void write_requests(struct conn *c)
{
    c->phase = P_WRITING;
    while (c->sent < c->route.requests_len) {
        ssize_t n = send(c->sock, c->route.requests + c->sent,
                         c->route.requests_len - c->sent, MSG_NOSIGNAL);
        if (n > 0) {
            c->sent += (uint32_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            wait_for(c, EPOLLOUT);
            return;
        }
        finish(c, SOCKSIFY_CODE_CONNREFUSED, n == 0 ? EIO : errno);
        return;
    }
    c->phase = P_READING;
    if (c->route.n_replies == 0)   /* a tunnel to hop 1 alone: connected is built */
        read_replies(c);
    else                       /* no reply can be in yet (the hop has to run first) */
        wait_for(c, EPOLLIN);
}

static void connected(struct conn *c)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->sock, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err)
        finish(c, code_of_connect(err), err);
    else
        write_requests(c);
}

/* The program's socket, O_NONBLOCK and with a low-water mark of 1 (a higher one would
 * keep it unreadable until more than a reply is in: sockstream.replies_readable), then
 * the connect to hop 1. A pool route's tunnel (non-blocking, the lane's own) is
 * connected already: its requests go at once. */
static void begin(struct conn *c)
{
    c->lowat = -1;
    if (c->tun >= 0) {
        c->sock = c->tun;
        write_requests(c);
        return;
    }
    if (!c->build) {           /* a build's socket is the lane's, non-blocking already */
        c->sock = c->app;
        int flags = fcntl(c->app, F_GETFL);
        if (flags < 0
            || (!(flags & O_NONBLOCK) && fcntl(c->app, F_SETFL, flags | O_NONBLOCK) < 0)) {
            finish(c, SOCKSIFY_CODE_CONNREFUSED, errno);
            return;
        }
        int lowat = 1;
        socklen_t len = sizeof lowat;
        if (getsockopt(c->app, SOL_SOCKET, SO_RCVLOWAT, &lowat, &len) == 0 && lowat != 1) {
            int one = 1;
            if (setsockopt(c->app, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof one) == 0)
                c->lowat = lowat;
        }
    }
    c->phase = P_CONNECTING;
    if (connect(c->sock, (const struct sockaddr *)c->route.hop1, c->route.hop1_len) == 0) {
        write_requests(c);
        return;
    }
    int err = errno;
    if ((err == EINPROGRESS || err == EINTR) && c->route.requests_len > 0) {
        /* It goes on by itself. Over a local link the handshake is usually over when
         * connect() returns (the peer's answer is handled before the socket is let
         * go): the requests go at once, which saves this thread a sleep and a wake-up
         * for EPOLLOUT per connect. A send before the handshake ends fails with
         * EAGAIN (then the wait), one after a refusal with the connect's own error. */
        ssize_t n = send(c->sock, c->route.requests, c->route.requests_len, MSG_NOSIGNAL);
        if (n > 0) {
            c->sent = (uint32_t)n;
            write_requests(c);
            return;
        }
        err = n < 0 ? errno : EIO;
    }
    if (err == EINPROGRESS || err == EINTR || err == EAGAIN)
        wait_for(c, EPOLLOUT);
    else
        finish(c, code_of_connect(err), err);
}

/* ---- a request --------------------------------------------------------------------- */

/* One recvmsg of a request and up to two descriptors. Returns its length, or -errno. */
static ssize_t read_request(int fd, uint8_t *buf, int fds[2], int *nfds)
{
    union {
        char buf[CMSG_SPACE(2 * sizeof(int))];
        struct cmsghdr align;
    } control;
    struct iovec iov = {.iov_base = buf, .iov_len = SOCKSIFY_REQUEST_SIZE};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1,
                         .msg_control = control.buf, .msg_controllen = sizeof control.buf};
    ssize_t n = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    *nfds = 0;
    if (n < 0)
        return -errno;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int d;
            memcpy(&d, CMSG_DATA(c) + i * sizeof(int), sizeof d);
            if (*nfds < 2)
                fds[(*nfds)++] = d;
            else
                close(d);  /* cannot happen with this buffer; never leak one anyway */
        }
    }
    return n;
}

/* A 48-byte HANDOFF header of a stream connect to an IPv4/IPv6 address, no body. */
static int is_handoff(const uint8_t *b, ssize_t n)
{
    return n == SOCKSIFY_REQUEST_SIZE
           && memcmp(b, SOCKSIFY_MAGIC, SOCKSIFY_MAGIC_SIZE) == 0
           && b[SOCKSIFY_REQ_OFF_VERSION] == SOCKSIFY_WIRE_VERSION
           && b[SOCKSIFY_REQ_OFF_OP] == SOCKSIFY_OP_HANDOFF
           && b[SOCKSIFY_REQ_OFF_SOCKTYPE] == SOCKSIFY_SOCKTYPE_STREAM
           && b[SOCKSIFY_REQ_OFF_BODY_LEN] == 0 && b[SOCKSIFY_REQ_OFF_BODY_LEN + 1] == 0
           && (b[SOCKSIFY_REQ_OFF_FAMILY] == SOCKSIFY_FAMILY_INET
               || b[SOCKSIFY_REQ_OFF_FAMILY] == SOCKSIFY_FAMILY_INET6);
}

/* The program's socket's address family if the route can use it, else 0: a stream
 * socket of hop 1's family; for a pool route, one that is not bound to an address or
 * port of its own (a tunnel's socket takes its place: as core/router.py _swappable). */
static int socket_fits(int fd, const struct lane_route *r)
{
    int type = 0, domain = 0;
    socklen_t len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM)
        return 0;
    len = sizeof domain;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0)
        return 0;
    if (!r->pool) {
        sa_family_t af;
        memcpy(&af, r->hop1, sizeof af);
        return domain == af ? domain : 0;
    }
    struct sockaddr_storage local;
    len = sizeof local;
    if (getsockname(fd, (struct sockaddr *)&local, &len) < 0)
        return 0;
    if (local.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&local;
        return in->sin_port == 0 && in->sin_addr.s_addr == htonl(INADDR_ANY) ? domain : 0;
    }
    if (local.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&local;
        return in6->sin6_port == 0 && IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr) ? domain : 0;
    }
    return 0;
}

/* The connect for this request if it is the lane's (c filled in), else 0. */
static int claim(struct conn *c, uint64_t proc, const uint8_t *b, ssize_t n, int nfds,
                 int app)
{
    if (!is_handoff(b, n) || nfds != 1)
        return 0;
    uint8_t family = b[SOCKSIFY_REQ_OFF_FAMILY];
    uint16_t port = (uint16_t)(b[SOCKSIFY_REQ_OFF_PORT] << 8 | b[SOCKSIFY_REQ_OFF_PORT + 1]);
    const uint8_t *addr = b + SOCKSIFY_REQ_OFF_ADDR;
    pthread_mutex_lock(&L.mu);
    struct route_node *node = route_find_locked(proc, family, addr, port);
    if (node)
        c->route = node->r;
    pthread_mutex_unlock(&L.mu);
    /* the session is not in the key: a request of another session (a program that
     * changed $SOCKSIFY_SESSION) is the daemon's, whose route then replaces this one */
    int af;
    if (!node || memcmp(c->route.session, b + SOCKSIFY_REQ_OFF_SESSION,
                        SOCKSIFY_SESSION_SIZE) != 0 || !(af = socket_fits(app, &c->route)))
        return 0;
    /* an empty pool, or tunnels of another family: the daemon builds it */
    if (c->route.pool && (c->tun = pool_take(c->route.pool, af, &c->urgent)) < 0)
        return 0;
    struct lane_done *d = &c->done;
    d->proc = proc;
    d->route = c->route.route;
    d->family = family;
    memcpy(d->addr, addr, sizeof d->addr);
    d->port = port;
    return 1;
}

static void on_control(int fd, uint32_t gen)
{
    pthread_mutex_lock(&L.mu);
    struct watch *w = watch_at_locked(fd);
    if (!w || w->gen != gen || w->state != W_IDLE) {
        pthread_mutex_unlock(&L.mu);
        return;
    }
    w->state = W_READING;      /* from here w stays: lane_release leaves it alone */
    pthread_mutex_unlock(&L.mu);

    uint8_t buf[LANE_MAX_REQUEST];
    int fds[2] = {-1, -1}, nfds = 0;
    ssize_t n = read_request(fd, buf, fds, &nfds);
    if (n == -EAGAIN || n == -EINTR) {
        pthread_mutex_lock(&L.mu);
        w->state = W_IDLE;
        arm_control_locked(w, EPOLL_CTL_MOD);
        pthread_mutex_unlock(&L.mu);
        return;
    }
    if (n <= 0) {
        give_back(w, NULL, 0, NULL, 0, (int)-n);
        return;
    }
    uint64_t started = now_ns();
    struct conn *c = calloc(1, sizeof *c);
    if (c)
        c->tun = -1;
    if (!c || !claim(c, w->proc, buf, n, nfds, fds[0])) {
        free(c);               /* the daemon answers it, out of memory included */
        give_back(w, buf, (uint32_t)n, fds, nfds, 0);
        return;
    }
    c->w = w;
    c->app = fds[0];
    memcpy(c->request, buf, sizeof c->request);
    c->done.fd = fd;
    c->done.started_ns = started;
    c->deadline_ns = started + (uint64_t)c->route.timeout_ms * 1000000u;
    pthread_mutex_lock(&L.mu);
    c->gen = next_gen_locked();
    w->state = W_BUSY;
    w->conn = c;
    w->last_ns = started;
    pthread_mutex_unlock(&L.mu);
    c->next = L.live;
    if (L.live)
        L.live->prev = c;
    L.live = c;
    begin(c);
}

static void on_app(int fd, uint32_t gen)
{
    pthread_mutex_lock(&L.mu);
    struct watch *w = watch_at_locked(fd);
    struct conn *c = w && w->conn && w->conn->gen == gen ? w->conn : NULL;
    pthread_mutex_unlock(&L.mu);
    if (!c)                    /* a build's: keyed by its own socket */
        for (struct conn *x = L.live; x && !c; x = x->next)
            if (x->build && x->gen == gen && x->sock == fd)
                c = x;
    if (!c)
        return;                /* finished earlier in this batch */
    switch (c->phase) {
    case P_CONNECTING: connected(c); break;
    case P_WRITING: write_requests(c); break;
    case P_READING: read_replies(c); break;
    }
}

/* ---- the thread -------------------------------------------------------------------- */

/* epoll_wait's timeout: until the nearest deadline (or the announcement of answered
 * connects), -1 without one. */
static int next_timeout(uint64_t now)
{
    if (L.refill_poke)
        return 0;
    if (!L.live && !L.done_due && !L.refill_due)
        return -1;
    uint64_t nearest = L.done_due ? L.done_due : UINT64_MAX;
    if (L.refill_due && L.refill_due < nearest)
        nearest = L.refill_due;
    for (struct conn *c = L.live; c; c = c->next)
        if (c->deadline_ns < nearest)
            nearest = c->deadline_ns;
    if (nearest <= now)
        return 0;
    uint64_t ms = (nearest - now + 999999u) / 1000000u;   /* never wake up too early */
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

static void expire(uint64_t now)
{
    struct conn *next;
    for (struct conn *c = L.live; c; c = next) {
        next = c->next;
        if (c->deadline_ns <= now)
            finish(c, SOCKSIFY_CODE_TIMEDOUT, ETIMEDOUT);
    }
}

/* Build c (lane_pool_build's or a refill's), on the lane thread. */
static void build_begin(struct conn *c)
{
    c->done.started_ns = now_ns();
    c->deadline_ns = c->done.started_ns + (uint64_t)c->route.timeout_ms * 1000000u;
    c->prev = NULL;
    c->next = L.live;
    if (L.live)
        L.live->prev = c;
    L.live = c;
    begin(c);
}

/* Start the builds lane_pool_build queued; then the refills are looked at (a kick is
 * also lane_pool_refill's). */
static void start_builds(void)
{
    uint64_t n;
    if (read(L.kick, &n, sizeof n) < 0 && errno != EAGAIN)
        return;
    L.refill_poke = 1;
    pthread_mutex_lock(&L.mu);
    struct conn *queue = L.builds;
    L.builds = NULL;
    for (struct conn *c = queue; c; c = c->next_build)
        c->gen = next_gen_locked();
    pthread_mutex_unlock(&L.mu);
    while (queue) {
        struct conn *c = queue;
        queue = c->next_build;
        build_begin(c);
    }
}

/* The lane's own refill (lane_pool_refill): every pool that keeps itself at its target
 * and lacks tunnels (ready and being built) starts the builds missing, at once if it
 * is at its low mark or below, else once no take came for its quiet time (a build
 * beside a connection slows that connection down, as chains/pool.py says). A pool
 * whose build cannot even start refills no more by itself, and the daemon is told. */
static void refills(uint64_t now)
{
    struct conn *queue = NULL, *failed = NULL;
    uint64_t due = 0;
    L.refill_poke = 0;
    pthread_mutex_lock(&L.mu);
    for (struct pool *p = L.pools; p; p = p->next) {
        if (!p->target || p->ready + p->building >= p->target)
            continue;
        uint64_t calm = p->last_take_ns + p->quiet_ns;
        if (p->ready > p->low && now < calm) {
            if (!due || calm < due)
                due = calm;
            continue;
        }
        while (p->target && p->ready + p->building < p->target) {
            int err = 0;
            struct conn *c = build_new(p->id, &p->plan, now + p->max_age_ns, p->low, &err);
            if (!c) {
                p->target = 0;
                /* the record of it (no socket): reported as a failed connect */
                if ((c = calloc(1, sizeof *c)) != NULL) {
                    c->done.route = p->plan.route;
                    c->done.fd = -1;
                    c->done.code = code_of_connect(-err);
                    c->done.err = -err;
                    c->done.failed = LANE_FAILED_CONNECT;
                    c->next_build = failed;
                    failed = c;
                }
                break;
            }
            c->refill = 1;
            c->gen = next_gen_locked();
            p->building++;
            c->next_build = queue;
            queue = c;
        }
    }
    int told = failed != NULL;
    for (struct conn *c = failed; c; c = failed) {
        failed = c->next_build;
        c->done.started_ns = c->done.answered_ns = now;
        queue_done_locked(c);
    }
    pthread_mutex_unlock(&L.mu);
    L.refill_due = due;
    if (told) {
        L.done_due = 0;
        notify();
    }
    while (queue) {
        struct conn *c = queue;
        queue = c->next_build;
        build_begin(c);
    }
}

/* At stop: the connects in flight answered, every watched connection given back,
 * the builds not started reported failed. */
static void shut_down(void)
{
    while (L.live)             /* ECANCELED: what the daemon's records tell it by */
        finish(L.live, SOCKSIFY_CODE_TIMEDOUT, ECANCELED);
    pthread_mutex_lock(&L.mu);
    while (L.builds) {
        struct conn *c = L.builds;
        L.builds = c->next_build;
        struct pool *p = pool_find_locked(c->route.pool);
        if (p && p->building)
            p->building--;
        close(c->sock);
        c->done.code = SOCKSIFY_CODE_TIMEDOUT;
        c->done.err = ECANCELED;
        c->done.failed = LANE_FAILED_CONNECT;
        queue_done_locked(c);
    }
    for (int fd = 0; fd < L.n_slots; fd++)
        if (L.watches[fd])
            give_back_locked(L.watches[fd], NULL, 0, NULL, 0, LANE_GIVEN_STOPPED);
    L.running = 0;
    pthread_mutex_unlock(&L.mu);
    notify();
}

static void *lane_main(void *arg)
{
    (void)arg;
    struct epoll_event events[EVENTS_PER_WAIT];
    int stop = 0;
    while (!stop) {
        int n = epoll_wait(L.ep, events, EVENTS_PER_WAIT, next_timeout(now_ns()));
        if (n < 0 && errno != EINTR)
            break;             /* a broken epoll set: nothing more can be served */
        for (int i = 0; i < n; i++) {
            uint64_t key = events[i].data.u64;
            int fd = (int)(key & 0x7fffffffu);
            uint32_t gen = (uint32_t)(key >> 32);
            if (key == WAKE_KEY)
                stop = 1;      /* only lane_stop writes to it */
            else if (key == KICK_KEY)
                start_builds();
            else if ((key >> 31 & 1u) == KIND_APP)
                on_app(fd, gen);
            else
                on_control(fd, gen);
        }
        uint64_t now = now_ns();
        expire(now);
        if (L.refill_poke || (L.refill_due && now >= L.refill_due))
            refills(now);
        if (L.done_due && now >= L.done_due) {
            L.done_due = 0;
            notify();
        }
    }
    L.done_due = 0;
    L.refill_poke = 0;
    L.refill_due = 0;
    L.stopping = 1;
    shut_down();
    L.stopping = 0;
    return NULL;
}

LANE_EXPORT int lane_start(void)
{
    pthread_mutex_lock(&L.life);
    int rc = 0;
    if (L.started)
        goto out;
    if (L.notify < 0) {
        L.notify = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (L.notify < 0) {
            rc = -errno;
            goto out;
        }
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    int wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    int kick = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = WAKE_KEY};
    struct epoll_event kev = {.events = EPOLLIN, .data.u64 = KICK_KEY};
    if (ep < 0 || wake < 0 || kick < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, wake, &ev) < 0
        || epoll_ctl(ep, EPOLL_CTL_ADD, kick, &kev) < 0) {
        rc = -errno;
        goto undo;
    }
    pthread_mutex_lock(&L.mu);
    L.ep = ep;
    L.kick = kick;
    L.running = 1;
    pthread_mutex_unlock(&L.mu);
    L.wake = wake;
    /* every signal blocked in the lane thread: they are the daemon's main thread's */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(&L.thread, NULL, lane_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!err)   /* named for top -H and /proc/PID/task/TID/comm (at most 15 bytes) */
        pthread_setname_np(L.thread, "socksifyd-lane");
    if (err) {
        rc = -err;
        pthread_mutex_lock(&L.mu);
        L.ep = -1;
        L.kick = -1;
        L.running = 0;
        pthread_mutex_unlock(&L.mu);
        L.wake = -1;
        goto undo;
    }
    L.started = 1;
    goto out;
undo:
    if (ep >= 0)
        close(ep);
    if (wake >= 0)
        close(wake);
    if (kick >= 0)
        close(kick);
out:
    if (rc == 0)
        rc = L.notify;
    pthread_mutex_unlock(&L.life);
    return rc;
}

LANE_EXPORT void lane_stop(void)
{
    pthread_mutex_lock(&L.life);
    if (!L.started) {
        pthread_mutex_unlock(&L.life);
        return;
    }
    uint64_t one = 1;
    while (write(L.wake, &one, sizeof one) < 0 && errno == EINTR)
        ;
    pthread_join(L.thread, NULL);
    pthread_mutex_lock(&L.mu);
    close(L.ep);
    L.ep = -1;
    close(L.kick);
    L.kick = -1;
    L.running = 0;
    routes_drop_locked(0);
    pthread_mutex_unlock(&L.mu);
    close(L.wake);
    L.wake = -1;
    L.started = 0;
    pthread_mutex_unlock(&L.life);
}

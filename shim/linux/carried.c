/* The carried-socket table (carried.h). */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "carried.h"

#define SLOTS SOCKSIFY_CARRIED_SLOTS

struct slot {
    int busy;                 /* try-lock */
    int fd;                   /* fd + 1; 0: empty */
    dev_t dev;
    ino_t ino;
    struct socksify_carried e;
};

static struct slot slots[SLOTS];

static int lock(struct slot *s)
{
    return __atomic_exchange_n(&s->busy, 1, __ATOMIC_ACQUIRE) == 0;
}

static void unlock(struct slot *s)
{
    __atomic_store_n(&s->busy, 0, __ATOMIC_RELEASE);
}

static struct slot *slot_of(int fd)
{
    return &slots[(unsigned)fd % SLOTS];
}

int socksify_carried_maybe(int fd)
{
    return fd >= 0 && __atomic_load_n(&slot_of(fd)->fd, __ATOMIC_RELAXED) == fd + 1;
}

/* The slot of fd, locked, if it holds fd's socket (same device and inode); with
 * claim, a slot holding anything else is taken over (cleared). NULL otherwise. */
static struct slot *hold(int fd, int claim)
{
    struct slot *s = slot_of(fd);
    struct stat st;

    if (fd < 0 || fstat(fd, &st) < 0 || !lock(s))
        return NULL;
    if (s->fd == fd + 1 && s->dev == st.st_dev && s->ino == st.st_ino)
        return s;
    if (!claim) {
        if (s->fd == fd + 1)
            __atomic_store_n(&s->fd, 0, __ATOMIC_RELAXED);  /* stale: the fd was reused */
        unlock(s);
        return NULL;
    }
    memset(&s->e, 0, sizeof s->e);
    s->dev = st.st_dev;
    s->ino = st.st_ino;
    __atomic_store_n(&s->fd, fd + 1, __ATOMIC_RELAXED);
    return s;
}

int socksify_carried_get(int fd, struct socksify_carried *out)
{
    struct slot *s = hold(fd, 0);

    if (s == NULL)
        return -ENOENT;
    memcpy(out, &s->e, sizeof *out);
    unlock(s);
    return 0;
}

static void note(struct socksify_carried *e, const struct socksify_reply *rep)
{
    const uint8_t *token = rep->token + 8;

    e->port4 = rep->relay_port4;
    e->port6 = rep->relay_port6;
    if (socksify_carried_has_token(e, token))
        return;
    memcpy(e->tokens[e->ntokens % SOCKSIFY_CARRIED_TOKENS], token, SOCKSIFY_CARRY_TOKEN_SIZE);
    e->ntokens++;
}

void socksify_carried_mark(int fd, const struct socksify_reply *rep)
{
    struct slot *s = hold(fd, 1);

    if (s == NULL)
        return;
    note(&s->e, rep);
    unlock(s);
}

/* Copies of one socket (dup(), carried.h) share its kernel peer: after s's connection
 * changed, every other slot holding the same socket takes s's, so that a copy never
 * puts an envelope before a datagram to a peer that is no longer the carrier or the
 * relay. s is locked by the caller; a slot busy for longer than a few tries keeps what
 * it had (its owner is mid-call on that very descriptor). */
static void share_peer(const struct slot *s)
{
    for (unsigned i = 0; i < SLOTS; i++) {
        struct slot *o = &slots[i];
        int tries = 64;

        if (o == s || __atomic_load_n(&o->fd, __ATOMIC_RELAXED) == 0)
            continue;
        while (!lock(o) && --tries > 0)
            ;
        if (tries == 0)
            continue;
        if (o->fd != 0 && o->dev == s->dev && o->ino == s->ino) {
            o->e.connected = s->e.connected;
            o->e.peer_req = s->e.peer_req;
            o->e.peer_rep = s->e.peer_rep;
            o->e.peer_wrap = s->e.peer_wrap;
            o->e.peer = s->e.peer;
            o->e.peer_len = s->e.peer_len;
        }
        unlock(o);
    }
}

void socksify_carried_connect(int fd, const struct sockaddr *peer, socklen_t len,
                              const struct socksify_connect_req *req,
                              const struct socksify_reply *rep)
{
    struct slot *s;

    if (len > sizeof s->e.peer || (s = hold(fd, 1)) == NULL)
        return;
    note(&s->e, rep);
    s->e.connected = 1;
    s->e.peer_req = *req;
    s->e.peer_rep = *rep;
    memcpy(&s->e.peer, peer, len);
    s->e.peer_len = len;
    share_peer(s);
    unlock(s);
}

static int same_dest(const struct socksify_connect_req *a, const struct socksify_connect_req *b)
{
    return a->family == b->family && a->port == b->port
           && memcmp(a->addr, b->addr, sizeof a->addr) == 0;
}

static void note_wrap(struct socksify_carried *e, const struct socksify_wrap *w)
{
    struct socksify_reply rep;

    memset(&rep, 0, sizeof rep);
    rep.relay_port4 = w->carrier_port4;
    rep.relay_port6 = w->carrier_port6;
    memcpy(rep.token, w->generation, 8);
    memcpy(rep.token + 8, w->token, SOCKSIFY_CARRY_TOKEN_SIZE);
    note(e, &rep);
}

void socksify_carried_wrap(int fd, const struct socksify_connect_req *req,
                           const struct socksify_wrap *w)
{
    struct slot *s = hold(fd, 1);
    struct socksify_wrapgrant *g = NULL;
    unsigned n;

    if (s == NULL)
        return;
    n = s->e.nwraps < SOCKSIFY_CARRIED_WRAPS ? s->e.nwraps : SOCKSIFY_CARRIED_WRAPS;
    for (unsigned i = 0; i < n; i++)
        if (same_dest(&s->e.wraps[i].req, req))
            g = &s->e.wraps[i];    /* a newer answer for the same destination */
    if (g == NULL)
        g = &s->e.wraps[s->e.nwraps++ % SOCKSIFY_CARRIED_WRAPS];
    g->req = *req;
    g->w = *w;
    s->e.wrap_pid = getpid();
    note_wrap(&s->e, w);
    unlock(s);
}

void socksify_carried_nowrap(int fd, const struct socksify_connect_req *req)
{
    struct slot *s = hold(fd, 1);

    if (s == NULL)
        return;
    if (!socksify_carried_refused_wrap(&s->e, req))
        s->e.nowrap[s->e.nnowrap++ % SOCKSIFY_CARRIED_WRAPS] = *req;
    unlock(s);
}

void socksify_carried_connect_wrap(int fd, const struct sockaddr *peer, socklen_t len,
                                   const struct socksify_wrapgrant *g)
{
    struct slot *s;

    if (len > sizeof s->e.peer || (s = hold(fd, 1)) == NULL)
        return;
    note_wrap(&s->e, &g->w);
    s->e.connected = 2;
    s->e.peer_wrap = *g;
    memcpy(&s->e.peer, peer, len);
    s->e.peer_len = len;
    share_peer(s);
    unlock(s);
}

const struct socksify_wrapgrant *socksify_carried_find_wrap(const struct socksify_carried *e,
                                                            const struct socksify_connect_req *req)
{
    unsigned n = e->nwraps < SOCKSIFY_CARRIED_WRAPS ? e->nwraps : SOCKSIFY_CARRIED_WRAPS;

    for (unsigned i = 0; i < n; i++)
        if (same_dest(&e->wraps[i].req, req))
            return &e->wraps[i];
    return NULL;
}

int socksify_carried_refused_wrap(const struct socksify_carried *e,
                                  const struct socksify_connect_req *req)
{
    unsigned n = e->nnowrap < SOCKSIFY_CARRIED_WRAPS ? e->nnowrap : SOCKSIFY_CARRIED_WRAPS;

    for (unsigned i = 0; i < n; i++)
        if (same_dest(&e->nowrap[i], req))
            return 1;
    return 0;
}

void socksify_carried_disconnect(int fd)
{
    struct slot *s;

    if (!socksify_carried_maybe(fd) || (s = hold(fd, 0)) == NULL)
        return;
    s->e.connected = 0;
    share_peer(s);
    unlock(s);
}

void socksify_carried_dup(int oldfd, int newfd)
{
    struct socksify_carried e;
    struct slot *s;

    if (oldfd == newfd || newfd < 0)
        return;
    if (socksify_carried_maybe(oldfd) && socksify_carried_get(oldfd, &e) == 0) {
        if ((s = hold(newfd, 1)) != NULL) {
            s->e = e;
            unlock(s);
        }
        return;
    }
    s = slot_of(newfd);
    if (socksify_carried_maybe(newfd) && lock(s)) {
        if (s->fd == newfd + 1)
            __atomic_store_n(&s->fd, 0, __ATOMIC_RELAXED);
        unlock(s);
    }
}

int socksify_carried_copies(int fd)
{
    struct slot *s = hold(fd, 0);
    dev_t dev;
    ino_t ino;
    int n = 0;

    if (s == NULL)
        return 0;
    dev = s->dev;
    ino = s->ino;
    unlock(s);
    for (unsigned i = 0; i < SLOTS; i++) {
        struct slot *o = &slots[i];
        int tries = 64, ofd;

        if (o == s || __atomic_load_n(&o->fd, __ATOMIC_RELAXED) == 0)
            continue;
        while (!lock(o) && --tries > 0)
            ;
        if (tries == 0) {
            n++;             /* busy: its owner is mid-call on it; count it as a copy */
            continue;
        }
        ofd = o->fd - 1;
        if (ofd >= 0 && o->dev == dev && o->ino == ino) {
            struct stat st;  /* a copy still open, not a stale entry of a closed one */

            if (fstat(ofd, &st) == 0 && st.st_dev == dev && st.st_ino == ino)
                n++;
        }
        unlock(o);
    }
    return n;
}

void socksify_carried_forget(int fd)
{
    struct slot *s = slot_of(fd);

    if (fd >= 0 && lock(s)) {
        if (s->fd == fd + 1)
            __atomic_store_n(&s->fd, 0, __ATOMIC_RELAXED);
        unlock(s);
    }
}

int socksify_carried_in_range(unsigned lo, unsigned hi, int *out, int max)
{
    int n = 0;

    for (unsigned i = 0; i < SLOTS && n < max; i++) {
        int fd = __atomic_load_n(&slots[i].fd, __ATOMIC_RELAXED) - 1;

        if (fd >= 0 && (unsigned)fd >= lo && (unsigned)fd <= hi)
            out[n++] = fd;
    }
    return n;
}

int socksify_carried_has_token(const struct socksify_carried *e, const uint8_t *token)
{
    unsigned n = e->ntokens < SOCKSIFY_CARRIED_TOKENS ? e->ntokens : SOCKSIFY_CARRIED_TOKENS;

    for (unsigned i = 0; i < n; i++)
        if (memcmp(e->tokens[i], token, SOCKSIFY_CARRY_TOKEN_SIZE) == 0)
            return 1;
    return 0;
}

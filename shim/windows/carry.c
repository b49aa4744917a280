/* Carried datagrams (docs/wire.md "Carried datagrams"): a datagram socket whose
 * destination the daemon answered CARRY sends its datagrams to the daemon's carrier on
 * loopback, each with a 36-byte envelope (the destination and the grant's token) before
 * the payload, and its receive calls strip the envelope of what the carrier sends back
 * and report the remote as the source. The shim knows no SOCKS: the daemon carries
 * them through the chain.
 *
 * This file keeps the table of carried sockets (their grants, the carried peer of a
 * connected one) and a process-wide table of grants held while the policy generation
 * holds; it sends and receives for the hook files (sendto.c ... wsarecvmsg.c,
 * wsarecvex.c, readfile.c, writefile.c); every receive hook is socksify_carry_receive
 * given its real call.
 *
 * Not carried (refused with WSAEOPNOTSUPP, never sent around the daemon): overlapped
 * sends to a carried destination, overlapped receives on a carried socket, and carrying
 * for a socket that had an overlapped receive posted (its pending receive would get an
 * envelope as data); docs/windows.md says why overlapped sends stay refused. */
#include <string.h>

#include "addr.h"
#include "shim.h"

#define SOCKET_SLOTS 256
#define GRANTS_PER_SOCKET 8
#define PROCESS_GRANTS 64
#define MAX_BUFS 64

struct carried {
    SOCKET s;                /* 0: free (INVALID_SOCKET is never put here) */
    int overlapped_recv;     /* an overlapped receive was posted: never carried */
    int connected;           /* connected to the carrier for peer */
    int domain;              /* AF_INET or AF_INET6 (0 until the first grant) */
    struct socksify_grant peer;
    struct socksify_grant grants[GRANTS_PER_SOCKET];
    unsigned ngrants, next;  /* grants in use; the next one to replace */
};

static struct carried table[SOCKET_SLOTS];
static struct socksify_grant process_grants[PROCESS_GRANTS];
static unsigned process_next;
static SRWLOCK lock = SRWLOCK_INIT;
static volatile LONG any_carried;  /* 1 once a socket was carried: receives look */

static int same_dest(const struct socksify_connect_req *a,
                     const struct socksify_connect_req *b)
{
    return a->family == b->family && a->port == b->port
           && memcmp(a->addr, b->addr, a->family == SOCKSIFY_FAMILY_INET ? 4 : 16) == 0;
}

/* The slot of s, or NULL (lock held). */
static struct carried *find(SOCKET s)
{
    for (size_t i = 0; i < SOCKET_SLOTS; i++)
        if (table[i].s == s)
            return &table[i];
    return NULL;
}

/* The slot of s, made if it has none; NULL if the table is full (lock held
 * exclusively). */
static struct carried *find_or_add(SOCKET s)
{
    struct carried *c = find(s);

    if (c != NULL)
        return c;
    for (size_t i = 0; i < SOCKET_SLOTS; i++)
        if (table[i].s == 0) {
            memset(&table[i], 0, sizeof table[i]);
            table[i].s = s;
            return &table[i];
        }
    return NULL;
}

static int is_carried(const struct carried *c)
{
    return c != NULL && (c->connected || c->ngrants > 0);
}

static int socket_domain_asked(SOCKET s)
{
    WSAPROTOCOL_INFOW info;
    int len = sizeof info;

    if (getsockopt(s, SOL_SOCKET, SO_PROTOCOL_INFOW, (char *)&info, &len) != 0)
        return AF_INET;
    return info.iAddressFamily;
}

/* The socket's address family: from its slot once it has one (no call into Winsock:
 * under Wine each getsockopt is a round trip to wineserver). */
static int socket_domain(SOCKET s)
{
    struct carried *c;
    int domain = 0;

    AcquireSRWLockShared(&lock);
    if ((c = find(s)) != NULL)
        domain = c->domain;
    ReleaseSRWLockShared(&lock);
    return domain != 0 ? domain : socket_domain_asked(s);
}

static uint64_t be64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

int socksify_carry_cached(SOCKET s, const struct socksify_connect_req *req,
                          struct socksify_grant *g, int socket_only)
{
    uint64_t gen = socksify_cache_generation();
    struct carried *c;
    int hit = 0;

    AcquireSRWLockShared(&lock);
    c = find(s);
    for (unsigned i = 0; c != NULL && i < c->ngrants && !hit; i++)
        if (same_dest(&c->grants[i].dest, req)
            && (c->grants[i].generation == 0 || c->grants[i].generation == gen)) {
            *g = c->grants[i];
            hit = 1;
        }
    for (size_t i = 0; gen != 0 && !socket_only && i < PROCESS_GRANTS && !hit; i++)
        if (process_grants[i].generation == gen && same_dest(&process_grants[i].dest, req)) {
            *g = process_grants[i];
            hit = 2;
        }
    ReleaseSRWLockShared(&lock);
    if (hit == 2)  /* the socket's own from now on (its receives know the token) */
        return socksify_carry_grant(s, req, NULL, g) == 0;
    return hit;
}

int socksify_carry_grant(SOCKET s, const struct socksify_connect_req *req,
                         const struct socksify_reply *rep, struct socksify_grant *g)
{
    struct carried *c;
    int r = 0, domain = socket_domain(s);

    if (rep != NULL) {
        memset(g, 0, sizeof *g);
        g->dest = *req;
        g->generation = be64(rep->token);
        memcpy(g->token, rep->token + 8, sizeof g->token);
        g->port4 = rep->relay_port4;
        g->port6 = rep->relay_port6;
        socksify_cache_carry_note(g->generation);
    }
    AcquireSRWLockExclusive(&lock);
    c = find_or_add(s);
    if (c == NULL) {
        r = -WSAENOBUFS;
    } else if (c->overlapped_recv) {
        r = -WSAEOPNOTSUPP;
    } else {
        unsigned i;
        c->domain = domain;
        for (i = 0; i < c->ngrants; i++)
            if (same_dest(&c->grants[i].dest, req))
                break;
        if (i == c->ngrants) {
            if (c->ngrants < GRANTS_PER_SOCKET)
                i = c->ngrants++;
            else
                i = c->next++ % GRANTS_PER_SOCKET;
        }
        c->grants[i] = *g;
        InterlockedExchange(&any_carried, 1);
    }
    if (r == 0 && rep != NULL && g->generation != 0) {
        size_t i;
        for (i = 0; i < PROCESS_GRANTS; i++)
            if (same_dest(&process_grants[i].dest, req))
                break;
        if (i == PROCESS_GRANTS)
            i = process_next++ % PROCESS_GRANTS;
        process_grants[i] = *g;
    }
    ReleaseSRWLockExclusive(&lock);
    if (r == -WSAEOPNOTSUPP)
        LOG_INFO("socket %llu: an overlapped receive was posted on it; its datagrams "
                 "cannot be carried", (unsigned long long)s);
    else if (r == -WSAENOBUFS)
        LOG_WARN("socket %llu: too many carried sockets; refused",
                 (unsigned long long)s);
    return r;
}

int socksify_carry_connect(SOCKET s, const struct socksify_grant *g)
{
    struct sockaddr_storage carrier;
    struct socksify_reply ports;
    struct carried *c;
    socklen_t len;
    int r;

    if ((r = socksify_carry_grant(s, &g->dest, NULL, (struct socksify_grant *)g)) < 0)
        return -r;
    memset(&ports, 0, sizeof ports);
    ports.relay_port4 = g->port4;
    ports.relay_port6 = g->port6;
    if (socksify_addr_relay(socket_domain(s), &ports, &carrier, &len) < 0)
        return WSAECONNREFUSED;
    if (real_connect(s, (const struct sockaddr *)&carrier, len) == SOCKET_ERROR)
        return WSAGetLastError();
    AcquireSRWLockExclusive(&lock);
    c = find(s);
    if (c != NULL) {
        c->connected = 1;
        c->peer = *g;
    }
    ReleaseSRWLockExclusive(&lock);
    return c != NULL ? 0 : WSAENOBUFS;
}

void socksify_carry_unconnect(SOCKET s)
{
    struct carried *c;

    if (!any_carried)
        return;
    AcquireSRWLockExclusive(&lock);
    if ((c = find(s)) != NULL)
        c->connected = 0;
    ReleaseSRWLockExclusive(&lock);
}

int socksify_carry_peer(SOCKET s, struct socksify_grant *g)
{
    struct carried *c;
    int r = 0;

    if (!any_carried)
        return 0;
    AcquireSRWLockShared(&lock);
    if ((c = find(s)) != NULL && c->connected) {
        *g = c->peer;
        r = 1;
    }
    ReleaseSRWLockShared(&lock);
    return r;
}

int socksify_carry_peer_fresh(SOCKET s, struct socksify_grant *g)
{
    struct sockaddr_storage dest;
    struct socksify_connect_req req;
    struct socksify_reply rep;
    struct socksify_peer peer;
    struct socksify_grant fresh;
    struct carried *c;
    socklen_t len;
    uint64_t gen;
    int err = 0, r;

    if (!socksify_carry_peer(s, g))
        return 0;
    if (g->generation == 0 || (gen = socksify_cache_generation()) == g->generation)
        return 1;  /* the grant holds (or the daemon keeps no generation) */
    /* a reload or a restart voided the grant: ask again for the same peer */
    memset(&peer, 0, sizeof peer);
    peer.family = g->dest.family;
    peer.port = g->dest.port;
    memcpy(peer.addr, g->dest.addr, sizeof peer.addr);
    if (socksify_addr_of_peer(socket_domain(s), &peer, &dest, &len) < 0)
        return -WSAEAFNOSUPPORT;
    switch (socksify_connect_ask_req(s, (const struct sockaddr *)&dest, (int)len, &rep,
                                     &err, &req)) {
    case SOCKSIFY_GO_CARRY:
        if ((r = socksify_carry_grant(s, &req, &rep, &fresh)) < 0)
            return r;
        if ((fresh.port4 != g->port4 || fresh.port6 != g->port6)
            && (r = socksify_carry_connect(s, &fresh)) != 0)
            return -r;  /* another carrier: a restarted daemon */
        AcquireSRWLockExclusive(&lock);
        if ((c = find(s)) != NULL && c->connected)
            c->peer = fresh;
        ReleaseSRWLockExclusive(&lock);
        *g = fresh;
        return 1;
    case SOCKSIFY_GO_DIRECT:  /* the policy now lets it go direct: connect to it */
        socksify_carry_unconnect(s);
        if (real_connect(s, (const struct sockaddr *)&dest, (int)len) == SOCKET_ERROR)
            return -WSAGetLastError();
        return 0;
    case SOCKSIFY_GO_RELAY:
    case SOCKSIFY_GO_FAIL:
        break;
    }
    return -(err != 0 ? err : WSAECONNREFUSED);
}

void socksify_carry_forget(SOCKET s)
{
    struct carried *c;

    if (s == INVALID_SOCKET || s == 0)
        return;
    AcquireSRWLockExclusive(&lock);
    if ((c = find(s)) != NULL)
        memset(c, 0, sizeof *c);
    ReleaseSRWLockExclusive(&lock);
}

int socksify_carry_send(SOCKET s, const struct socksify_grant *g, const WSABUF *bufs,
                        DWORD nbufs, DWORD flags, DWORD *sent)
{
    uint8_t env[SOCKSIFY_DGRAM_SIZE];
    WSABUF local[MAX_BUFS + 1], *all = local;
    struct socksify_dgram d;
    struct sockaddr_storage carrier;
    struct socksify_reply ports;
    socklen_t len = 0;
    DWORD got = 0;
    int r, connected;
    struct socksify_grant peer;

    memset(&d, 0, sizeof d);
    d.kind = SOCKSIFY_DGRAM_KIND_DATA;
    d.family = g->dest.family;
    d.port = g->dest.port;
    memcpy(d.addr, g->dest.addr, sizeof d.addr);
    memcpy(d.token, g->token, sizeof d.token);
    if (socksify_wire_encode_dgram(&d, env, sizeof env) < 0)
        return -WSAEINVAL;
    connected = socksify_carry_peer(s, &peer);
    if (!connected) {
        memset(&ports, 0, sizeof ports);
        ports.relay_port4 = g->port4;
        ports.relay_port6 = g->port6;
        if (socksify_addr_relay(socket_domain(s), &ports, &carrier, &len) < 0)
            return -WSAECONNREFUSED;
    }
    if (nbufs > MAX_BUFS) {
        all = HeapAlloc(GetProcessHeap(), 0, (nbufs + 1) * sizeof *all);
        if (all == NULL)
            return -WSAENOBUFS;
    }
    all[0].buf = (char *)env;
    all[0].len = sizeof env;
    if (nbufs > 0)
        memcpy(all + 1, bufs, nbufs * sizeof *bufs);
    r = real_WSASendTo(s, all, nbufs + 1, &got, flags,
                       connected ? NULL : (const struct sockaddr *)&carrier,
                       connected ? 0 : (int)len, NULL, NULL);
    r = r == 0 ? 0 : -WSAGetLastError();
    if (all != local)
        HeapFree(GetProcessHeap(), 0, all);
    if (r == 0 && sent != NULL)
        *sent = got >= sizeof env ? got - (DWORD)sizeof env : 0;
    return r;
}

int socksify_carry_active(void)
{
    return any_carried != 0;
}

DWORD socksify_wsa_to_win32(int err)
{
    switch (err) {
    case WSAEMSGSIZE:     return ERROR_MORE_DATA;           /* STATUS_BUFFER_OVERFLOW */
    case WSAEOPNOTSUPP:   return ERROR_NOT_SUPPORTED;       /* STATUS_NOT_SUPPORTED */
    case WSAECONNRESET:   return ERROR_NETNAME_DELETED;     /* STATUS_CONNECTION_RESET */
    case WSAECONNREFUSED: return ERROR_CONNECTION_REFUSED;  /* STATUS_CONNECTION_REFUSED */
    case WSAETIMEDOUT:    return ERROR_SEM_TIMEOUT;         /* STATUS_IO_TIMEOUT */
    case WSAEACCES:       return ERROR_ACCESS_DENIED;       /* STATUS_ACCESS_DENIED */
    case WSAENOBUFS:      return ERROR_NOT_ENOUGH_MEMORY;
    default:              return (DWORD)err;  /* already a Win32 error (or as good) */
    }
}

/* ---- receiving ------------------------------------------------------------------ */

static size_t flat_len(const WSABUF *b, DWORD n)
{
    size_t total = 0;

    for (DWORD i = 0; i < n; i++)
        total += b[i].len;
    return total;
}

/* The byte at flat offset off of the buffers (off < flat_len). */
static char *flat_at(WSABUF *b, DWORD n, size_t off)
{
    for (DWORD i = 0; i < n; i++) {
        if (off < b[i].len)
            return b[i].buf + off;
        off -= b[i].len;
    }
    return NULL;
}

/* The datagram was read into [head (36 bytes), the program's buffers] but is not an
 * envelope: put its first bytes (in head) back in front of the rest, in the program's
 * buffers. got is what was read in all; returns the datagram's bytes that fit. */
static size_t unshift(const uint8_t *head, WSABUF *b, DWORD n, size_t got)
{
    size_t total = flat_len(b, n), e = got < SOCKSIFY_DGRAM_SIZE ? got
                                                                 : SOCKSIFY_DGRAM_SIZE;
    size_t rest = got - e, keep;

    if (e >= total) {
        keep = 0;
    } else {
        keep = rest < total - e ? rest : total - e;
    }
    if (n == 1) {
        memmove(b[0].buf + e, b[0].buf, keep);
    } else {
        for (size_t i = keep; i > 0; i--)
            *flat_at(b, n, e + i - 1) = *flat_at(b, n, i - 1);
    }
    for (size_t i = 0; i < e && i < total; i++)
        *flat_at(b, n, i) = (char)head[i];
    return e + keep < total ? e + keep : total;
}

/* Is the address the carrier of one of c's grants? (lock held) */
static int from_carrier(const struct carried *c, const struct sockaddr_storage *src,
                        int srclen)
{
    uint16_t port;

    if (srclen <= 0 || !socksify_addr_is_loopback((const struct sockaddr *)src,
                                                  (unsigned)srclen))
        return 0;
    port = ntohs(src->ss_family == AF_INET ? ((const struct sockaddr_in *)src)->sin_port
                                           : ((const struct sockaddr_in6 *)src)->sin6_port);
    if (c->connected && (port == c->peer.port4 || port == c->peer.port6))
        return 1;
    for (unsigned i = 0; i < c->ngrants; i++)
        if (port == c->grants[i].port4 || port == c->grants[i].port6)
            return 1;
    return 0;
}

/* Does c hold a grant with this token? (lock held) */
static int known_token(const struct carried *c, const uint8_t *token)
{
    if (c->connected && memcmp(c->peer.token, token, SOCKSIFY_CARRY_TOKEN_SIZE) == 0)
        return 1;
    for (unsigned i = 0; i < c->ngrants; i++)
        if (memcmp(c->grants[i].token, token, SOCKSIFY_CARRY_TOKEN_SIZE) == 0)
            return 1;
    return 0;
}

enum { NOT_OURS, ENVELOPE, FROM_CARRIER };

static int classify(SOCKET s, const struct sockaddr_storage *src, int srclen,
                    const uint8_t *head, size_t got, struct socksify_dgram *d,
                    int *connected)
{
    struct carried *c;
    int r = NOT_OURS;

    AcquireSRWLockShared(&lock);
    c = find(s);
    if (c != NULL) {
        *connected = c->connected;
        if (c->connected || from_carrier(c, src, srclen)) {
            r = FROM_CARRIER;
            if (socksify_wire_decode_dgram(head, got, d) == 0 && known_token(c, d->token))
                r = ENVELOPE;
        }
    }
    ReleaseSRWLockShared(&lock);
    return r;
}

/* Consume the datagram a MSG_PEEK looked at (it is dropped). */
static void consume(socksify_recv_fn real, void *ctx, DWORD flags)
{
    char scrap[SOCKSIFY_DGRAM_SIZE];
    WSABUF b = {sizeof scrap, scrap};
    DWORD got = 0, fl = flags & ~(DWORD)MSG_PEEK;
    struct sockaddr_storage src;
    int srclen = sizeof src;

    real(ctx, &b, 1, &got, &fl, (struct sockaddr *)&src, &srclen);
}

static int set_from(int domain, const struct socksify_dgram *d, struct sockaddr *from,
                    int *fromlen)
{
    struct socksify_peer peer;
    struct sockaddr_storage ss;
    socklen_t len;

    if (from == NULL || fromlen == NULL)
        return 0;
    memset(&peer, 0, sizeof peer);
    peer.family = d->family;
    peer.port = d->port;
    memcpy(peer.addr, d->addr, sizeof peer.addr);
    if (socksify_addr_of_peer(domain, &peer, &ss, &len) < 0)
        return WSAEAFNOSUPPORT;
    if (*fromlen < (int)len)
        return WSAEFAULT;
    memcpy(from, &ss, (size_t)len);
    *fromlen = (int)len;
    return 0;
}

/* A receive on s: RECV_REAL if s is not carried (the hook's own call is made, then
 * after_real), else 0 or SOCKET_ERROR (WSA error set) with *got, *flags and from/fromlen
 * (may be NULL) as the real call gives them, the envelope stripped and the remote as
 * the source. An overlapped receive (ov) on a carried socket is refused (WSAEOPNOTSUPP);
 * one on another datagram socket marks it as never to be carried. */
#define RECV_REAL 1  /* not SOCKET_ERROR (-1) */
static int carried_recv(SOCKET s, WSABUF *bufs, DWORD nbufs, DWORD *got, DWORD *flags,
                        struct sockaddr *from, int *fromlen, const void *ov,
                        socksify_recv_fn real, void *ctx)
{
    uint8_t head[SOCKSIFY_DGRAM_SIZE];
    WSABUF local[MAX_BUFS + 1];
    struct carried *c;
    int carried, type = 0, optlen = sizeof type, saved = WSAGetLastError();
    int domain;

    if (!any_carried && ov == NULL)
        return RECV_REAL;
    AcquireSRWLockShared(&lock);
    carried = is_carried(c = find(s));
    ReleaseSRWLockShared(&lock);
    if (ov != NULL) {
        if (carried) {
            LOG_INFO("socket %llu: overlapped receives on a carried socket are not "
                     "supported", (unsigned long long)s);
            WSASetLastError(WSAEOPNOTSUPP);
            return SOCKET_ERROR;
        }
        if (c == NULL && getsockopt(s, SOL_SOCKET, SO_TYPE, (char *)&type, &optlen) == 0
            && type == SOCK_DGRAM) {
            AcquireSRWLockExclusive(&lock);
            if ((c = find_or_add(s)) != NULL)
                c->overlapped_recv = 1;
            ReleaseSRWLockExclusive(&lock);
        }
        WSASetLastError(saved);
        return RECV_REAL;
    }
    if (!carried)
        return RECV_REAL;
    if (nbufs > MAX_BUFS) {
        WSASetLastError(WSAENOBUFS);
        return SOCKET_ERROR;
    }
    domain = socket_domain(s);
    local[0].buf = (char *)head;
    local[0].len = sizeof head;
    memcpy(local + 1, bufs, nbufs * sizeof *bufs);
    for (;;) {
        struct sockaddr_storage src;
        struct socksify_dgram d;
        int srclen = sizeof src, err = 0, connected = 0, kind;
        DWORD n = 0, fl = flags != NULL ? *flags : 0;

        if (real(ctx, local, nbufs + 1, &n, &fl, (struct sockaddr *)&src, &srclen) != 0) {
            err = WSAGetLastError();
            if (err != WSAEMSGSIZE)
                return WSASetLastError(err), SOCKET_ERROR;
            /* cut to the buffers, which it filled (Wine leaves the count at 0) */
            n = (DWORD)(SOCKSIFY_DGRAM_SIZE + flat_len(bufs, nbufs));
        }
        kind = classify(s, &src, srclen, head, n, &d, &connected);
        if (kind == ENVELOPE && d.kind == SOCKSIFY_DGRAM_KIND_ERROR) {
            if (flags != NULL && *flags & MSG_PEEK)
                consume(real, ctx, *flags);
            if (connected) {
                err = socksify_code_to_wsa(d.code);
                LOG_INFO("socket %llu: the carried flow failed (error %d)",
                         (unsigned long long)s, err);
                WSASetLastError(err);
                return SOCKET_ERROR;
            }
            continue;  /* unconnected: as an ICMP error, not reported */
        }
        if (kind == FROM_CARRIER) {  /* never the program's: dropped */
            LOG_DEBUG("socket %llu: dropped a datagram from the carrier without a "
                      "valid envelope", (unsigned long long)s);
            if (flags != NULL && *flags & MSG_PEEK)
                consume(real, ctx, *flags);
            continue;
        }
        if (kind == ENVELOPE) {
            int e = set_from(domain, &d, from, fromlen);
            if (e != 0) {
                WSASetLastError(e);
                return SOCKET_ERROR;
            }
            *got = n - SOCKSIFY_DGRAM_SIZE;
        } else {  /* another sender's datagram, delivered as it came */
            size_t total = flat_len(bufs, nbufs), kept = unshift(head, bufs, nbufs, n);
            if (n > total)
                err = WSAEMSGSIZE;
            *got = (DWORD)kept;
            if (from != NULL && fromlen != NULL) {
                if (*fromlen < srclen) {
                    WSASetLastError(WSAEFAULT);
                    return SOCKET_ERROR;
                }
                memcpy(from, &src, (size_t)srclen);
                *fromlen = srclen;
            }
        }
        if (flags != NULL)
            *flags = fl;
        if (err != 0) {
            WSASetLastError(err);
            return SOCKET_ERROR;
        }
        WSASetLastError(saved);
        return 0;
    }
}

/* After a real receive on a socket that was not carried when it began (a receive
 * waiting while another thread sent the first carried datagram): buf holds the
 * datagram's first *got bytes (all of it if contiguous). AFTER_KEEP: not an envelope
 * for s, the program's as it came; AFTER_STRIPPED: a DATA envelope, stripped in place
 * (*got the payload's length, from/fromlen, if not NULL, the remote); AFTER_DROP: an
 * envelope that cannot be stripped here (ERROR, not contiguous): dropped, and the
 * caller reads again. Never hands an envelope over. */
enum { AFTER_KEEP, AFTER_STRIPPED, AFTER_DROP };
static int after_real(SOCKET s, char *buf, DWORD *got, int contiguous,
                      struct sockaddr *from, int *fromlen)
{
    struct socksify_dgram d;
    struct carried *c;
    int ours, saved = WSAGetLastError();

    if (!any_carried || buf == NULL || *got < SOCKSIFY_DGRAM_SIZE
        || socksify_wire_decode_dgram((const uint8_t *)buf, *got, &d) != 0)
        return AFTER_KEEP;
    AcquireSRWLockShared(&lock);
    c = find(s);
    ours = is_carried(c) && known_token(c, d.token);
    ReleaseSRWLockShared(&lock);
    if (!ours)
        return AFTER_KEEP;
    if (d.kind != SOCKSIFY_DGRAM_KIND_DATA || !contiguous
        || set_from(socket_domain(s), &d, from, fromlen) != 0) {
        LOG_DEBUG("socket %llu: a receive begun before the socket was carried got an "
                  "envelope it cannot strip: dropped", (unsigned long long)s);
        WSASetLastError(saved);
        return AFTER_DROP;
    }
    memmove(buf, buf + SOCKSIFY_DGRAM_SIZE, *got - SOCKSIFY_DGRAM_SIZE);
    *got -= SOCKSIFY_DGRAM_SIZE;
    LOG_DEBUG("socket %llu: a receive begun before the socket was carried got an "
              "envelope: stripped", (unsigned long long)s);
    WSASetLastError(saved);
    return AFTER_STRIPPED;
}

/* Read and drop the next datagram on s (after a MSG_PEEK saw one to drop). */
static void consume_next(SOCKET s)
{
    char scrap[SOCKSIFY_DGRAM_SIZE];
    WSABUF b = {sizeof scrap, scrap};
    DWORD got = 0, fl = 0;
    int saved = WSAGetLastError();

    real_WSARecvFrom(s, &b, 1, &got, &fl, NULL, NULL, NULL, NULL);
    WSASetLastError(saved);
}

/* The carried path's reader when the hook gives none: WSARecvFrom, not overlapped. */
static int recv_plain(void *ctx, WSABUF *bufs, DWORD nbufs, DWORD *got, DWORD *flags,
                      struct sockaddr *from, int *fromlen)
{
    return real_WSARecvFrom(*(const SOCKET *)ctx, bufs, nbufs, got, flags, from, fromlen,
                            NULL, NULL);
}

int socksify_carry_receive(struct socksify_recv_call *c, DWORD *got)
{
    socksify_recv_fn read = c->read != NULL ? c->read : recv_plain;
    void *ctx = c->read != NULL ? c->arg : (void *)&c->s;

    for (;;) {
        DWORD n = 0;
        int r = carried_recv(c->s, c->bufs, c->nbufs, &n, c->flags, c->from, c->fromlen,
                             c->ov, read, ctx), err;

        if (r == 0 || (r == SOCKET_ERROR && WSAGetLastError() == WSAEMSGSIZE)) {
            if (got != NULL)
                *got = n;
            return r;
        }
        if (r == SOCKET_ERROR)
            return r;
        /* not carried: the program's own call; then a datagram a receive begun before
         * the socket was carried got is looked at (only where it can be: not
         * overlapped, its length known, its head in the first buffer) */
        r = c->real(c, got);
        if (c->ov != NULL || got == NULL || c->nbufs == 0
            || (r != 0 && (c->nbufs != 1 || WSAGetLastError() != WSAEMSGSIZE)))
            return r;
        err = r == 0 ? 0 : WSAEMSGSIZE;
        n = r == 0 ? *got : c->bufs[0].len;
        switch (after_real(c->s, c->bufs[0].buf, &n, c->nbufs == 1 || n <= c->bufs[0].len,
                           c->from, c->fromlen)) {
        case AFTER_DROP:
            if (c->flags != NULL && *c->flags & MSG_PEEK)
                consume_next(c->s);
            continue;
        case AFTER_STRIPPED:
            *got = n;
            if (err != 0) {
                WSASetLastError(err);
                return SOCKET_ERROR;
            }
            return 0;
        }
        return r;
    }
}

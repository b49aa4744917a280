/* The receive side of carried datagrams (carry.h), and of handed-off ones (docs/wire.md,
 * "Datagram handoff: WRAP"): replies from hop 1's relay with a grant's reply prefix. */
#include <errno.h>
#include <string.h>
#include <sys/uio.h>

#include "addr.h"
#include "cache.h"
#include "carried.h"
#include "carry.h"
#include "log.h"
#include "real.h"
#include "socksify_wire.h"
#include "wrapshift.h"

#ifndef UIO_MAXIOV
#define UIO_MAXIOV 1024
#endif

/* The port of an AF_INET/AF_INET6 address (host order). */
static uint16_t port_of(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)ss)->sin_port);
    return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
}

/* 1 if the kernel's source `from` is the carrier of entry e. */
static int from_carrier(const struct sockaddr_storage *from, socklen_t len,
                        const struct socksify_carried *e)
{
    uint16_t port;

    if (socksify_addr_family((const struct sockaddr *)from, len) == 0
        || !socksify_addr_is_loopback((const struct sockaddr *)from, len))
        return 0;
    port = port_of(from);
    return port != 0 && (port == e->port4 || port == e->port6);
}

/* 1 if the kernel's source `from` is g's relay (hop 1's), as a socket of domain sees it. */
static int from_relay(const struct sockaddr_storage *from, socklen_t len, int domain,
                      const struct socksify_wrapgrant *g)
{
    struct sockaddr_storage relay;
    socklen_t rlen;

    if (socksify_wrap_relay(domain, &g->w, &relay, &rlen) < 0 || len < rlen
        || from->ss_family != relay.ss_family)
        return 0;
    if (relay.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)from, *b = (const void *)&relay;
        return a->sin_port == b->sin_port && a->sin_addr.s_addr == b->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *a = (const void *)from, *b = (const void *)&relay;
    return a->sin6_port == b->sin6_port
           && memcmp(&a->sin6_addr, &b->sin6_addr, sizeof a->sin6_addr) == 0;
}

/* The i-th WRAP grant of e to judge a datagram against (its ring, then its connected
 * peer's), or NULL past the last. */
static const struct socksify_wrapgrant *grant_at(const struct socksify_carried *e,
                                                 unsigned i)
{
    unsigned n = e->nwraps < SOCKSIFY_CARRIED_WRAPS ? e->nwraps : SOCKSIFY_CARRIED_WRAPS;

    if (i < n)
        return &e->wraps[i];
    if (i == n && e->connected == 2)
        return &e->peer_wrap;
    return NULL;
}

/* Write the source into the program's msg_name (truncated as the kernel does). */
static void give_name(struct msghdr *msg, const struct sockaddr_storage *ss,
                      socklen_t len)
{
    if (msg->msg_name == NULL)
        return;  /* the kernel leaves msg_namelen alone then */
    memcpy(msg->msg_name, ss, msg->msg_namelen < len ? msg->msg_namelen : len);
    msg->msg_namelen = len;
}

/* Consume the datagram at the head of the queue (one peeked at). */
static void consume(int fd, int flags)
{
    uint8_t none;

    socksify_real.recvfrom(fd, &none, 0, (flags & ~MSG_PEEK) | MSG_DONTWAIT, NULL, NULL);
}

ssize_t socksify_carry_recvmsg(int fd, struct msghdr *msg, int flags, int *handled)
{
    struct socksify_carried e;
    const struct socksify_wrapgrant *g;
    size_t n = msg->msg_iovlen, cap = 0, scratch_len = SOCKSIFY_DGRAM_SIZE;
    int domain, wrapped;
    socklen_t optlen = sizeof domain;

    *handled = 0;
    if (!socksify_carried_maybe(fd) || socksify_carried_get(fd, &e) < 0)
        return 0;
    *handled = 1;
    if (n >= UIO_MAXIOV)
        return -EMSGSIZE;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &optlen) < 0)
        return -errno;
    for (size_t k = 0; k < n; k++)
        cap += msg->msg_iov[k].iov_len;
    /* the scratch before the program's buffers holds the longest prefix a datagram
     * may start with: the envelope, or a WRAP grant's reply prefix */
    for (unsigned i = 0; (g = grant_at(&e, i)) != NULL; i++)
        if (g->w.reply_len > scratch_len)
            scratch_len = g->w.reply_len;
    wrapped = grant_at(&e, 0) != NULL;
    for (;;) {
        struct iovec iov[n + 1];
        uint8_t scratch[SOCKSIFY_WRAP_MAX_PREFIX];
        struct sockaddr_storage from, src;
        struct socksify_dgram d;
        struct socksify_peer peer;
        socklen_t srclen;
        struct msghdr m = *msg;
        ssize_t total;
        size_t received, prefix, payload;
        const struct socksify_wrapgrant *matched = NULL;
        int relay = 0;

        iov[0].iov_base = scratch;
        iov[0].iov_len = scratch_len;
        if (n > 0)
            memcpy(iov + 1, msg->msg_iov, n * sizeof *iov);
        m.msg_iov = iov;
        m.msg_iovlen = n + 1;
        m.msg_name = &from;
        m.msg_namelen = sizeof from;
        total = socksify_real.recvmsg(fd, &m, flags | MSG_TRUNC);
        if (total < 0)
            return -errno;
        msg->msg_controllen = m.msg_controllen;
        received = (size_t)total < scratch_len + cap ? (size_t)total : scratch_len + cap;
        for (unsigned i = 0; wrapped && (g = grant_at(&e, i)) != NULL; i++) {
            if (!from_relay(&from, m.msg_namelen, domain, g))
                continue;
            relay = 1;
            if (socksify_wire_wrap_match(&g->w, scratch,
                                         received < scratch_len ? received : scratch_len)) {
                matched = g;
                break;
            }
        }
        if (matched != NULL) {
            /* a reply from a wrapped destination: strip the prefix, report it */
            prefix = matched->w.reply_len;
            memset(&peer, 0, sizeof peer);
            peer.family = matched->req.family;
            peer.port = matched->req.port;
            memcpy(peer.addr, matched->req.addr, sizeof peer.addr);
        } else if (relay) {
            /* from hop 1's relay but not a reply we know: never delivered with the
             * headers in it */
            if (flags & MSG_PEEK)
                consume(fd, flags);
            LOG_DEBUG("fd %d: a datagram from hop 1's relay without a known prefix: "
                      "dropped", fd);
            continue;
        } else if (!from_carrier(&from, m.msg_namelen, &e) || total < SOCKSIFY_DGRAM_SIZE
                   || socksify_wire_decode_dgram(scratch, (size_t)total, &d) < 0
                   || !(socksify_carried_has_token(&e, d.token)
                        || socksify_cache_has_token(d.token))) {
            /* not ours: delivered untouched */
            payload = (size_t)total;
            received = socksify_wrap_unshift(msg->msg_iov, n, scratch, scratch_len, 0,
                                             received);
            give_name(msg, &from, m.msg_namelen);
            msg->msg_flags = (m.msg_flags & ~MSG_TRUNC) | (payload > cap ? MSG_TRUNC : 0);
            return (flags & MSG_TRUNC) ? total : (ssize_t)received;
        } else if (d.kind == SOCKSIFY_DGRAM_KIND_ERROR) {
            int err = socksify_wire_errno(d.code);

            if (flags & MSG_PEEK)
                consume(fd, flags);
            LOG_INFO("fd %d: the carried flow ended (%s)", fd, socksify_strerror(err));
            if (e.connected)
                return -(err != 0 ? err : ECONNREFUSED);
            continue;  /* as Linux drops ICMP errors for an unconnected socket */
        } else {
            prefix = SOCKSIFY_DGRAM_SIZE;
            memset(&peer, 0, sizeof peer);
            peer.family = d.family;
            peer.port = d.port;
            memcpy(peer.addr, d.addr, sizeof peer.addr);
        }
        if (socksify_addr_of_peer(domain, &peer, &src, &srclen) < 0) {
            if (flags & MSG_PEEK)
                consume(fd, flags);
            continue;  /* an IPv6 source for an IPv4 socket: cannot be reported */
        }
        payload = (size_t)total - prefix;
        received = socksify_wrap_unshift(msg->msg_iov, n, scratch, scratch_len, prefix,
                                         received);
        give_name(msg, &src, srclen);
        msg->msg_flags = (m.msg_flags & ~MSG_TRUNC) | (payload > cap ? MSG_TRUNC : 0);
        return (flags & MSG_TRUNC) ? (ssize_t)payload : (ssize_t)received;
    }
}

ssize_t socksify_carry_recv(int fd, void *buf, size_t len, int flags,
                            struct sockaddr *from, socklen_t *fromlen, int *handled)
{
    struct iovec iov = {buf, len};
    struct msghdr m;
    ssize_t n;

    memset(&m, 0, sizeof m);
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    if (from != NULL && fromlen != NULL) {
        m.msg_name = from;
        m.msg_namelen = *fromlen;
    }
    n = socksify_carry_recvmsg(fd, &m, flags, handled);
    if (n >= 0 && *handled && from != NULL && fromlen != NULL)
        *fromlen = m.msg_namelen;
    return n;
}

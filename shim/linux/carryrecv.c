/* The receive side of carried datagrams (carry.h). */
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

/* Byte i of the iovecs (i below their total length). */
static uint8_t *byte_at(const struct iovec *iov, size_t n, size_t i)
{
    for (size_t k = 0; k < n; k++) {
        if (i < iov[k].iov_len)
            return (uint8_t *)iov[k].iov_base + i;
        i -= iov[k].iov_len;
    }
    return NULL;
}

/* A datagram not from the carrier was read as [head (up to 36 bytes), the program's
 * buffers]: move it to where the program expects it, the head first. */
static void unshift(const uint8_t *head, size_t headlen, const struct iovec *iov,
                    size_t n, size_t cap, size_t total)
{
    size_t have = total < cap ? total : cap;  /* bytes the program gets */

    for (size_t i = have; i-- > SOCKSIFY_DGRAM_SIZE;)
        *byte_at(iov, n, i) = *byte_at(iov, n, i - SOCKSIFY_DGRAM_SIZE);
    for (size_t i = 0; i < headlen && i < have; i++)
        *byte_at(iov, n, i) = head[i];
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
    size_t n = msg->msg_iovlen, cap = 0;
    int domain;
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
    for (;;) {
        struct iovec iov[n + 1];
        uint8_t env[SOCKSIFY_DGRAM_SIZE];
        struct sockaddr_storage from, src;
        struct socksify_dgram d;
        struct socksify_peer peer;
        socklen_t srclen;
        struct msghdr m = *msg;
        ssize_t total;
        size_t got;

        iov[0].iov_base = env;
        iov[0].iov_len = sizeof env;
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
        if (!from_carrier(&from, m.msg_namelen, &e) || total < SOCKSIFY_DGRAM_SIZE
            || socksify_wire_decode_dgram(env, (size_t)total, &d) < 0
            || !(socksify_carried_has_token(&e, d.token)
                 || socksify_cache_has_token(d.token))) {
            /* not ours: delivered untouched */
            got = (size_t)total;
            unshift(env, got < sizeof env ? got : sizeof env, msg->msg_iov, n, cap, got);
            give_name(msg, &from, m.msg_namelen);
            msg->msg_flags = (m.msg_flags & ~MSG_TRUNC) | (got > cap ? MSG_TRUNC : 0);
            return (flags & MSG_TRUNC) ? total : (ssize_t)(got < cap ? got : cap);
        }
        if (d.kind == SOCKSIFY_DGRAM_KIND_ERROR) {
            int err = socksify_wire_errno(d.code);

            if (flags & MSG_PEEK)
                consume(fd, flags);
            LOG_INFO("fd %d: the carried flow ended (%s)", fd, socksify_strerror(err));
            if (e.connected)
                return -(err != 0 ? err : ECONNREFUSED);
            continue;  /* as Linux drops ICMP errors for an unconnected socket */
        }
        got = (size_t)total - SOCKSIFY_DGRAM_SIZE;
        memset(&peer, 0, sizeof peer);
        peer.family = d.family;
        peer.port = d.port;
        memcpy(peer.addr, d.addr, sizeof peer.addr);
        if (socksify_addr_of_peer(domain, &peer, &src, &srclen) < 0) {
            if (flags & MSG_PEEK)
                consume(fd, flags);
            continue;  /* an IPv6 source for an IPv4 socket: cannot be reported */
        }
        give_name(msg, &src, srclen);
        msg->msg_flags = (m.msg_flags & ~MSG_TRUNC) | (got > cap ? MSG_TRUNC : 0);
        return (flags & MSG_TRUNC) ? (ssize_t)got : (ssize_t)(got < cap ? got : cap);
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

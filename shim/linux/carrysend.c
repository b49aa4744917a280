/* The send side of carried datagrams (carry.h). */
#include <errno.h>
#include <limits.h>
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

static uint64_t wrap_generation(const struct socksify_wrap *w)
{
    uint64_t g = 0;

    for (int i = 0; i < 8; i++)
        g = g << 8 | w->generation[i];
    return g;
}

int socksify_wrap_relay(int domain, const struct socksify_wrap *w,
                        struct sockaddr_storage *to, socklen_t *tolen)
{
    struct socksify_peer relay;

    memset(&relay, 0, sizeof relay);
    relay.family = w->family;
    relay.port = w->port;
    memcpy(relay.addr, w->addr, sizeof relay.addr);
    return socksify_addr_of_peer(domain, &relay, to, tolen);
}

/* A WRAP grant's datagram: [send prefix, the program's buffers] in one sendmsg() to hop
 * 1's relay (or, connected, to the socket's kernel peer: the relay). */
static ssize_t wrap_send(int fd, const struct socksify_carry *carry,
                         const struct msghdr *msg, int flags, int connected)
{
    struct sockaddr_storage to;
    socklen_t tolen = 0;
    struct msghdr m;
    size_t n = msg->msg_iovlen;
    ssize_t sent;

    if (n >= UIO_MAXIOV)
        return -EMSGSIZE;
    struct iovec iov[n + 1];

    if (!connected && socksify_wrap_relay(carry->domain, &carry->wrap, &to, &tolen) < 0)
        return -ENETUNREACH;
    iov[0].iov_base = (void *)carry->wrap.send;
    iov[0].iov_len = carry->wrap.send_len;
    if (n > 0)
        memcpy(iov + 1, msg->msg_iov, n * sizeof *iov);
    m = *msg;
    m.msg_name = connected ? NULL : &to;
    m.msg_namelen = connected ? 0 : tolen;
    m.msg_iov = iov;
    m.msg_iovlen = n + 1;
    sent = socksify_real.sendmsg(fd, &m, flags);
    if (sent < 0)
        return -errno;
    return sent >= carry->wrap.send_len ? sent - carry->wrap.send_len : 0;
}

ssize_t socksify_carry_send(int fd, const struct socksify_carry *carry,
                            const struct msghdr *msg, int flags, int connected)
{
    struct socksify_dgram d;
    struct sockaddr_storage to;
    socklen_t tolen = 0;
    uint8_t env[SOCKSIFY_DGRAM_SIZE];
    struct msghdr m;
    size_t n = msg->msg_iovlen;
    ssize_t sent;
    int r;

    if (carry->wrapped)
        return wrap_send(fd, carry, msg, flags, connected);
    if (n >= UIO_MAXIOV)
        return -EMSGSIZE;
    struct iovec iov[n + 1];

    memset(&d, 0, sizeof d);
    d.kind = SOCKSIFY_DGRAM_KIND_DATA;
    d.family = carry->req.family;
    d.port = carry->req.port;
    memcpy(d.addr, carry->req.addr, sizeof d.addr);
    memcpy(d.token, carry->rep.token + 8, SOCKSIFY_CARRY_TOKEN_SIZE);
    if (socksify_wire_encode_dgram(&d, env, sizeof env) < 0)
        return -EINVAL;
    if (!connected
        && (r = socksify_addr_relay(carry->domain, &carry->rep, &to, &tolen)) < 0)
        return -ECONNREFUSED;
    iov[0].iov_base = env;
    iov[0].iov_len = sizeof env;
    if (n > 0)
        memcpy(iov + 1, msg->msg_iov, n * sizeof *iov);
    m = *msg;
    m.msg_name = connected ? NULL : &to;
    m.msg_namelen = connected ? 0 : tolen;
    m.msg_iov = iov;
    m.msg_iovlen = n + 1;
    socksify_carried_mark(fd, &carry->rep);  /* before: the reply may come at once */
    sent = socksify_real.sendmsg(fd, &m, flags);
    if (sent < 0)
        return -errno;
    return sent >= SOCKSIFY_DGRAM_SIZE ? sent - SOCKSIFY_DGRAM_SIZE : 0;
}

ssize_t socksify_carry_send_connected(int fd, const struct msghdr *msg, int flags,
                                      int *handled)
{
    struct socksify_carried e;
    struct socksify_carry carry;
    int domain, r;
    socklen_t optlen = sizeof domain;

    *handled = 0;
    if (!socksify_carried_maybe(fd) || socksify_carried_get(fd, &e) < 0 || !e.connected)
        return 0;
    *handled = 1;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &optlen) < 0)
        return -errno;
    carry.req = e.connected == 2 ? e.peer_wrap.req : e.peer_req;
    carry.rep = e.peer_rep;
    carry.domain = domain;
    carry.wrapped = e.connected == 2;
    if (carry.wrapped)
        carry.wrap = e.peer_wrap.w;
    if (carry.wrapped ? wrap_generation(&carry.wrap) != socksify_cache_generation()
                      : socksify_cache_reply_generation(&e.peer_rep)
                        != socksify_cache_generation()) {
        /* a reload (or a daemon gone): the grant is void; ask again */
        r = socksify_dgram_decide(fd, (const struct sockaddr *)&e.peer, e.peer_len, &carry);
        if (r < 0)
            return r;
        if (r != SOCKSIFY_DGRAM_CARRY) {
            LOG_INFO("fd %d: the connected UDP peer now goes DIRECT", fd);
            socksify_carried_disconnect(fd);
            if (socksify_real.connect(fd, (const struct sockaddr *)&e.peer, e.peer_len) < 0)
                return -errno;
            *handled = 0;
            return 0;
        }
        if (carry.wrapped) {
            struct socksify_wrapgrant g;   /* (re)connect to hop 1's relay, new or not */
            struct sockaddr_storage to;
            socklen_t tolen;

            g.req = carry.req;
            g.w = carry.wrap;
            if (socksify_wrap_relay(domain, &carry.wrap, &to, &tolen) < 0
                || socksify_real.connect(fd, (const struct sockaddr *)&to, tolen) < 0)
                return -ECONNREFUSED;
            socksify_carried_connect_wrap(fd, (const struct sockaddr *)&e.peer, e.peer_len,
                                          &g);
            return socksify_carry_send(fd, &carry, msg, flags, 1);
        }
        if (e.connected == 2 || carry.rep.relay_port4 != e.peer_rep.relay_port4
            || carry.rep.relay_port6 != e.peer_rep.relay_port6) {
            struct sockaddr_storage to;  /* a new daemon: its carrier is elsewhere */
            socklen_t tolen;

            if (socksify_addr_relay(domain, &carry.rep, &to, &tolen) < 0
                || socksify_real.connect(fd, (const struct sockaddr *)&to, tolen) < 0)
                return -ECONNREFUSED;
        }
        socksify_carried_connect(fd, (const struct sockaddr *)&e.peer, e.peer_len,
                                 &carry.req, &carry.rep);
    }
    return socksify_carry_send(fd, &carry, msg, flags, 1);
}

ssize_t socksify_carry_send_one(int fd, const void *buf, size_t len, int flags,
                                int *handled)
{
    struct iovec iov = {(void *)buf, len};
    struct msghdr m;

    memset(&m, 0, sizeof m);
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    return socksify_carry_send_connected(fd, &m, flags, handled);
}
